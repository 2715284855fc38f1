"""BABEL: frame-level action labels on AMASS motions, read with precomputed NTU-25 joint arrays.

Annotations: `train.json` / `val.json`, a dict keyed by sequence id; each value has babel_sid, feat_p (the
AMASS file, e.g. "CMU/CMU/86/86_05_poses.npz"), dur (seconds), seq_ann and frame_ann. frame_ann is None
(only a sequence-level annotation) or {"labels": [{"act_cat": [...] or None, "start_t", "end_t", ...}]}
with times in seconds; segments may overlap and act_cat may hold several categories.

Joints: AMASS stores SMPL-H parameters and joints need the licensed body model, so we read joints that were
computed beforehand, one file per sequence in NTU-25 joint order, found in the joints folder as (first hit
wins):

    <babel_sid>.npy | <babel_sid>.npz
    <feat_p with .npz replaced by .npy or kept .npz>, trying the AMASS folder name as written, its
        current/older alias (AMASS renamed some subsets, e.g. BioMotionLab_NTroje -> BMLrub) and the
        first folder doubled or not (CMU/CMU/86/... and CMU/86/...)

A `.npy` holds joints (T, 25, 3) or (T, M, 25, 3); its frame rate comes from a sidecar `<same stem>.json`
{"fps": 120} or else from `--fps`. A `.npz` holds `joints` and `fps` (or AMASS's `mocap_framerate`).
Every sequence is resampled to 30 fps by linear interpolation in time (resample_30fps).

Labels for subset k (1: walk, stand, turn, jump; 2: sit, run, stand up, kick; 3: jog, wave, dance,
gesture): output frame j (time j / 30 s) carries class c when a segment with start_t <= j/30 < end_t lists
c in act_cat; a frame with two subset classes takes the lowest class index (counted); other frames are
background (the last class). When frame_ann is None the sequence-level labels (seq_ann) count as one
segment over the whole sequence (counted). Sequences longer than 1000 frames at 30 fps are dropped, and
so, unless `keep_empty`, are sequences with no frame of a subset class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from skelcl.data.skeleton import NUM_JOINTS
from skelcl.errors import SkelclError

SUBSETS = {
    1: ("walk", "stand", "turn", "jump"),
    2: ("sit", "run", "stand up", "kick"),
    3: ("jog", "wave", "dance", "gesture"),
}
TARGET_FPS = 30.0
MAX_FRAMES = 1000
SPLIT_FILES = {"train": "train.json", "val": "val.json"}
SPLITS = {"official": ["train", "val"]}

# AMASS subset folders: older name -> current name (both are accepted in feat_p and in the joints folder).
AMASS_RENAMED = {
    "BioMotionLab_NTroje": "BMLrub",
    "MPI_Limits": "PosePrior",
    "MPI_HDM05": "HDM05",
    "MPI_mosh": "MoSh",
    "SSM_synced": "SSM",
    "TCD_handMocap": "TCDHands",
    "Transitions_mocap": "Transitions",
    "DFaust_67": "DFaust",
    "Eyes_Japan_Dataset": "EyesJapanDataset",
}
_ALIASES = {**AMASS_RENAMED, **{new: old for old, new in AMASS_RENAMED.items()}}


def class_names(subset: int) -> list[str]:
    if subset not in SUBSETS:
        raise SkelclError(f"BABEL subset must be 1, 2 or 3, got {subset}")
    return list(SUBSETS[subset]) + ["background"]


def load_annotations(path) -> dict:
    """Read one BABEL json file; malformed JSON raises SkelclError with the file, line and column."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SkelclError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(data, dict):
        raise SkelclError(f"{path}: expected a JSON object keyed by sequence id")
    return data


def _field(entry, key, path, sid):
    if not isinstance(entry, dict) or key not in entry:
        raise SkelclError(f"{path}: sequence {sid}: field {key!r} is missing")
    return entry[key]


def segments(entry: dict, path, sid) -> tuple[list[tuple[float, float, list[str]]], bool]:
    """The labeled time segments of one BABEL entry: [(start_t, end_t, [category, ...])], and whether the
    sequence-level annotation stood in for a missing frame_ann."""
    frame_ann = _field(entry, "frame_ann", path, sid)
    dur = float(_field(entry, "dur", path, sid))
    out = []
    if frame_ann is None:
        seq_ann = entry.get("seq_ann") or {}
        for i, lab in enumerate(seq_ann.get("labels") or []):
            cats = lab.get("act_cat") if isinstance(lab, dict) else None
            out.append((0.0, dur, _categories(cats, path, sid, f"seq_ann.labels[{i}]")))
        return out, True
    if not isinstance(frame_ann, dict) or not isinstance(frame_ann.get("labels"), list):
        raise SkelclError(f"{path}: sequence {sid}: frame_ann must be null or have a 'labels' list")
    for i, lab in enumerate(frame_ann["labels"]):
        where = f"frame_ann.labels[{i}]"
        if not isinstance(lab, dict) or "start_t" not in lab or "end_t" not in lab:
            raise SkelclError(f"{path}: sequence {sid}: {where} needs start_t and end_t")
        try:
            start, end = float(lab["start_t"]), float(lab["end_t"])
        except (TypeError, ValueError):
            raise SkelclError(f"{path}: sequence {sid}: {where}: start_t/end_t are not numbers") from None
        out.append((start, end, _categories(lab.get("act_cat"), path, sid, where)))
    return out, False


