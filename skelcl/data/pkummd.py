"""PKU-MMD phase 1 (v1): skeleton files, label files, split files and the 51 action classes.

Release layout (each part can also be given separately to `skelcl prepare pkummd`):

    PKU_Skeleton_Renew/XXXX-V.txt      one line per frame (30 fps): 150 numbers = 2 bodies x 25 joints x
                                       (x, y, z); body 2 all zeros when only one person is seen; lines may
                                       start with a space
    Train_Label_PKU_final/XXXX-V.txt   one line per action instance: label,start,end,confidence
                                       (label 1..51; some rows have start > end: swapped and counted)
    Split/cross-subject.txt            "Training videos:" line, comma-separated names, "Validataion videos:"
    Split/cross-view.txt               (sic) line, comma-separated names

V is the camera view (L, M, R). Frame labels: a label row covers frames start..end inclusive (0-based
frame indices into the skeleton file, clipped to the sequence, clipped rows counted); frames covered by no
row are background; a frame covered by rows of two classes takes the lowest class index (counted).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from skelcl.data.readcommon import read_numbers
from skelcl.data.skeleton import NUM_JOINTS
from skelcl.errors import SkelclError

# Class IDs 1..51 in the order of the release's Actions.xlsx.
ACTIONS = (
    "bow", "brushing hair", "brushing teeth", "check time (from watch)", "cheer up", "clapping",
    "cross hands in front (say stop)", "drink water", "drop", "eat meal/snack", "falling",
    "giving something to other person", "hand waving", "handshaking", "hopping (one foot jumping)",
    "hugging other person", "jump up", "kicking other person", "kicking something",
    "make a phone call/answer phone", "pat on back of other person", "pickup", "playing with phone/tablet",
    "point finger at the other person", "pointing to something with finger", "punching/slapping other person",
    "pushing other person", "put on a hat/cap", "put something inside pocket", "reading",
    "rub two hands together", "salute", "sitting down", "standing up", "take off a hat/cap",
    "take off glasses", "take off jacket", "take out something from pocket", "taking a selfie",
    "tear up paper", "throw", "touch back (backache)", "touch chest (stomachache/heart pain)",
    "touch head (headache)", "touch neck (neckache)", "typing on a keyboard",
    "use a fan (with hand or paper)/feeling warm", "wear jacket", "wear on glasses", "wipe face", "writing",
)  # fmt: skip
assert len(ACTIONS) == 51
NUM_ACTIONS = 51
BACKGROUND = NUM_ACTIONS  # class index of background frames
CLASSES = list(ACTIONS) + ["background"]

SPLIT_FILES = {"xsub": "cross-subject.txt", "xview": "cross-view.txt"}
SPLITS = {"xsub": ["train", "test"], "xview": ["train", "test"]}
ATTRS = ("subject_group", "view")
VIEWS = {"L": 0, "M": 1, "R": 2}
NAME_RE = re.compile(r"^(\d{4})-([LMR])$")

VALUES_PER_LINE = 2 * NUM_JOINTS * 3


def parse_name(name: str) -> dict | None:
    """'0002-L' -> {'subject_group': 2, 'view': 0} (view L=0, M=1, R=2), or None."""
    m = NAME_RE.match(name)
    if m is None:
        return None
    return {"subject_group": int(m.group(1)), "view": VIEWS[m.group(2)]}


def read_skeleton(path) -> np.ndarray:
    """One skeleton file -> joints (T, 2, 25, 3) float32. Each non-empty line must hold 150 numbers."""
    path = Path(path)
    nums = read_numbers(path)
    bad = np.flatnonzero(nums.line_ntok != VALUES_PER_LINE)
    if len(bad):
        i = int(bad[0])
        raise SkelclError(
            f"{path}:{int(nums.line_no[i])}: {int(nums.line_ntok[i])} numbers, expected {VALUES_PER_LINE} "
            "(2 bodies x 25 joints x 3)"
        )
    if len(nums.line_ntok) == 0:
        raise SkelclError(f"{path}:1: no frames")
    return nums.values.reshape(-1, 2, NUM_JOINTS, 3).astype(np.float32)


def read_labels(path) -> tuple[np.ndarray, int]:
    """One label file -> (rows (N, 3) int64 of (class 1..51, start, end) with start <= end, number of rows
    that had start > end and were swapped). Blank lines are skipped; anything else malformed raises."""
    path = Path(path)
    rows = []
    swapped = 0
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or (len(fields) == 4 and fields[3] == "") or len(fields) > 4:
            raise SkelclError(f"{path}:{lineno}: expected 'label,start,end,confidence', got {line!r}")
        try:
            label, start, end = (int(f) for f in fields[:3])
            if len(fields) == 4:
                float(fields[3])
        except ValueError:
            raise SkelclError(
                f"{path}:{lineno}: expected 'label,start,end,confidence' numbers, got {line!r}"
            ) from None
        if not 1 <= label <= NUM_ACTIONS:
            raise SkelclError(f"{path}:{lineno}: label {label} outside 1..{NUM_ACTIONS}")
        if start < 0 or end < 0:
            raise SkelclError(f"{path}:{lineno}: negative frame index in {line!r}")
        if start > end:
            start, end = end, start
            swapped += 1
        rows.append((label, start, end))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3), swapped


def frame_labels(rows: np.ndarray, length: int) -> tuple[np.ndarray, int, int]:
    """Per-frame class indices (length,) int64: class label-1 on frames start..end (inclusive), BACKGROUND
    elsewhere; where rows of different classes overlap the lowest class index wins.

    Returns (labels, frames carrying two or more classes, rows clipped at the sequence end)."""
    labels = np.full(length, BACKGROUND, dtype=np.int64)
    hits = np.zeros(length, dtype=np.int64)
    seen = np.zeros((length, NUM_ACTIONS), dtype=bool) if len(rows) else None
    clipped = 0
    for label, start, end in rows:
        if end >= length:
            clipped += 1
        lo, hi = min(start, length), min(end + 1, length)
        if lo >= hi:
            continue
        seen[lo:hi, label - 1] = True
    if seen is not None:
        hits = seen.sum(axis=1)
        any_hit = hits > 0
        labels[any_hit] = np.argmax(seen[any_hit], axis=1)
    return labels, int((hits >= 2).sum()), clipped


def read_split(path) -> tuple[list[str], list[str]]:
    """A split file -> (training names, validation names).

    Format: a line starting "Training videos:" then comma-separated names (on that line and/or the lines
    after it), then a line starting "Validataion videos:" (the release's spelling; "Validation" is accepted
    too) and its names."""
    path = Path(path)
    parts: dict[str, list[str]] = {}
    current = None
    header = re.compile(r"^\s*(training|validataion|validation|testing|test)\s+videos\s*:\s*", re.IGNORECASE)
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        m = header.match(line)
        if m:
            current = "train" if m.group(1).lower() == "training" else "test"
            if current in parts:
                raise SkelclError(f"{path}:{lineno}: a second {m.group(1)!r} header")
            parts[current] = []
            line = line[m.end() :]
        names = [n.strip() for n in re.split(r"[,\s]+", line) if n.strip()]
        if not names:
            continue
        if current is None:
            raise SkelclError(f"{path}:{lineno}: names before the 'Training videos:' header")
        for name in names:
            if not NAME_RE.match(name):
                raise SkelclError(f"{path}:{lineno}: {name!r} is not a video name like 0002-L")
        parts[current].extend(names)
    for part, header_text in (("train", "Training videos:"), ("test", "Validataion videos:")):
        if part not in parts:
            raise SkelclError(f"{path}: no {header_text!r} header")
    return parts["train"], parts["test"]
