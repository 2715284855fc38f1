"""PKU-MMD phases 1 and 2: skeleton files, label files, split files and the action classes.

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

Phase 2 (v2) uses the same three file formats with other names and another class set:

    A01N01-L.txt ... A26N13-R.txt      skeleton and label files (same line formats as phase 1)
    cross_subject_v2.txt               split files (same headers and comma-separated names as phase 1)
    cross_view_v2.txt

Assumptions for phase 2 (the release documents them only in part; sources: the project page gives
41 classes and 13 subjects, and public phase-2 readers feed the label files' action ids, in 1..51,
through the phase-1 numbering and hold out whole NNN numbers in the cross-subject split):
- the label files carry phase-1 action ids (1..51); the 41 phase-2 classes are the 41 one-person
  actions of phase 1, i.e. all but the 10 two-person actions (ids 12, 14, 16, 18, 21, 24, 26, 27, 29,
  38); they are numbered 0..40 in phase-1 id order and background is class 41;
- in A<aa>N<nn>-V, <nn> is the performer (attribute "subject") and <aa> the recorded action script
  (attribute "script"); V is the view as in phase 1.
A phase-2 label row with one of the 10 two-person ids is refused as malformed.
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

# Phase 2: the phase-1 ids of its 41 classes (all but the two-person actions), see the module docstring.
TWO_PERSON_IDS = (12, 14, 16, 18, 21, 24, 26, 27, 29, 38)
PHASE2_IDS = tuple(i for i in range(1, NUM_ACTIONS + 1) if i not in TWO_PERSON_IDS)
assert len(PHASE2_IDS) == 41
ACTIONS_V2 = tuple(ACTIONS[i - 1] for i in PHASE2_IDS)
CLASSES_V2 = list(ACTIONS_V2) + ["background"]
NAME_RE_V2 = re.compile(r"^A(\d{2})N(\d{2})-([LMR])$")

# Split file names looked for, first found wins; the other phase's names come last so that a file of the
# wrong phase is read and refused (naming it) rather than silently missed.
SPLIT_NAMES = {
    1: {"xsub": ("cross-subject.txt", "cross_subject.txt", "cross_subject_v2.txt", "cross-subject_v2.txt"),
        "xview": ("cross-view.txt", "cross_view.txt", "cross_view_v2.txt", "cross-view_v2.txt")},
    2: {"xsub": ("cross_subject_v2.txt", "cross-subject_v2.txt", "cross-subject.txt", "cross_subject.txt"),
        "xview": ("cross_view_v2.txt", "cross-view_v2.txt", "cross-view.txt", "cross_view.txt")},
}  # fmt: skip
PHASE_ATTRS = {1: ATTRS, 2: ("script", "subject", "view")}
EXAMPLE_NAME = {1: "0002-L", 2: "A01N01-L"}

VALUES_PER_LINE = 2 * NUM_JOINTS * 3


def _check_phase(phase: int) -> int:
    if phase not in (1, 2):
        raise SkelclError(f"PKU-MMD phase must be 1 or 2, got {phase!r}")
    return phase


def class_names(phase: int = 1) -> list[str]:
    """The cache's class list: the phase's actions, then "background"."""
    return list(CLASSES) if _check_phase(phase) == 1 else list(CLASSES_V2)


def label_ids(phase: int = 1) -> tuple[int, ...]:
    """The label files' action id of class 0, 1, ... (phase 1: 1..51; phase 2: 41 of those ids)."""
    return tuple(range(1, NUM_ACTIONS + 1)) if _check_phase(phase) == 1 else PHASE2_IDS


def parse_name(name: str) -> dict | None:
    """'0002-L' -> {'subject_group': 2, 'view': 0} (view L=0, M=1, R=2); a phase-2 name 'A03N07-M' ->
    {'script': 3, 'subject': 7, 'view': 1}; None for anything else."""
    m = NAME_RE.match(name)
    if m is not None:
        return {"subject_group": int(m.group(1)), "view": VIEWS[m.group(2)]}
    m = NAME_RE_V2.match(name)
    if m is not None:
        return {"script": int(m.group(1)), "subject": int(m.group(2)), "view": VIEWS[m.group(3)]}
    return None


def name_phase(name: str) -> int | None:
    """1 for a phase-1 video name (0002-L), 2 for a phase-2 one (A01N01-L), else None."""
    if NAME_RE.match(name):
        return 1
    if NAME_RE_V2.match(name):
        return 2
    return None


