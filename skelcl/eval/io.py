"""Segment files: PKU-MMD style folders and JSON.

In Python, labels are always 0-based class indices (as in the cache, background last and never a segment).
Files carry their own convention:

Folder (PKU-MMD style): one text file NAME.txt per video (video name = file name without ".txt"; other files
    are ignored). Each non-blank line is `label,start,end[,score]`:
    label   integer class id, 1-BASED by default (label_base=1: PKU-MMD's ids 1..51 become 0..50 in Python);
    start, end  frame numbers (integers or decimals); a row with start > end (PKU-MMD v1 has a few) is read
            with the two swapped. skelcl writes half-open ranges, end = last frame + 1 (see
            skelcl.eval.detection for how each IoU mode reads them);
    score   confidence, default 1.0 (PKU-MMD ground-truth files put an annotation confidence level here; the
            score of ground truth is never used).
    An empty file is a video without actions: keep one for such videos in a ground-truth folder, since a
    video is evaluated only if the ground truth names it.
    PKU-MMD's own label files name the last frame of an action as its end (frames start..end); read them
    with inclusive_end=True (command line: --gt-inclusive-end) to get half-open Segments (end + 1).
JSON: {"format": "skelcl-segments", "label_base": 0, "classes": ["walk", ...] (optional),
       "videos": {"NAME": [[label, start, end, score], ...], ...}}
    label_base (default 0 in JSON) says which number the first class has in the file; a segment may also be
    an object {"label": .., "start": .., "end": .., "score": ..}; score is optional.

Every reading error names the file and line (folder) or the file, video and segment index (JSON).
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


def read_segments_dir(
    path, label_base: int = 1, *, num_classes: int | None = None, inclusive_end: bool = False
) -> dict[str, list[Segment]]:
    """Read a folder of NAME.txt files -> {NAME: [Segment, ...]} with 0-based labels.

    label_base: the id of the first class in the files (1 for PKU-MMD). With num_classes, a label outside
    the known classes is an error naming file and line. inclusive_end: the files give the last frame of a
    segment as its end (PKU-MMD's label files do); end + 1 is stored, so the Segments are half-open.
    """
    path = Path(path)
    if not path.is_dir():
        raise EvalInputError(f"{path}: not a folder")
    out = {}
    for file in sorted(path.glob("*.txt")):
        out[file.stem] = _read_txt(file, label_base, num_classes)
    return _half_open(out) if inclusive_end else out


def write_segments_dir(path, segments: dict[str, list[Segment]], label_base: int = 1) -> None:
    """Write {NAME: [Segment, ...]} as NAME.txt files (`label,start,end,score`, label + label_base)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, segs in segments.items():
        _check_name(name)
        lines = [
            f"{int(s.label) + label_base},{_num(s.start)},{_num(s.end)},{float(s.score)!r}\n" for s in segs
        ]
        _write_atomic(path / f"{name}.txt", "".join(lines))


def read_segments_json(
    path, *, num_classes: int | None = None, inclusive_end: bool = False
) -> dict[str, list[Segment]]:
    """Read a skelcl-segments JSON file -> {NAME: [Segment, ...]} with 0-based labels.

    inclusive_end: as in read_segments_dir.
    """
    return read_segments_json_with_classes(path, num_classes=num_classes, inclusive_end=inclusive_end)[0]


def read_segments_json_with_classes(path, *, num_classes: int | None = None, inclusive_end: bool = False):
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
        out[name] = [_json_segment(path, name, k, item, base, num_classes) for k, item in enumerate(segs)]
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


def read_segments(path, label_base: int = 1, *, num_classes: int | None = None, inclusive_end: bool = False):
    """A folder or a .json file -> (segments, class names or None, label_base of the file)."""
    path = Path(path)
    if path.is_dir():
        segs = read_segments_dir(path, label_base, num_classes=num_classes, inclusive_end=inclusive_end)
        return segs, None, label_base
    if path.suffix.lower() == ".json":
        return read_segments_json_with_classes(path, num_classes=num_classes, inclusive_end=inclusive_end)
    if not path.exists():
        raise EvalInputError(f"{path}: no such file or folder")
    raise EvalInputError(f"{path}: expected a folder of NAME.txt files or a .json file")


# ----------------------------------------------------------------------------------------------------


def _read_txt(file: Path, label_base: int, num_classes: int | None) -> list[Segment]:
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
        segs.append(_make(where, label, start, end, score, label_base, num_classes))
    return segs


def _json_segment(path, name, k, item, base, num_classes) -> Segment:
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
    return _make(where, label, float(numbers[0]), float(numbers[1]), float(numbers[2]), base, num_classes)


def _make(where, label, start, end, score, base, num_classes) -> Segment:
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(score)):
        raise EvalInputError(f"{where}: start, end and score must be finite numbers")
    label0 = label - base
    if label0 < 0 or (num_classes is not None and label0 >= num_classes):
        known = f"{base}..{base + num_classes - 1}" if num_classes is not None else f">= {base}"
        raise EvalInputError(f"{where}: unknown class {label} (class ids in this file: {known})")
    if start > end:
        start, end = end, start
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
