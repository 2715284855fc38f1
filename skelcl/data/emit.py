"""Writers of the real on-disk dataset formats, from arrays.

Used by the reader tests and fixture builders, and by `skelcl synth` to emit synthetic data as NTU
`.skeleton` files, a PKU-MMD release, BABEL json + joint arrays, a CTR-GCN `.npz` or a pyskl pickle.
Numbers are written with repr-exact precision unless `digits` is given (the real releases use about 7
significant digits).

Low level: write_ntu_skeleton, write_pku_skeleton, write_pku_labels, write_pku_split, write_babel_json,
write_joint_array, write_ctrgcn_npz, write_pyskl_pickle. Dataset level: emit_ntu, emit_pkummd (phase 1 or 2),
emit_babel (each takes an iterable of sequences and lays out a whole release folder).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from skelcl.data.skeleton import NUM_JOINTS


def _fmt(v: float, digits: int | None) -> str:
    if digits is None:
        return repr(float(v))
    return f"{float(v):.{digits}g}"


# -- NTU -----------------------------------------------------------------------------------------------


def write_ntu_skeleton(path, frames, *, digits: int | None = 7) -> None:
    """Write an NTU `.skeleton` file.

    frames: one entry per frame, each a list of (body_id, joints (25, 3)) for the bodies seen in that frame
    (0, 1, 2 or more). body_id is an int or decimal string (64-bit IDs are written exactly). The other
    per-body and per-joint fields get fixed plausible values (trackingState 2 = tracked).
    """
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, joints in bodies:
            joints = np.asarray(joints, dtype=np.float64)
            if joints.shape != (NUM_JOINTS, 3):
                raise ValueError(f"body joints must be (25, 3), got {joints.shape}")
            out.append(f"{int(body_id)} 0 1 2 1 2 0 0.01 -0.02 2")
            out.append(str(NUM_JOINTS))
            for x, y, z in joints:
                xs, ys, zs = _fmt(x, digits), _fmt(y, digits), _fmt(z, digits)
                dx, dy = 256 + 100 * float(x), 212 - 100 * float(y)
                out.append(f"{xs} {ys} {zs} {dx:.4f} {dy:.4f} {3 * dx:.3f} {3 * dy:.3f} 0.5 0.1 -0.2 0.8 2")
    Path(path).write_text("\n".join(out) + "\n")


def ntu_frames(joints, body_ids) -> list:
    """(T, M, 25, 3) array + M body IDs -> the `frames` argument of write_ntu_skeleton; a body whose
    joints are all zero in a frame is left out of that frame."""
    joints = np.asarray(joints)
    frames = []
    for t in range(joints.shape[0]):
        frames.append([(body_ids[m], joints[t, m]) for m in range(joints.shape[1]) if np.any(joints[t, m])])
    return frames


def ntu_name(setup, camera, performer, replication, action) -> str:
    return f"S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}"


def emit_ntu(root, sequences, *, digits: int | None = 7) -> list[Path]:
    """Write `.skeleton` files into root/. sequences: iterable of (name SsssCcccPpppRrrrAaaa, joints
    (T, M, 25, 3)); body IDs are 64-bit numbers derived from the sequence position."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, joints) in enumerate(sequences):
        ids = [72057594037927936 + 1000 * i + m for m in range(np.asarray(joints).shape[1])]
        path = root / f"{name}.skeleton"
        write_ntu_skeleton(path, ntu_frames(joints, ids), digits=digits)
        paths.append(path)
    return paths


# -- PKU-MMD ----------------------------------------------------------------------------------------------


