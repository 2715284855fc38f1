"""NTU-style normalization of skeleton sequences.

Three steps, applied to one sequence joints (T, M, 25, 3):

1. Empty frames (every joint of every body exactly zero: the sensor lost the person) are filled with the
   nearest earlier non-empty frame; leading empty frames take the first non-empty frame. A sequence with
   no non-empty frame at all is an error.
2. Centering: every frame is translated so the first body's spine_mid joint (index 1; "joint 2" in NTU's
   1-based numbering, the spine joint ST-GCN's preprocessing centers on) sits at the origin. Body slots
   that are empty in a frame stay zero.
3. Rotation, one rotation for the whole sequence, computed from the first frame: the first body's
   spine_base -> spine_mid bone (indices 0 -> 1) is turned onto +z exactly, and the right -> left shoulder
   bone (indices 8 -> 4), with its component along z removed, onto +x. This is a proper rotation
   (determinant +1): x = shoulder direction, z = spine direction, y = z cross x.
"""

from __future__ import annotations

import numpy as np

from skelcl.errors import SkelclError

SPINE_BASE, SPINE_MID, SHOULDER_LEFT, SHOULDER_RIGHT = 0, 1, 4, 8


def fill_empty_frames(joints: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace all-zero frames by the nearest earlier non-empty frame (leading ones by the first).

    joints (T, M, V, 3) -> (filled copy, number of frames filled).
    """
    nonempty = np.abs(joints).reshape(len(joints), -1).sum(axis=1) > 0
    if not nonempty.any():
        raise SkelclError("sequence has no non-empty frame")
    idx = np.where(nonempty, np.arange(len(joints)), 0)
    idx = np.maximum.accumulate(idx)
    first = int(np.argmax(nonempty))
    idx[:first] = first
    return joints[idx], int((~nonempty).sum())


def canonical_rotation(frame: np.ndarray) -> np.ndarray:
    """Rotation matrix R (3, 3) with rows x, y, z of the body frame of one body's joints (25, 3).

    Applying `joints @ R.T` maps the spine bone onto +z and the shoulder bone into the +x half of xz.
    """
    z = frame[SPINE_MID] - frame[SPINE_BASE]
    if np.linalg.norm(z) < 1e-8:
        raise SkelclError("spine bone has zero length in the reference frame; cannot orient the body")
    z = z / np.linalg.norm(z)
    x = frame[SHOULDER_LEFT] - frame[SHOULDER_RIGHT]
    x = x - (x @ z) * z
    if np.linalg.norm(x) < 1e-8:
        raise SkelclError("shoulder bone is parallel to the spine in the reference frame; cannot orient")
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def normalize_sequence(joints: np.ndarray) -> np.ndarray:
    """NTU-style normalization (see the module docstring). joints (T, M, 25, 3) -> float32 copy."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 4 or joints.shape[-1] != 3:
        raise SkelclError(f"joints must be (T, M, V, 3), got {joints.shape}")
    filled, _ = fill_empty_frames(joints)
    present = np.abs(filled).sum(axis=(2, 3), keepdims=True) > 0  # (T, M, 1, 1): body slot occupied
    center = filled[:, :1, SPINE_MID : SPINE_MID + 1, :]  # (T, 1, 1, 3)
    centered = np.where(present, filled - center, 0.0)
    first = filled[0, 0]
    rotation = canonical_rotation(first - first[SPINE_MID])
    return (centered @ rotation.T).astype(np.float32)
