"""Segment files: PKU-MMD style folders and JSON.

In Python, labels are always 0-based class indices (as in the cache, background last and never a segment).
Files carry their own convention:

Folder (PKU-MMD style): one text file NAME.txt per video (video name = file name without ".txt"; other files
    are ignored). Each non-blank line is `label,start,end[,score]`:
    label   integer class id, 1-BASED by default (label_base=1: PKU-MMD's ids 1..51 become 0..50 in Python);
    start, end  frame numbers (integers or decimals). A row with start > end is an error naming file and
            line; PKU-MMD v1's label files have a few such rows: swap_reversed=True (command line:
            --swap-reversed) reads them with the two swapped. skelcl writes half-open ranges, end = last
            frame + 1 (see skelcl.eval.detection for how each IoU mode reads them);
    score   confidence, default 1.0 (PKU-MMD ground-truth files put an annotation confidence level here; the
            score of ground truth is never used).
    An empty file is a video without actions: keep one for such videos in a ground-truth folder, since a
    video is evaluated only if the ground truth names it.
    PKU-MMD's own label files name the last frame of an action as its end (frames start..end); read them
    with inclusive_end=True (command line: --gt-inclusive-end) to get half-open Segments (end + 1).
    classes.json (optional, written by `skelcl predict`): {"format": "skelcl-classes", "label_base": 1,
    "classes": ["walk", ...]}: the action class names in 0-based order (background is not a class here),
    so the folder's id c names classes[c - label_base].
JSON: {"format": "skelcl-segments", "label_base": 0, "classes": ["walk", ...] (optional),
       "videos": {"NAME": [[label, start, end, score], ...], ...}}
    label_base (default 0 in JSON) says which number the first class has in the file; a segment may also be
    an object {"label": .., "start": .., "end": .., "score": ..}; score is optional.

Every reading error names the file and line (folder) or the file, video and segment index (JSON).
Odd rows (the readers' `odd` argument): a negative start (frames count from 0), and a zero-length segment
(start = end: half-open, it covers no frame; not odd with inclusive_end, or where allow_zero says the IoU
counts end as a frame). odd="keep" reads them as they are, "error" raises naming the row, a list collects
one message per row and reads them as they are.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from skelcl.eval.segments import EvalInputError, Segment

FORMAT = "skelcl-segments"
CLASSES_FILE = "classes.json"
CLASSES_FORMAT = "skelcl-classes"


def read_segments_dir(
    path,
    label_base: int = 1,
    *,
    num_classes: int | None = None,
    inclusive_end: bool = False,
    swap_reversed: bool = False,
    odd="keep",
    allow_zero: bool = False,
) -> dict[str, list[Segment]]:
    """Read a folder of NAME.txt files -> {NAME: [Segment, ...]} with 0-based labels.

    label_base: the id of the first class in the files (1 for PKU-MMD). With num_classes, a label outside
    the known classes is an error naming file and line. inclusive_end: the files give the last frame of a
    segment as its end (PKU-MMD's label files do); end + 1 is stored, so the Segments are half-open.
    swap_reversed: read a row with start > end with the two swapped instead of failing on it.
    odd, allow_zero: rows with a negative start or zero length (module docstring).
    """
    path = Path(path)
    if not path.is_dir():
        raise EvalInputError(f"{path}: not a folder")
    out = {}
    for file in sorted(path.glob("*.txt")):
        out[file.stem] = _read_txt(
            file, label_base, num_classes, swap_reversed, odd, allow_zero or inclusive_end
        )
    return _half_open(out) if inclusive_end else out


def write_segments_dir(
    path, segments: dict[str, list[Segment]], label_base: int = 1, classes=None
) -> list[str]:
    """Write {NAME: [Segment, ...]} as NAME.txt files (`label,start,end,score`, label + label_base) and,
    with `classes` (action class names, 0-based, no background), classes.json. Returns the file names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for name, segs in segments.items():
        _check_name(name)
        lines = [
            f"{int(s.label) + label_base},{_num(s.start)},{_num(s.end)},{float(s.score)!r}\n" for s in segs
        ]
        _write_atomic(path / f"{name}.txt", "".join(lines))
        written.append(f"{name}.txt")
    if classes is not None:
        doc = {"format": CLASSES_FORMAT, "label_base": int(label_base), "classes": [str(c) for c in classes]}
        _write_atomic(path / CLASSES_FILE, json.dumps(doc, indent=1) + "\n")
        written.append(CLASSES_FILE)
    return written


def read_folder_classes(path, label_base: int | None = None) -> list[str] | None:
    """Class names of a segment folder from its classes.json (None when there is none). With label_base,
    a classes.json written for another label base is an error (the ids would name the wrong classes)."""
    file = Path(path) / CLASSES_FILE
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvalInputError(f"{file}: not a readable JSON file ({err})") from None
    classes = doc.get("classes") if isinstance(doc, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise EvalInputError(f'{file}: expected {{"classes": [names ...], "label_base": N}}')
    base = doc.get("label_base", 1)
    if label_base is not None and base != label_base:
        raise EvalInputError(
            f"{file}: the files' class ids start at {base} (label_base), but they are read with label base "
            f"{label_base}; use --label-base {base}"
        )
    return classes


def read_segments_json(
    path, *, num_classes: int | None = None, inclusive_end: bool = False, swap_reversed: bool = False
) -> dict[str, list[Segment]]:
    """Read a skelcl-segments JSON file -> {NAME: [Segment, ...]} with 0-based labels.

    inclusive_end, swap_reversed: as in read_segments_dir.
    """
    return read_segments_json_with_classes(
        path, num_classes=num_classes, inclusive_end=inclusive_end, swap_reversed=swap_reversed
    )[0]


def read_segments_json_with_classes(
    path,
    *,
    num_classes: int | None = None,
    inclusive_end: bool = False,
    swap_reversed: bool = False,
    odd="keep",
    allow_zero: bool = False,
):
    """Like read_segments_json, also returning (class names or None, the file's label_base)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvalInputError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("videos"), dict):
        raise EvalInputError(f'{path}: expected an object with a "videos" mapping (format {FORMAT})')
    base = doc.get("label_base", 0)
    if not isinstance(base, int) or isinstance(base, bool):
        raise EvalInputError(f"{path}: label_base must be an integer, got {base!r}")
    classes = doc.get("classes")
    names_ok = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    if classes is not None and not names_ok:
        raise EvalInputError(f"{path}: classes must be a list of names")
    if num_classes is None and classes is not None:
        num_classes = len(classes)
    out = {}
    for name, segs in doc["videos"].items():
        if not isinstance(segs, list):
            raise EvalInputError(f"{path}: video {name!r}: expected a list of segments")
        out[name] = [
            _json_segment(
                path, name, k, x, base, num_classes, swap_reversed, odd, allow_zero or inclusive_end
            )
            for k, x in enumerate(segs)
        ]
    return (_half_open(out) if inclusive_end else out), classes, base


def write_segments_json(path, segments: dict[str, list[Segment]], classes=None) -> None:
    """Write {NAME: [Segment, ...]} as skelcl-segments JSON (label_base 0; optional class names)."""
    doc = {"format": FORMAT, "label_base": 0}
    if classes is not None:
        doc["classes"] = [str(c) for c in classes]
    doc["videos"] = {
        name: [[int(s.label), _jnum(s.start), _jnum(s.end), float(s.score)] for s in segs]
        for name, segs in segments.items()
    }
    _write_atomic(Path(path), json.dumps(doc) + "\n")


def read_segments(
    path,
    label_base: int = 1,
    *,
    num_classes: int | None = None,
    inclusive_end: bool = False,
    swap_reversed: bool = False,
    odd="keep",
    allow_zero: bool = False,
):
    """A folder or a .json file -> (segments, class names or None, label_base of the file). A folder's
    class names come from its classes.json. odd, allow_zero: rows with a negative start or zero length
    (module docstring)."""
    path = Path(path)
    if path.is_dir():
        names = read_folder_classes(path, label_base)
        if num_classes is None and names is not None:
            num_classes = len(names)
        segs = read_segments_dir(path, label_base, num_classes=num_classes, inclusive_end=inclusive_end,
                                 swap_reversed=swap_reversed, odd=odd, allow_zero=allow_zero)  # fmt: skip
        return segs, names, label_base
    if path.suffix.lower() == ".json":
        return read_segments_json_with_classes(path, num_classes=num_classes, inclusive_end=inclusive_end,
                                               swap_reversed=swap_reversed, odd=odd,
                                               allow_zero=allow_zero)  # fmt: skip
    if not path.exists():
        raise EvalInputError(f"{path}: no such file or folder")
    raise EvalInputError(f"{path}: expected a folder of NAME.txt files or a .json file")


MANIFEST_FILE = "predict.json"


def files_to_replace(path, overwrite: bool, flag: str = "--out") -> list[Path]:
    """Check that folder `path` may take a new set of segment files and return the files to delete first.

    A missing or empty folder is fine. A folder holding anything is refused unless `overwrite`; then only
    the files a previous `skelcl predict` listed in its predict.json (and that manifest) are deleted, and a
    NAME.txt it did not write is refused (evaluate would read it as a video). Other files are kept.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EvalInputError(f"{flag} {path}: is a file, not a folder")
    present = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if not present:
        return []
    if not overwrite:
        shown = ", ".join(present[:3]) + (" ..." if len(present) > 3 else "")
        raise EvalInputError(
            f"{flag} {path}: the folder is not empty ({len(present)} entries: {shown}); choose a new folder, "
            "or add --overwrite to replace the files of an earlier `skelcl predict` there"
        )
    ours = set()
    manifest = path / MANIFEST_FILE
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text())
            listed = doc["files"]
            if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
                raise TypeError
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise EvalInputError(f"{manifest}: not a predict.json written by skelcl predict") from None
        ours = {f for f in listed if "/" not in f and "\\" not in f and f not in ("", ".", "..")}
        ours.add(MANIFEST_FILE)
    foreign = [n for n in present if n.endswith(".txt") and n not in ours]
    if foreign:
        more = f" and {len(foreign) - 1} more .txt files" if len(foreign) > 1 else ""
        raise EvalInputError(
            f"{flag} {path}: holds {foreign[0]}{more} that skelcl predict did not write (evaluate would read "
            "them as videos); remove them or choose a new folder"
        )
    return [path / n for n in present if n in ours]


def write_manifest(path, files, info: dict) -> None:
    """predict.json in folder `path`: `info` plus the list of files written there (see files_to_replace)."""
    _write_atomic(Path(path) / MANIFEST_FILE, json.dumps({**info, "files": list(files)}, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------


def _read_txt(
    file: Path, label_base, num_classes, swap_reversed, odd="keep", allow_zero=True
) -> list[Segment]:
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise EvalInputError(f"{file}: cannot read ({err})") from None
    segs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        where = f"{file}:{lineno}"
        if len(fields) not in (3, 4):
            raise EvalInputError(f"{where}: expected 'label,start,end[,score]', got {line.strip()!r}")
        try:
            label = int(fields[0])
            start, end = float(fields[1]), float(fields[2])
            score = float(fields[3]) if len(fields) == 4 else 1.0
        except ValueError:
            raise EvalInputError(
                f"{where}: expected 'label,start,end[,score]' with an integer label and numbers, "
                f"got {line.strip()!r}"
            ) from None
        segs.append(
            _make(where, label, start, end, score, label_base, num_classes, swap_reversed, odd, allow_zero)
        )
    return segs


def _json_segment(
    path, name, k, item, base, num_classes, swap_reversed, odd="keep", allow_zero=True
) -> Segment:
    where = f"{path}: video {name!r}, segment {k}"
    if isinstance(item, dict):
        if not {"label", "start", "end"} <= set(item):
            raise EvalInputError(f"{where}: needs label, start and end, got {item!r}")
        values = [item["label"], item["start"], item["end"], item.get("score", 1.0)]
    elif isinstance(item, list) and len(item) in (3, 4):
        values = list(item) + ([1.0] if len(item) == 3 else [])
    else:
        raise EvalInputError(f"{where}: expected [label, start, end, score] or an object, got {item!r}")
    label = values[0]
    numbers = values[1:]
    if isinstance(label, bool) or not isinstance(label, int):
        raise EvalInputError(f"{where}: label must be an integer, got {label!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise EvalInputError(f"{where}: start, end and score must be numbers, got {item!r}")
    start, end, score = (float(v) for v in numbers)
    return _make(where, label, start, end, score, base, num_classes, swap_reversed, odd, allow_zero)


def _make(
    where, label, start, end, score, base, num_classes, swap_reversed=False, odd="keep", allow_zero=True
) -> Segment:
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(score)):
        raise EvalInputError(f"{where}: start, end and score must be finite numbers")
    label0 = label - base
    if label0 < 0 or (num_classes is not None and label0 >= num_classes):
        known = f"{base}..{base + num_classes - 1}" if num_classes is not None else f">= {base}"
        hint = "; 0-based ids need label base 0 (--label-base 0)" if label == 0 and base == 1 else ""
        raise EvalInputError(f"{where}: unknown class {label} (class ids in this file: {known}){hint}")
    if start > end:
        if not swap_reversed:
            raise EvalInputError(
                f"{where}: start {_num(start)} is after end {_num(end)} (--swap-reversed reads such rows "
                "with the two swapped, as PKU-MMD v1 label files need)"
            )
        start, end = end, start
    problem = None
    if start < 0:
        problem = f"start {_num(start)} is negative (frames count from 0)"
    elif start == end and not allow_zero:
        problem = (
            f"zero-length segment (start = end = {_num(start)}): half-open, it covers no frame (if the file "
            "names the last frame as end, read it with --gt-inclusive-end / --pred-inclusive-end)"
        )
    if problem and odd == "error":
        raise EvalInputError(f"{where}: {problem}")
    if problem and isinstance(odd, list):
        odd.append(f"{where}: {problem}")
    return Segment(label0, start, end, score)


def _half_open(segments: dict) -> dict:
    return {name: [replace(s, end=s.end + 1) for s in segs] for name, segs in segments.items()}


def _num(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _jnum(x):
    x = float(x)
    return int(x) if x.is_integer() else x


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise EvalInputError(f"video name {name!r} cannot be a file name")


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and os.replace, with the mode open() would give (0666 minus the umask,
    typically 0644; mkstemp alone makes 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(f.fileno(), 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
