"""NTU RGB+D 60/120: the raw `.skeleton` files, CTR-GCN-style `.npz` and pyskl-style annotation pickles.

`.skeleton` layout (one number group per line, whitespace separated):

    frameCount
    per frame:  bodyCount
      per body: bodyID clippedEdges handLeftConfidence handLeftState handRightConfidence handRightState
                isRestricted leanX leanY trackingState                                 (10 values)
                jointCount                                                             (25)
                25 x: x y z depthX depthY colorX colorY orientW orientX orientY orientZ trackingState
                                                                                       (12 values)

bodyID is a 64-bit integer (above 2**53, so a float64 would change it): it is read from the text and kept
as a string. A frame can hold 0, 1, 2 or more bodies. Body choice (the documented rule): every distinct
bodyID is one candidate; its activity is the summed variance over time of its 75 joint coordinates, over
the frames where it appears (readcommon.body_activity); the two most active bodies are kept, the most
active first (ties: the one seen first). Frames where no kept body appears are filled with the nearest
earlier such frame (leading ones with the first) and counted as repaired; they are never removed, so
frame indices stay aligned.

File names SsssCcccPpppRrrrAaaa give setup, camera, performer (subject), replication and action.
Standard splits, all train/test:
  xsub  - cross-subject: the performers in TRAIN_SUBJECTS train (the NTU-60 list is the NTU-120 list's
          entries up to 40, so one list serves both),
  xview - cross-view (NTU-60 protocol): cameras 2 and 3 train, camera 1 tests,
  xset  - cross-setup (NTU-120 protocol): even setup numbers train, odd ones test.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from skelcl.data.readcommon import read_numbers, select_bodies
from skelcl.data.skeleton import NUM_JOINTS
from skelcl.errors import SkelclError

NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

# Cross-subject training performers (NTU RGB+D 60 paper: the first 20; NTU RGB+D 120 paper: all 53).
TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46, 47, 49, 50, 52, 53,
     54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
)  # fmt: skip
TRAIN_CAMERAS = frozenset((2, 3))

SPLITS = {"xsub": ["train", "test"], "xview": ["train", "test"], "xset": ["train", "test"]}
ATTRS = ("setup", "camera", "performer", "replication", "action")

ACTIONS = (
    "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup", "throw",
    "sitting down", "standing up (from sitting position)", "clapping", "reading", "writing", "tear up paper",
    "wear jacket", "take off jacket", "wear a shoe", "take off a shoe", "wear on glasses", "take off glasses",
    "put on a hat/cap", "take off a hat/cap", "cheer up", "hand waving", "kicking something",
    "reach into pocket", "hopping (one foot jumping)", "jump up", "make a phone call/answer phone",
    "playing with phone/tablet", "typing on a keyboard", "pointing to something with finger",
    "taking a selfie", "check time (from watch)", "rub two hands together", "nod head/bow", "shake head",
    "wipe face", "salute", "put the palms together", "cross hands in front (say stop)", "sneeze/cough",
    "staggering", "falling", "touch head (headache)", "touch chest (stomachache/heart pain)",
    "touch back (backache)", "touch neck (neckache)", "nausea or vomiting condition",
    "use a fan (with hand or paper)/feeling warm", "punching/slapping other person", "kicking other person",
    "pushing other person", "pat on back of other person", "point finger at the other person",
    "hugging other person", "giving something to other person", "touch other person's pocket",
    "handshaking", "walking towards each other", "walking apart from each other",
    # NTU RGB+D 120 adds 61..120
    "put on headphone", "take off headphone", "shoot at the basket", "bounce ball", "tennis bat swing",
    "juggling table tennis balls", "hush (quite)", "flick hair", "thumb up", "thumb down", "make ok sign",
    "make victory sign", "staple book", "counting money", "cutting nails", "cutting paper (using scissors)",
    "snapping fingers", "open bottle", "sniff (smell)", "squat down", "toss a coin", "fold paper",
    "ball up paper", "play magic cube", "apply cream on face", "apply cream on hand back", "put on bag",
    "take off bag", "put something into a bag", "take something out of a bag", "open a box",
    "move heavy objects", "shake fist", "throw up cap/hat", "hands up (both hands)", "cross arms",
    "arm circles", "arm swings", "running on the spot", "butt kicks (kick backward)", "cross toe touch",
    "side kick", "yawn", "stretch oneself", "blow nose", "hit other person with something",
    "wield knife towards other person", "knock over other person (hit with body)",
    "grab other person's stuff", "shoot at other person with a gun", "step on foot", "high-five",
    "cheers and drink", "carry something with other person", "take a photo of other person",
    "follow other person", "whisper in other person's ear", "exchange things with other person",
    "support somebody with hand", "finger-guessing game (playing rock-paper-scissors)",
)  # fmt: skip
assert len(ACTIONS) == 120


def class_names(num_actions: int) -> list[str]:
    """The first `num_actions` NTU action names plus "background" (last, never used by NTU labels)."""
    return list(ACTIONS[:num_actions]) + ["background"]


def parse_name(name: str) -> dict | None:
    """SsssCcccPpppRrrrAaaa -> {setup, camera, performer, replication, action} (1-based ints), or None."""
    m = NAME_RE.search(name)
    if m is None:
        return None
    return dict(zip(ATTRS, (int(g) for g in m.groups())))


def standard_splits(attrs: dict) -> dict[str, str]:
    """The part ("train"/"test") of every standard split for a sample with these name attributes."""
    return {
        "xsub": "train" if attrs["performer"] in TRAIN_SUBJECTS else "test",
        "xview": "train" if attrs["camera"] in TRAIN_CAMERAS else "test",
        "xset": "train" if attrs["setup"] % 2 == 0 else "test",
    }


# -- .skeleton -----------------------------------------------------------------------------------------

_LAYOUT_ERRORS = {
    1: "expected the frame count (one integer)",
    2: "expected a body count (one integer)",
    3: "expected a body info line (10 values)",
    4: "expected the joint count 25",
    5: "expected a joint line (12 values)",
    6: "unexpected end of file (truncated?)",
    7: "more lines than the frame count announces",
    8: "a count must be a non-negative integer",
}


@numba.njit(cache=True)
def _layout(line_ntok, first):
    """Walk the line structure. line_ntok (L,) values per non-empty line, first (L,) each line's first value.

    Returns (error code, error line index, frame count, body_frame, body_info_line, body_joint_line,
    number of bodies); error code 0 = fine.
    """
    n = line_ntok.shape[0]
    cap = n // 27 + 1
    body_frame = np.empty(cap, dtype=np.int64)
    body_info = np.empty(cap, dtype=np.int64)
    body_joint = np.empty(cap, dtype=np.int64)
    nb = 0
    if n == 0:
        return 6, 0, 0, body_frame, body_info, body_joint, 0
    if line_ntok[0] != 1:
        return 1, 0, 0, body_frame, body_info, body_joint, 0
    f_count = first[0]
    if f_count < 0 or f_count != np.floor(f_count):
        return 8, 0, 0, body_frame, body_info, body_joint, 0
    frames = int(f_count)
    li = 1
    for f in range(frames):
        if li >= n:
            return 6, n - 1, frames, body_frame, body_info, body_joint, nb
        if line_ntok[li] != 1:
            return 2, li, frames, body_frame, body_info, body_joint, nb
        b_count = first[li]
        if b_count < 0 or b_count != np.floor(b_count):
            return 8, li, frames, body_frame, body_info, body_joint, nb
        li += 1
        for _ in range(int(b_count)):
            if li >= n:
                return 6, n - 1, frames, body_frame, body_info, body_joint, nb
            if line_ntok[li] != 10:
                return 3, li, frames, body_frame, body_info, body_joint, nb
            info = li
            li += 1
            if li >= n:
                return 6, n - 1, frames, body_frame, body_info, body_joint, nb
            if line_ntok[li] != 1 or first[li] != 25:
                return 4, li, frames, body_frame, body_info, body_joint, nb
            li += 1
            for _k in range(25):
                if li >= n:
                    return 6, n - 1, frames, body_frame, body_info, body_joint, nb
                if line_ntok[li] != 12:
                    return 5, li, frames, body_frame, body_info, body_joint, nb
                li += 1
            body_frame[nb] = f
            body_info[nb] = info
            body_joint[nb] = info + 2
            nb += 1
    if li != n:
        return 7, li, frames, body_frame, body_info, body_joint, nb
    return 0, 0, frames, body_frame, body_info, body_joint, nb


@dataclass
class SkeletonFile:
    """One parsed `.skeleton` file, before body selection.

    joints (T, B, 25, 3) float32 for the B distinct bodyIDs (zeros where a body is absent), present (T, B)
    bool, body_ids: the B bodyIDs as exact decimal strings, in order of first appearance; bodies_per_frame
    (T,) the body count each frame announced.
    """

    joints: np.ndarray
    present: np.ndarray
    body_ids: list[str]
    bodies_per_frame: np.ndarray


def read_skeleton(path) -> SkeletonFile:
    """Parse one NTU `.skeleton` file; a malformed file raises SkelclError naming the file and line."""
    path = Path(path)
    raw = path.read_bytes()
    nums = read_numbers(path, raw)
    first = nums.values[nums.line_offset] if len(nums.line_offset) else np.zeros(0)
    code, err_line, frames, body_frame, body_info, body_joint, nb = _layout(nums.line_ntok, first)
    if code:
        line = int(nums.line_no[err_line]) if len(nums.line_no) else 1
        if code == 6:
            line = (int(nums.line_no[-1]) + 1) if len(nums.line_no) else 1
        raise SkelclError(f"{path}:{line}: {_LAYOUT_ERRORS[code]}")
    body_frame, body_info, body_joint = body_frame[:nb], body_info[:nb], body_joint[:nb]
    # body IDs: the first token of each body info line, read as text so 64-bit IDs stay exact
    ids = []
    for li in body_info:
        s = int(nums.line_start[li])
        token = raw[s : s + 48].split(None, 1)[0].decode("ascii", "replace")
        if not re.fullmatch(r"\d+", token):
            raise SkelclError(
                f"{path}:{int(nums.line_no[li])}: bodyID {token!r} is not a non-negative integer"
            )
        ids.append(str(int(token)))
    order = {}
    for body_id in ids:
        order.setdefault(body_id, len(order))
    slot = np.array([order[b] for b in ids], dtype=np.int64)
    joint_lines = body_joint[:, None] + np.arange(NUM_JOINTS)  # (nb, 25)
    idx = nums.line_offset[joint_lines][:, :, None] + np.arange(3)  # (nb, 25, 3)
    xyz = nums.values[idx].astype(np.float32)
    joints = np.zeros((frames, len(order), NUM_JOINTS, 3), dtype=np.float32)
    present = np.zeros((frames, len(order)), dtype=bool)
    joints[body_frame, slot] = xyz
    present[body_frame, slot] = True
    per_frame = np.bincount(body_frame, minlength=frames) if frames else np.zeros(0, dtype=np.int64)
    return SkeletonFile(joints, present, list(order), per_frame)


def choose_bodies(sample: SkeletonFile, keep: int = 2) -> tuple[np.ndarray, list[str]]:
    """(T, K, 25, 3) joints of the K = min(keep, B) most active bodies (module docstring) and their IDs."""
    if sample.joints.shape[1] == 0:
        return sample.joints[:, :0], []
    chosen = select_bodies(sample.joints, sample.present, keep)
    joints = sample.joints[:, chosen] * sample.present[:, chosen, None, None]
    return joints, [sample.body_ids[i] for i in chosen]


def read_missing_list(path) -> set[str]:
    """A published list of samples with missing skeletons: one sample name per line (blank lines and
    lines starting with '#' ignored; a trailing '.skeleton' is dropped)."""
    names = set()
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names.add(line.removesuffix(".skeleton"))
    return names


# -- CTR-GCN .npz ------------------------------------------------------------------------------------

NPZ_SCHEMES = {"cs": "xsub", "csub": "xsub", "cv": "xview", "cview": "xview", "cset": "xset", "xsub": "xsub",
               "xview": "xview", "xset": "xset"}  # fmt: skip


def npz_scheme(path) -> str | None:
    """Split scheme from a CTR-GCN file name: NTU60_CS.npz -> xsub, NTU60_CV -> xview, NTU120_CSet -> xset."""
    m = re.search(r"_([A-Za-z]+)$", Path(path).stem)
    return NPZ_SCHEMES.get(m.group(1).lower()) if m else None


def _open_npy_member(zf: zipfile.ZipFile, member: str, path):
    try:
        f = zf.open(member)
    except KeyError:
        raise SkelclError(f"{path}: no array {member.removesuffix('.npy')!r} in the archive") from None
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran:
        raise SkelclError(f"{path}: array {member!r} is Fortran-ordered; expected C order")
    return f, shape, dtype


def iter_npz(path, part: str):
    """Yield (row index, x (T, 150) float32, label int) of x_<part> / y_<part> from a CTR-GCN .npz,
    streaming the x array one row at a time (bounded memory whatever the file size)."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise SkelclError(f"{path}: not a readable .npz archive ({err})") from None
    with zf:
        with np.load(path, allow_pickle=False) as z:
            if f"y_{part}" not in z.files:
                raise SkelclError(f"{path}: no array 'y_{part}' (has {z.files})")
            y = np.asarray(z[f"y_{part}"])
        f, shape, dtype = _open_npy_member(zf, f"x_{part}.npy", path)
        with f:
            if len(shape) != 3 or shape[2] % (NUM_JOINTS * 3):
                raise SkelclError(f"{path}: x_{part} must be (N, T, M*75), got {shape}")
            if y.ndim == 2:
                labels = np.argmax(y, axis=1)
                if y.shape[0] and not np.all(y.sum(axis=1) == 1):
                    raise SkelclError(f"{path}: y_{part} rows must be one-hot")
            elif y.ndim == 1:
                labels = y.astype(np.int64)
            else:
                raise SkelclError(f"{path}: y_{part} must be one-hot (N, C) or (N,), got {y.shape}")
            if len(labels) != shape[0]:
                raise SkelclError(f"{path}: x_{part} has {shape[0]} rows, y_{part} {len(labels)}")
            row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
            for i in range(shape[0]):
                buf = f.read(row_bytes)
                if len(buf) != row_bytes:
                    raise SkelclError(f"{path}: x_{part} is truncated at row {i}")
                x = np.frombuffer(buf, dtype=dtype).reshape(shape[1:]).astype(np.float32)
                yield i, x, int(labels[i])


