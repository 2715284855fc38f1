"""`skelcl prepare {ntu,pkummd,babel} SRC --out DIR`: a dataset release -> one skelcl cache.

Every driver streams sequence by sequence into a CacheWriter (memory bounded by one sequence; the pyskl
pickle format is the exception, it can only be loaded whole), shows a tqdm progress bar (on a terminal
only), and ends with a Report (sequences written, dropped and why, bad files, frames repaired,
format-specific counts) that is printed and stored in the cache's meta.json under source["report"].

A malformed file stops the run with a SkelclError naming the file and line; with skip_bad=True it is
listed in the report's bad_files instead and the run goes on.

Empty frames (no body at all) are filled with the nearest earlier non-empty frame (leading ones with the
first) and counted as repaired; a sequence with no body in any frame is dropped. `normalize=True` applies
skelcl.data.normalize.normalize_sequence (center on the spine, rotate to the canonical view) as well.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from skelcl import progress
from skelcl.data import babel, ntu, pkummd
from skelcl.data.cache import CacheWriter
from skelcl.data.normalize import fill_empty_frames, normalize_sequence
from skelcl.data.readcommon import Report, empty_frames, select_bodies
from skelcl.errors import SkelclError


class _Run:
    """Shared per-run state: the writer, the report, the options; `emit` writes one sequence."""

    def __init__(self, writer: CacheWriter, report: Report, *, normalize: bool, skip_bad: bool):
        self.writer = writer
        self.report = report
        self.normalize = normalize
        self.skip_bad = skip_bad

    def bad(self, path, err: SkelclError) -> None:
        """A malformed input file: raise, or (skip_bad) list it in the report."""
        if not self.skip_bad:
            raise err
        self.report.bad(path, err)

    def emit(self, name, joints, labels, *, split=None, attrs=None, origin=None) -> bool:
        """Repair empty frames, optionally normalize, write. False (and a report entry) if dropped."""
        joints = np.asarray(joints, dtype=np.float32)
        if joints.shape[0] == 0:
            self.report.drop(name, "no_frames")
            return False
        empty = empty_frames(joints)
        if empty.all():
            self.report.drop(name, "no_body")
            return False
        if empty.any():
            joints, filled = fill_empty_frames(joints)
            self.report.frames_repaired += filled
        if self.normalize:
            try:
                joints = normalize_sequence(joints)
            except SkelclError as err:
                self.bad(origin or name, SkelclError(f"{origin or name}: cannot normalize: {err}"))
                return False
        self.writer.add(name, joints, labels, split=split, attrs=attrs)
        self.report.written += 1
        self.report.frames += int(joints.shape[0])
        return True


def _finish(run: _Run) -> Report:
    run.writer.source["report"] = run.report.to_dict()
    return run.report


def _progress(items, desc, quiet, total=None):
    """A tqdm bar only on a terminal and without --quiet (skelcl.progress); else nothing until the report."""
    hide = quiet or not progress.show_bars()
    return tqdm(items, desc=desc, total=total, unit="seq", disable=hide, leave=False, dynamic_ncols=True)


# -- NTU ---------------------------------------------------------------------------------------------


def prepare_ntu(
    src,
    out,
    *,
    missing=(),
    num_classes: int | None = None,
    scheme: str | None = None,
    dtype: str = "float32",
    normalize: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    quiet: bool = True,
) -> Report:
    """NTU RGB+D from a folder of `.skeleton` files (searched recursively), a CTR-GCN `.npz` file or a
    pyskl `.pkl` annotation file. `missing`: files listing samples with missing skeletons (dropped)."""
    src = Path(src)
    if not src.exists():
        raise SkelclError(f"{src}: no such file or directory")
    if src.is_file() and src.suffix == ".npz":
        return _prepare_ntu_npz(src, out, scheme, dtype, normalize, skip_bad, overwrite, quiet)
    if src.is_file() and src.suffix in (".pkl", ".pickle"):
        return _prepare_ntu_pyskl(src, out, num_classes, dtype, normalize, skip_bad, overwrite, quiet)
    if not src.is_dir():
        raise SkelclError(f"{src}: expected a folder of .skeleton files, a .npz or a .pkl file")
    files = sorted(src.rglob("*.skeleton"), key=lambda p: p.name)
    if not files:
        raise SkelclError(f"{src}: no .skeleton files found")
    skip = set()
    for path in missing:
        skip |= ntu.read_missing_list(path)
    report = Report("ntu", str(src))
    names = []
    for path in files:
        attrs = ntu.parse_name(path.stem)
        if attrs is None:
            err = SkelclError(f"{path}: file name is not SsssCcccPpppRrrrAaaa.skeleton")
            if not skip_bad:
                raise err
            report.bad(path, err)
            continue
        names.append((path, attrs))
    max_action = max((a["action"] for _, a in names), default=1)
    if num_classes is None:
        num_classes = 60 if max_action <= 60 else 120
    if max_action > num_classes:
        raise SkelclError(
            f"{src}: action A{max_action:03d} found but the class set has {num_classes} actions"
        )
    source = {"dataset": "ntu", "format": "skeleton", "path": str(src), "body_rule": "two most active"}
    with CacheWriter(
        out, ntu.class_names(num_classes), dtype=dtype, max_bodies=2, splits=ntu.SPLITS, attrs=ntu.ATTRS,
        source=source, overwrite=overwrite,
    ) as writer:  # fmt: skip
        run = _Run(writer, report, normalize=normalize, skip_bad=skip_bad)
        for path, attrs in _progress(names, "ntu", quiet):
            name = path.stem
            if name in skip:
                report.drop(name, "missing_skeleton_list")
                continue
            try:
                sample = ntu.read_skeleton(path)
            except SkelclError as err:
                run.bad(path, err)
                continue
            joints, _ = ntu.choose_bodies(sample, keep=2)
            extra = sample.joints.shape[1] - joints.shape[1]
            if extra > 0:
                report.count("sequences_with_3plus_body_ids")
                report.count("body_ids_discarded", extra)
            report.count("frames_with_no_body", int((sample.bodies_per_frame == 0).sum()))
            report.count("frames_with_3plus_bodies", int((sample.bodies_per_frame >= 3).sum()))
            labels = np.full(joints.shape[0], attrs["action"] - 1, dtype=np.int64)
            run.emit(name, joints, labels, split=ntu.standard_splits(attrs), attrs=attrs, origin=path)
        return _finish(run)


def _prepare_ntu_npz(src, out, scheme, dtype, normalize, skip_bad, overwrite, quiet) -> Report:
    scheme = scheme or ntu.npz_scheme(src)
    if scheme is None:
        raise SkelclError(
            f"{src}: cannot tell the split from the file name (NTU60_CS.npz ...); pass --scheme"
        )
    if scheme not in ntu.SPLITS:
        raise SkelclError(f"--scheme must be one of {sorted(ntu.SPLITS)}, got {scheme!r}")
    num_classes = ntu.npz_num_classes(src)
    if num_classes > 120:
        raise SkelclError(f"{src}: {num_classes} classes; NTU has at most 120")
    report = Report("ntu-npz", str(src))
    source = {"dataset": "ntu", "format": "ctrgcn-npz", "path": str(src), "scheme": scheme}
    with CacheWriter(
        out, ntu.class_names(num_classes), dtype=dtype, max_bodies=2, splits={scheme: ["train", "test"]},
        source=source, overwrite=overwrite,
    ) as writer:  # fmt: skip
        run = _Run(writer, report, normalize=normalize, skip_bad=skip_bad)
        for part in ("train", "test"):
            for i, x, label in _progress(ntu.iter_npz(src, part), f"ntu {part}", quiet):
                joints = ntu.npz_row_joints(x)
                if joints.shape[1] > 2:
                    raise SkelclError(
                        f"{src}: x_{part} rows hold {joints.shape[1]} bodies; expected at most 2"
                    )
                if not 0 <= label < num_classes:
                    raise SkelclError(f"{src}: y_{part}[{i}] = {label} outside 0..{num_classes - 1}")
                name = f"{part}_{i:06d}"
                labels = np.full(joints.shape[0], label, dtype=np.int64)
                run.emit(name, joints, labels, split={scheme: part}, origin=f"{src} x_{part}[{i}]")
        return _finish(run)


def _prepare_ntu_pyskl(src, out, num_classes, dtype, normalize, skip_bad, overwrite, quiet) -> Report:
    data = ntu.load_pyskl(src)
    anns = data["annotations"]
    parts = ntu.pyskl_split_parts(data.get("split", {}))
    max_label = max((int(a.get("label", 0)) for a in anns if isinstance(a, dict)), default=0)
    if num_classes is None:
        num_classes = 60 if max_label < 60 else 120
    report = Report("ntu-pyskl", str(src))
    source = {"dataset": "ntu", "format": "pyskl-pickle", "path": str(src), "body_rule": "two most active"}
    with CacheWriter(
        out, ntu.class_names(num_classes), dtype=dtype, max_bodies=2, splits=ntu.SPLITS, attrs=ntu.ATTRS,
        source=source, overwrite=overwrite,
    ) as writer:  # fmt: skip
        run = _Run(writer, report, normalize=normalize, skip_bad=skip_bad)
        for i, ann in enumerate(_progress(anns, "ntu", quiet)):
            try:
                name, joints, label = ntu.pyskl_annotation(ann, i, src)
                if not 0 <= label < num_classes:
                    raise SkelclError(
                        f"{src}: annotations[{i}] ({name}): label {label} outside 0..{num_classes - 1}"
                    )
            except SkelclError as err:
                run.bad(src, err)
                continue
            if joints.shape[1] > 2:
                present = np.any(joints != 0, axis=(2, 3))
                keep = select_bodies(joints, present, 2)
                report.count("body_ids_discarded", joints.shape[1] - 2)
                joints = joints[:, keep]
            attrs = ntu.parse_name(name) or {}
            labels = np.full(joints.shape[0], label, dtype=np.int64)
            run.emit(name, joints, labels, split=parts.get(name, {}), attrs=attrs, origin=f"{src} {name}")
        return _finish(run)


# -- PKU-MMD -------------------------------------------------------------------------------------------

# Default folders under SRC, first found wins (phase-1 release names first, then plain ones).
SKELETON_DIRS = ("PKU_Skeleton_Renew", "Skeleton", "skeleton", "Skeleton_v2", "skeleton_v2")
LABEL_DIRS = ("Train_Label_PKU_final", "Label", "label", "Label_v2", "label_v2", "Label_PKUMMD_v2")
SPLIT_DIRS = ("Split", "split", "Split_v2", "split_v2")


def prepare_pkummd(
    src=None,
    out=None,
    *,
    skeletons=None,
    labels=None,
    splits=None,
    phase: int | None = None,
    dtype: str = "float32",
    normalize: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    quiet: bool = True,
) -> Report:
    """PKU-MMD phase 1 or 2. `src` is the unpacked release; `skeletons`, `labels`, `splits` override its
    parts (default the first folder found of SKELETON_DIRS, LABEL_DIRS, SPLIT_DIRS under src). `phase`:
    1, 2 or None to tell it from the skeleton file names (0002-L: phase 1, A01N01-L: phase 2); files of
    both phases, or of the other phase than `phase`, are refused. See skelcl.data.pkummd."""
    if out is None:
        raise SkelclError("prepare pkummd: --out is required")
    root = Path(src) if src is not None else None
    if root is not None and not root.is_dir():
        raise SkelclError(f"{root}: no such directory")

    def part(given, candidates, option):
        if given is not None:
            return Path(given)
        if root is None:
            return None
        for name in candidates:
            if (root / name).is_dir():
                return root / name
        return root / candidates[0] if option == "skeletons" else None

    skel_dir = part(skeletons, SKELETON_DIRS, "skeletons")
    if skel_dir is None:
        raise SkelclError("prepare pkummd: give SRC or --skeletons")
    label_dir = part(labels, LABEL_DIRS, "labels")
    split_dir = part(splits, SPLIT_DIRS, "splits")
    if split_dir is None and root is not None and splits is None:
        split_dir = root  # some layouts keep cross_subject_v2.txt next to the folders
    if not skel_dir.is_dir():
        raise SkelclError(f"{skel_dir}: skeleton folder not found")
    files = sorted(skel_dir.glob("*.txt"))
    if not files:
        raise SkelclError(f"{skel_dir}: no skeleton .txt files")
    phase = pkummd.detect_phase(files, phase)
    report = Report("pkummd" if phase == 1 else "pkummd-phase2", str(root if root else skel_dir))

    membership: dict[str, dict[str, str]] = {}
    split_schemes = {}
    split_paths = {}
    for scheme, fnames in pkummd.SPLIT_NAMES[phase].items():
        found = [split_dir / f for f in fnames if (split_dir / f).is_file()] if split_dir is not None else []
        if not found:
            report.count(f"split_file_missing_{scheme}")
            continue
        train, test = pkummd.read_split(found[0], phase)
        split_schemes[scheme] = pkummd.SPLITS[scheme]
        split_paths[scheme] = str(found[0])
        for name in train:
            membership.setdefault(name, {})[scheme] = "train"
        for name in test:
            membership.setdefault(name, {})[scheme] = "test"

    source = {
        "dataset": "pkummd",
        "phase": phase,
        "path": str(root) if root else None,
        "skeletons": str(skel_dir),
        "labels": str(label_dir) if label_dir else None,
        "splits": str(split_dir) if split_dir else None,
        "split_files": split_paths,
        "label_ids": list(pkummd.label_ids(phase)),
        "label_frames": "start..end inclusive, 0-based; lowest class wins on overlap",
    }
    with CacheWriter(
        out, pkummd.class_names(phase), dtype=dtype, max_bodies=2, splits=split_schemes,
        attrs=pkummd.PHASE_ATTRS[phase], source=source, overwrite=overwrite,
    ) as writer:  # fmt: skip
        run = _Run(writer, report, normalize=normalize, skip_bad=skip_bad)
        for path in _progress(files, "pkummd", quiet):
            name = path.stem
            try:
                joints = pkummd.read_skeleton(path)
            except SkelclError as err:
                run.bad(path, err)
                continue
            if not np.any(joints[:, 1]):
                joints = joints[:, :1]
            frame_labels = None
            label_path = label_dir / path.name if label_dir is not None else None
            if label_path is not None and label_path.is_file():
                try:
                    rows, swapped = pkummd.read_labels(label_path, phase)
                except SkelclError as err:
                    run.bad(label_path, err)
                    continue
                frame_labels, multi, clipped = pkummd.frame_labels(rows, joints.shape[0], phase)
                report.count("label_rows", len(rows))
                report.count("label_rows_swapped", swapped)
                report.count("label_rows_clipped", clipped)
                report.count("frames_with_two_classes", multi)
            else:
                report.count("sequences_without_label_file")
            attrs = pkummd.parse_name(name) or {}
            run.emit(name, joints, frame_labels, split=membership.get(name, {}), attrs=attrs, origin=path)
        return _finish(run)


# -- BABEL ------------------------------------------------------------------------------------------


def prepare_babel(
    src,
    out,
    *,
    joints=None,
    subset: int = 1,
    fps: float | None = None,
    max_frames: int = babel.MAX_FRAMES,
    keep_empty: bool = False,
    parts=("train", "val"),
    dtype: str = "float32",
    normalize: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    quiet: bool = True,
) -> Report:
    """BABEL subset 1-3 from train.json/val.json in `src` and joint arrays in `joints` (default
    SRC/joints); see skelcl.data.babel for the joint file search and the labeling rules."""
    src = Path(src)
    if not src.is_dir():
        raise SkelclError(f"{src}: no such directory")
    joints_dir = Path(joints) if joints is not None else src / "joints"
    if not joints_dir.is_dir():
        raise SkelclError(f"{joints_dir}: joints folder not found (pass --joints)")
    classes = babel.class_names(subset)
    report = Report(f"babel-subset{subset}", str(src))
    source = {"dataset": "babel", "subset": subset, "path": str(src), "joints": str(joints_dir),
              "fps_in": fps, "max_frames": max_frames}  # fmt: skip
    with CacheWriter(
        out, classes, dtype=dtype, max_bodies=1, splits=babel.SPLITS, attrs=("babel_sid",), source=source,
        overwrite=overwrite,
    ) as writer:  # fmt: skip
        run = _Run(writer, report, normalize=normalize, skip_bad=skip_bad)
        for part_name in parts:
            if part_name not in babel.SPLIT_FILES:
                raise SkelclError(f"BABEL parts are {list(babel.SPLIT_FILES)}, got {part_name!r}")
            ann_path = src / babel.SPLIT_FILES[part_name]
            if not ann_path.is_file():
                raise SkelclError(f"{ann_path}: not found")
            data = babel.load_annotations(ann_path)
            for key, entry in _progress(data.items(), f"babel {part_name}", quiet, total=len(data)):
                try:
                    sid = entry.get("babel_sid", key) if isinstance(entry, dict) else key
                    name = str(sid)
                    segs, used_seq = babel.segments(entry, ann_path, key)
                    feat_p = entry.get("feat_p")
                except SkelclError as err:
                    run.bad(ann_path, err)
                    continue
                found = babel.find_joints(joints_dir, sid, feat_p)
                if found is None:
                    report.drop(name, "no_joint_file")
                    continue
                try:
                    arr, in_fps = babel.read_joints(found, fps)
                except SkelclError as err:
                    run.bad(found, err)
                    continue
                if arr.shape[1] > 1:
                    arr = arr[:, :1]
                arr = babel.resample_30fps(arr, in_fps)
                if arr.shape[0] > max_frames:
                    report.drop(name, f"over_{max_frames}_frames")
                    continue
                labels, multi = babel.frame_labels(segs, arr.shape[0], subset)
                if not keep_empty and not np.any(labels < len(classes) - 1):
                    report.drop(name, "no_subset_action")
                    continue
                if used_seq:
                    report.count("frame_ann_none_used_seq_ann")
                if in_fps != babel.TARGET_FPS:
                    report.count("sequences_resampled")
                report.count("frames_with_two_subset_classes", multi)
                try:
                    attr_sid = {"babel_sid": int(sid)}
                except (TypeError, ValueError):
                    attr_sid = {}
                run.emit(name, arr, labels, split={"official": part_name}, attrs=attr_sid, origin=found)
        return _finish(run)


# -- command line ------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="cache directory to write")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="frame storage type")
    p.add_argument("--normalize", action="store_true", help="NTU-style normalization (center, rotate)")
    p.add_argument("--skip-bad", action="store_true", help="list malformed files in the report and go on")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache at --out")
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none off a terminal)")


def _check_out(args) -> None:
    if Path(args.out).exists() and not args.overwrite:
        raise SkelclError(f"{args.out}: already exists (pass --overwrite to replace it)")


def _finish_cli(args, report: Report) -> int:
    print(report.summary())
    print(f"cache: {args.out} (report stored in meta.json under source.report)")
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=1))
    return 0


def _run_ntu(args) -> int:
    _check_out(args)
    report = prepare_ntu(
        args.src, args.out, missing=args.missing or (), num_classes=args.classes, scheme=args.scheme,
        dtype=args.dtype, normalize=args.normalize, skip_bad=args.skip_bad, overwrite=args.overwrite,
        quiet=args.quiet,
    )  # fmt: skip
    return _finish_cli(args, report)


def _run_pkummd(args) -> int:
    _check_out(args)
    report = prepare_pkummd(
        args.src, args.out, skeletons=args.skeletons, labels=args.labels, splits=args.splits,
        phase=args.phase, dtype=args.dtype, normalize=args.normalize, skip_bad=args.skip_bad,
        overwrite=args.overwrite, quiet=args.quiet,
    )  # fmt: skip
    return _finish_cli(args, report)


def _run_babel(args) -> int:
    _check_out(args)
    report = prepare_babel(
        args.src, args.out, joints=args.joints, subset=args.subset, fps=args.fps, max_frames=args.max_frames,
        keep_empty=args.keep_empty, parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
        dtype=args.dtype, normalize=args.normalize, skip_bad=args.skip_bad, overwrite=args.overwrite,
        quiet=args.quiet,
    )  # fmt: skip
    return _finish_cli(args, report)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="convert NTU RGB+D, PKU-MMD or BABEL into a cache",
        description="Convert a dataset release into one skelcl cache (split membership in its index).",
    )
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    p = sub.add_parser("ntu", help="NTU RGB+D 60/120: .skeleton folder, CTR-GCN .npz or pyskl .pkl")
    p.add_argument(
        "src", help="folder of .skeleton files (searched recursively), NTU60_CS.npz-style file or .pkl"
    )
    p.add_argument("--missing", action="append", metavar="FILE",
                   help="list of samples with missing skeletons to drop (repeatable)")  # fmt: skip
    p.add_argument("--classes", type=int, choices=(60, 120), help="class set (default: from the data)")
    p.add_argument("--scheme", choices=sorted(ntu.SPLITS), help=".npz only: the split the file holds")
    _common(p)
    p.set_defaults(func=_run_ntu)

    p = sub.add_parser("pkummd", help="PKU-MMD phase 1 or 2: skeletons, labels, split files")
    p.add_argument(
        "src", nargs="?", help="unpacked release (PKU_Skeleton_Renew/, Train_Label_PKU_final/, Split/)"
    )
    p.add_argument(
        "--skeletons", metavar="DIR", help="skeleton folder (default SRC/PKU_Skeleton_Renew or SRC/Skeleton)"
    )
    p.add_argument(
        "--labels", metavar="DIR", help="label folder (default SRC/Train_Label_PKU_final or SRC/Label)"
    )
    p.add_argument(
        "--splits", metavar="DIR",
        help="folder with the split files: cross-subject.txt, cross-view.txt (phase 1) or "
        "cross_subject_v2.txt, cross_view_v2.txt (phase 2) (default SRC/Split, else SRC)",
    )  # fmt: skip
    p.add_argument(
        "--phase", type=int, choices=(1, 2),
        help="PKU-MMD phase (default: from the file names, 0002-L phase 1, A01N01-L phase 2)",
    )  # fmt: skip
    _common(p)
    p.set_defaults(func=_run_pkummd)

    p = sub.add_parser("babel", help="BABEL subsets 1-3: train/val json plus joint arrays")
    p.add_argument("src", help="folder holding train.json and val.json")
    p.add_argument("--joints", metavar="DIR", help="joint arrays, NTU-25 order (default SRC/joints)")
    p.add_argument("--subset", type=int, choices=(1, 2, 3), default=1, help="BABEL subset (default 1)")
    p.add_argument("--fps", type=float, help="frame rate of .npy joint arrays that have no .json sidecar")
    p.add_argument(
        "--max-frames", type=int, default=babel.MAX_FRAMES, help="drop longer sequences (at 30 fps)"
    )
    p.add_argument("--keep-empty", action="store_true", help="keep sequences with no frame of a subset class")
    p.add_argument("--parts", default="train,val", help="annotation files to read (default train,val)")
    _common(p)
    p.set_defaults(func=_run_babel)