def write_pku_skeleton(path, joints, *, digits: int | None = 7, leading_space: bool = False) -> None:
    """joints (T, M <= 2, 25, 3) -> one line of 150 numbers per frame; a missing body 2 is written as
    zeros. leading_space starts every line with a space (some release files do)."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim == 3:
        joints = joints[:, None]
    full = np.zeros((joints.shape[0], 2, NUM_JOINTS, 3))
    full[:, : joints.shape[1]] = joints
    lead = " " if leading_space else ""
    lines = [
        lead + " ".join("0" if v == 0 else _fmt(v, digits) for v in row) for row in full.reshape(-1, 150)
    ]
    Path(path).write_text("\n".join(lines) + "\n")


def write_pku_labels(path, rows) -> None:
    """rows: (label 1..51, start, end[, confidence]) -> 'label,start,end,confidence' lines."""
    lines = []
    for row in rows:
        label, start, end = (int(v) for v in row[:3])
        conf = int(row[3]) if len(row) > 3 else 1
        lines.append(f"{label},{start},{end},{conf}")
    Path(path).write_text("\n".join(lines) + "\n")


def write_pku_split(path, train, val, *, per_line: int | None = None) -> None:
    """A split file with the release's headers ("Validataion" sic) and comma-separated names."""

    def block(names):
        names = list(names)
        if per_line is None:
            return [", ".join(names)]
        return [", ".join(names[i : i + per_line]) + "," for i in range(0, len(names), per_line)]

    lines = ["Training videos: "] + block(train) + ["Validataion videos: "] + block(val)
    Path(path).write_text("\n".join(lines) + "\n")


def labels_to_segments(labels, background: int) -> list[tuple[int, int, int]]:
    """Per-frame class indices (T,) -> [(class, start, end)] runs, end inclusive; background, -1 skipped."""
    labels = np.asarray(labels)
    segs = []
    start = 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            c = int(labels[start])
            if c != background and c >= 0:
                segs.append((c, start, t - 1))
            start = t
    return segs


def pku_v2_name(script: int, subject: int, view: str) -> str:
    """A PKU-MMD phase-2 video name: (3, 7, "M") -> "A03N07-M"."""
    return f"A{script:02d}N{subject:02d}-{view}"


def emit_pkummd(
    root, sequences, splits=None, *, background: int | None = None, digits: int | None = 7, phase: int = 1
) -> Path:
    """Lay out a PKU-MMD release under root. Phase 1: PKU_Skeleton_Renew/, Train_Label_PKU_final/, Split/;
    phase 2: Skeleton/, Label/, Split/.

    sequences: iterable of (name like 0002-L or, phase 2, A01N01-L, joints (T, M<=2, 25, 3), labels (T,)
    0-based class indices of the phase's class list with `background` (default: the phase's, 51 or 41)
    and -1 for no action); label files get the phase's action ids (pkummd.label_ids). splits:
    {"cross-subject": (train names, val names), "cross-view": (...)} written as Split/<key>.txt."""
    from skelcl.data.pkummd import label_ids

    ids = label_ids(phase)
    background = len(ids) if background is None else background
    root = Path(root)
    if phase == 1:
        skel, lab, spl = root / "PKU_Skeleton_Renew", root / "Train_Label_PKU_final", root / "Split"
    else:
        skel, lab, spl = root / "Skeleton", root / "Label", root / "Split"
    for d in (skel, lab, spl):
        d.mkdir(parents=True, exist_ok=True)
    for name, joints, labels in sequences:
        write_pku_skeleton(skel / f"{name}.txt", joints, digits=digits)
        rows = [(ids[c], s, e, 1) for c, s, e in labels_to_segments(labels, background)]
        write_pku_labels(lab / f"{name}.txt", rows)
    for key, (train, val) in (splits or {}).items():
        write_pku_split(spl / f"{key}.txt", train, val)
    return root


# -- BABEL ------------------------------------------------------------------------------------------------


def babel_entry(sid, feat_p, dur, frame_labels=None, seq_labels=None) -> dict:
    """One BABEL annotation entry. frame_labels: None (frame_ann null) or a list of (act_cat list or None,
    start_t, end_t); seq_labels: list of act_cat lists for seq_ann."""
    seq = [{"raw_label": "x", "proc_label": "x", "seg_id": f"s{sid}-{i}", "act_cat": cats}
           for i, cats in enumerate(seq_labels or [])]  # fmt: skip
    entry = {
        "babel_sid": sid,
        "url": f"https://example.invalid/{sid}",
        "feat_p": feat_p,
        "dur": float(dur),
        "seq_ann": {"babel_lid": f"l{sid}", "anntr_id": "a", "mul_act": True, "labels": seq},
        "frame_ann": None,
    }
    if frame_labels is not None:
        labels = [
            {"raw_label": "x", "proc_label": "x", "seg_id": f"f{sid}-{i}", "act_cat": cats,
             "start_t": float(s), "end_t": float(e)}
            for i, (cats, s, e) in enumerate(frame_labels)
        ]  # fmt: skip
        entry["frame_ann"] = {"babel_lid": f"l{sid}", "anntr_id": "a", "mul_act": True, "labels": labels}
    return entry