def _categories(cats, path, sid, where) -> list[str]:
    if cats is None:
        return []
    if not isinstance(cats, list):
        raise SkelclError(f"{path}: sequence {sid}: {where}.act_cat must be a list or null")
    return [str(c).strip().lower() for c in cats]


def frame_labels(segs, length: int, subset: int) -> tuple[np.ndarray, int]:
    """Per-frame class indices (length,) int64 at 30 fps for a subset (see module docstring) and the
    number of frames that carried two or more subset classes."""
    classes = SUBSETS[subset]
    background = len(classes)
    times = np.arange(length) / TARGET_FPS
    seen = np.zeros((length, len(classes)), dtype=bool)
    for start, end, cats in segs:
        inside = (times >= start) & (times < end)
        for cat in cats:
            if cat in classes:
                seen[inside, classes.index(cat)] = True
    labels = np.full(length, background, dtype=np.int64)
    hit = seen.any(axis=1)
    labels[hit] = np.argmax(seen[hit], axis=1)  # argmax of booleans: the lowest index that is True
    return labels, int((seen.sum(axis=1) >= 2).sum())


def resample_30fps(joints: np.ndarray, fps: float) -> np.ndarray:
    """Linear interpolation in time from `fps` to 30 fps.

    joints (T, ...) -> (T', ...) with T' = floor((T - 1) * 30 / fps) + 1; output frame j is at source
    position p = j * fps / 30 and equals (1 - w) x[floor p] + w x[floor p + 1], w = p - floor p.
    """
    if fps <= 0:
        raise SkelclError(f"frame rate must be positive, got {fps}")
    length = joints.shape[0]
    if abs(fps - TARGET_FPS) < 1e-9 or length < 2:
        return np.asarray(joints, dtype=np.float32)
    out_len = int(np.floor((length - 1) * TARGET_FPS / fps + 1e-9)) + 1
    pos = np.arange(out_len) * (fps / TARGET_FPS)
    i0 = np.minimum(np.floor(pos).astype(np.int64), length - 1)
    i1 = np.minimum(i0 + 1, length - 1)
    w = (pos - i0).reshape((-1,) + (1,) * (joints.ndim - 1))
    x = np.asarray(joints, dtype=np.float64)
    return ((1 - w) * x[i0] + w * x[i1]).astype(np.float32)


def _feat_variants(feat_p: str) -> list[Path]:
    parts = [p for p in Path(feat_p).parts if p not in ("/", "")]
    if not parts:
        return []
    heads = [parts[0]] + ([_ALIASES[parts[0]]] if parts[0] in _ALIASES else [])
    rest = parts[1:]
    if rest and rest[0] in (parts[0], _ALIASES.get(parts[0])):
        rest = rest[1:]
    out = []
    for head in heads:
        out.append(Path(head, *rest))
        out.append(Path(head, head, *rest))
    return out


def find_joints(joints_dir, sid, feat_p) -> Path | None:
    """The joint file of a sequence in the joints folder (search order in the module docstring)."""
    joints_dir = Path(joints_dir)
    candidates = [joints_dir / f"{sid}.npy", joints_dir / f"{sid}.npz"]
    for variant in _feat_variants(str(feat_p or "")):
        stem = variant.with_suffix("")
        candidates += [joints_dir / stem.with_suffix(".npy"), joints_dir / stem.with_suffix(".npz")]
    for c in candidates:
        if c.is_file():
            return c
    return None


def read_joints(path, default_fps: float | None = None) -> tuple[np.ndarray, float]:
    """Read one joint file -> (joints (T, M, 25, 3) float32, fps)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "joints" not in z.files:
                    raise SkelclError(f"{path}: no array 'joints' (has {z.files})")
                joints = np.asarray(z["joints"])
                fps_key = (
                    "fps" if "fps" in z.files else "mocap_framerate" if "mocap_framerate" in z.files else None
                )
                fps = float(z[fps_key]) if fps_key else default_fps
        else:
            joints = np.load(path, allow_pickle=False)
            sidecar = path.with_suffix(".json")
            fps = default_fps
            if sidecar.is_file():
                try:
                    fps = float(json.loads(sidecar.read_text())["fps"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise SkelclError(f'{sidecar}: expected {{"fps": number}} ({err})') from None
    except (OSError, ValueError) as err:
        raise SkelclError(f"{path}: cannot read joint array ({err})") from None
    if fps is None:
        raise SkelclError(
            f'{path}: no frame rate (add {path.with_suffix(".json").name} {{"fps": ...}} or pass --fps)'
        )
    if joints.ndim == 3:
        joints = joints[:, None]
    if joints.ndim != 4 or joints.shape[2:] != (NUM_JOINTS, 3):
        raise SkelclError(
            f"{path}: joints must be (T, 25, 3) or (T, M, 25, 3) in NTU-25 order, got {joints.shape}"
        )
    if not np.isfinite(joints).all():
        raise SkelclError(f"{path}: joints contain NaN or inf")
    return joints.astype(np.float32), fps