def detect_phase(paths, phase: int | None = None) -> int:
    """The phase of a set of skeleton files from their names (or check `phase` against them).

    Files of both phases, or files of the other phase than `phase`, raise a SkelclError naming a file of
    each; names of neither phase decide nothing (phase 1 when nothing decides)."""
    by_phase: dict[int, list] = {1: [], 2: []}
    for path in paths:
        p = name_phase(Path(path).stem)
        if p is not None:
            by_phase[p].append(Path(path))
    if by_phase[1] and by_phase[2]:
        one, two = by_phase[1], by_phase[2]
        raise SkelclError(
            f"PKU-MMD phases mixed: {len(one)} phase-1 files (like {one[0]}) and {len(two)} phase-2 files "
            f"(like {two[0]}); prepare each phase into its own cache"
        )
    found = 2 if by_phase[2] else 1 if by_phase[1] else None
    if phase is None:
        return found or 1
    _check_phase(phase)
    if found is not None and found != phase:
        first = by_phase[found][0]
        raise SkelclError(
            f"--phase {phase} given but the skeleton files are phase {found} (like {first}, named as "
            f"{EXAMPLE_NAME[found]}; phase {phase} names look like {EXAMPLE_NAME[phase]})"
        )
    return phase


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


def read_labels(path, phase: int = 1) -> tuple[np.ndarray, int]:
    """One label file -> (rows (N, 3) int64 of (action id, start, end) with start <= end, number of rows
    that had start > end and were swapped). Blank lines are skipped; anything else malformed raises, and so
    does an action id outside the phase's classes (phase 1: 1..51; phase 2: no two-person action)."""
    path = Path(path)
    ids = set(label_ids(phase))
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
        if label not in ids:
            raise SkelclError(
                f"{path}:{lineno}: label {label} ({ACTIONS[label - 1]}) is a two-person action, not one of "
                f"the {len(ids)} phase-{phase} classes"
            )
        if start < 0 or end < 0:
            raise SkelclError(f"{path}:{lineno}: negative frame index in {line!r}")
        if start > end:
            start, end = end, start
            swapped += 1
        rows.append((label, start, end))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3), swapped


def frame_labels(rows: np.ndarray, length: int, phase: int = 1) -> tuple[np.ndarray, int, int]:
    """Per-frame class indices (length,) int64: the class of the row's action id (phase 1: id - 1; phase 2:
    its position in PHASE2_IDS) on frames start..end (inclusive), background (the last class) elsewhere;
    where rows of different classes overlap the lowest class index wins.

    Returns (labels, frames carrying two or more classes, rows clipped at the sequence end)."""
    ids = label_ids(phase)
    index = np.full(NUM_ACTIONS + 1, -1, dtype=np.int64)
    index[list(ids)] = np.arange(len(ids))
    labels = np.full(length, len(ids), dtype=np.int64)
    hits = np.zeros(length, dtype=np.int64)
    seen = np.zeros((length, len(ids)), dtype=bool) if len(rows) else None
    clipped = 0
    for label, start, end in rows:
        if end >= length:
            clipped += 1
        lo, hi = min(start, length), min(end + 1, length)
        if lo >= hi:
            continue
        seen[lo:hi, index[label]] = True
    if seen is not None:
        hits = seen.sum(axis=1)
        any_hit = hits > 0
        labels[any_hit] = np.argmax(seen[any_hit], axis=1)
    return labels, int((hits >= 2).sum()), clipped


def read_split(path, phase: int = 1) -> tuple[list[str], list[str]]:
    """A split file -> (training names, validation names).

    Format: a line starting "Training videos:" then comma-separated names (on that line and/or the lines
    after it), then a line starting "Validataion videos:" (the release's spelling; "Validation" is accepted
    too) and its names. Every name must be a video name of `phase` (0002-L, or A01N01-L for phase 2)."""
    path = Path(path)
    name_re = NAME_RE if _check_phase(phase) == 1 else NAME_RE_V2
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
            if name_re.match(name):
                continue
            other = name_phase(name)
            if other is not None:
                raise SkelclError(
                    f"{path}:{lineno}: {name!r} is a phase-{other} video name but the skeleton files are "
                    f"phase {phase} (like {EXAMPLE_NAME[phase]}): this split file belongs to the other phase"
                )
            raise SkelclError(f"{path}:{lineno}: {name!r} is not a video name like {EXAMPLE_NAME[phase]}")
        parts[current].extend(names)
    for part, header_text in (("train", "Training videos:"), ("test", "Validataion videos:")):
        if part not in parts:
            raise SkelclError(f"{path}: no {header_text!r} header")
    return parts["train"], parts["test"]