def write_babel_json(path, entries) -> None:
    """entries: list of babel_entry dicts -> {str(babel_sid): entry} json."""
    Path(path).write_text(json.dumps({str(e["babel_sid"]): e for e in entries}, indent=1))


def write_joint_array(path, joints, fps: float, *, sidecar: bool = True) -> Path:
    """Write joints (T, 25, 3) as .npy (with a <stem>.json {"fps": ...} sidecar when asked) or as .npz
    (keys joints, fps) depending on the suffix of path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joints = np.asarray(joints, dtype=np.float32)
    if path.suffix == ".npz":
        np.savez(path, joints=joints, fps=np.float64(fps))
    else:
        np.save(path, joints)
        if sidecar:
            path.with_suffix(".json").write_text(json.dumps({"fps": float(fps)}))
    return path


def emit_babel(root, sequences, *, fps: float = 30.0) -> Path:
    """Lay out a BABEL folder: root/train.json, root/val.json, root/joints/<sid>.npy (+ sidecar).

    sequences: iterable of (sid int, part "train"/"val", joints (T, 25, 3) at `fps`, frame_labels as for
    babel_entry). feat_p is a plausible AMASS path; the joints are found by sid."""
    root = Path(root)
    (root / "joints").mkdir(parents=True, exist_ok=True)
    parts = {"train": [], "val": []}
    for sid, part, joints, frame_labels in sequences:
        joints = np.asarray(joints)
        dur = (joints.shape[0] - 1) / fps if joints.shape[0] > 1 else 0.0
        parts[part].append(babel_entry(sid, f"SYN/SYN/{sid}/{sid}_poses.npz", dur, frame_labels))
        write_joint_array(root / "joints" / f"{sid}.npy", joints, fps)
    for part, entries in parts.items():
        write_babel_json(root / f"{part}.json", entries)
    return root


# -- CTR-GCN npz, pyskl pickle --------------------------------------------------------------------------


def ctrgcn_rows(sequences, length: int = 300) -> np.ndarray:
    """list of joints (T, M<=2, 25, 3) -> (N, length, 150) float32, zero padded at the end / cut."""
    out = np.zeros((len(sequences), length, 2, NUM_JOINTS, 3), dtype=np.float32)
    for i, j in enumerate(sequences):
        j = np.asarray(j)
        t = min(length, j.shape[0])
        out[i, :t, : j.shape[1]] = j[:t]
    return out.reshape(len(sequences), length, -1)


def write_ctrgcn_npz(path, x_train, y_train, x_test, y_test, num_classes: int = 60) -> None:
    """x_* (N, T, 150); y_* class indices (N,) written one-hot (N, num_classes), as CTR-GCN's NTU60_CS.npz."""
    eye = np.eye(num_classes, dtype=np.float32)
    np.savez(path, x_train=np.asarray(x_train, np.float32), y_train=eye[np.asarray(y_train, int)],
             x_test=np.asarray(x_test, np.float32), y_test=eye[np.asarray(y_test, int)])  # fmt: skip


def write_pyskl_pickle(path, samples, split) -> None:
    """samples: list of (frame_dir, joints (T, M, 25, 3), label 0-based); split {'xsub_train': [...], ...}.
    Keypoints are stored (M, T, 25, 3) float16 as pyskl does."""
    anns = []
    for frame_dir, joints, label in samples:
        kp = np.asarray(joints, dtype=np.float16).transpose(1, 0, 2, 3)
        anns.append(
            {"frame_dir": frame_dir, "label": int(label), "keypoint": kp, "total_frames": kp.shape[1]}
        )
    with open(path, "wb") as f:
        pickle.dump({"split": {k: list(v) for k, v in split.items()}, "annotations": anns}, f)