def npz_num_classes(path) -> int:
    with np.load(path, allow_pickle=False) as z:
        y = z["y_train"] if "y_train" in z.files else z[z.files[0]]
        return int(y.shape[1]) if y.ndim == 2 else int(y.max()) + 1


def npz_row_joints(x: np.ndarray) -> np.ndarray:
    """(T, M*75) row -> (T', M, 25, 3), T' = the last frame with a non-zero value + 1 (zero padding cut)."""
    nonzero = np.flatnonzero(np.any(x != 0, axis=1))
    length = int(nonzero[-1]) + 1 if len(nonzero) else 0
    return x[:length].reshape(length, -1, NUM_JOINTS, 3)


# -- pyskl pickle -----------------------------------------------------------------------------------------

_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("builtins", "slice"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: an annotation file cannot run code."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which an annotation file must not")
        return super().find_class(module, name)


def load_pyskl(path) -> dict:
    """Load a pyskl annotation pickle: {'split': {name: [frame_dir, ...]}, 'annotations': [dict, ...]}.

    The whole pickle is loaded (the format allows nothing else); memory is about the file's size.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _SafeUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise SkelclError(f"{path}: not a readable annotation pickle ({err})") from None
    if not isinstance(data, dict) or "annotations" not in data:
        raise SkelclError(f"{path}: expected a dict with 'split' and 'annotations'")
    if not isinstance(data["annotations"], list):
        raise SkelclError(f"{path}: 'annotations' must be a list")
    split = data.get("split", {})
    if not isinstance(split, dict):
        raise SkelclError(f"{path}: 'split' must be a dict of name lists")
    return data


def pyskl_split_parts(split: dict) -> dict[str, dict[str, str]]:
    """{'xsub_train': [...], 'xsub_val': [...], ...} -> {frame_dir: {scheme: part}}, val read as test."""
    parts: dict[str, dict[str, str]] = {}
    for key, names in split.items():
        m = re.fullmatch(r"(\w+?)_(train|val|test)", str(key))
        if m is None:
            continue
        scheme, part = m.group(1), "train" if m.group(2) == "train" else "test"
        if scheme not in SPLITS:
            continue
        for name in names:
            parts.setdefault(str(name), {})[scheme] = part
    return parts


def pyskl_annotation(ann, index: int, path) -> tuple[str, np.ndarray, int]:
    """(frame_dir, joints (T, M, 25, 3) float32, 0-based label) of one pyskl annotation dict."""
    if not isinstance(ann, dict):
        raise SkelclError(f"{path}: annotations[{index}] is not a dict")
    for key in ("frame_dir", "label", "keypoint"):
        if key not in ann:
            raise SkelclError(f"{path}: annotations[{index}] has no field {key!r}")
    kp = np.asarray(ann["keypoint"])
    if kp.ndim != 4 or kp.shape[2:] != (NUM_JOINTS, 3):
        raise SkelclError(f"{path}: annotations[{index}].keypoint must be (M, T, 25, 3), got {kp.shape}")
    total = ann.get("total_frames", kp.shape[1])
    if int(total) != kp.shape[1]:
        raise SkelclError(
            f"{path}: annotations[{index}] ({ann['frame_dir']}): total_frames {total} but keypoint has "
            f"{kp.shape[1]} frames"
        )
    return str(ann["frame_dir"]), kp.transpose(1, 0, 2, 3).astype(np.float32), int(ann["label"])
