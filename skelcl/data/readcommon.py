"""Shared pieces of the dataset readers: a fast numeric tokenizer, body selection and the prepare report.

The tokenizer reads a whole text file of whitespace-separated numbers in one compiled pass over its bytes
(numba), converting each token as it is scanned. A decimal
token with at most 15 significant digits and a decimal exponent within +-22 is converted exactly (one
correctly rounded IEEE operation: integer mantissa times or divided by an exact power of ten), which covers
every number in NTU and PKU-MMD files; longer tokens are converted to within a few ulp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from skelcl.errors import SkelclError

_POW10 = np.array([10.0**k for k in range(23)])


@numba.njit(cache=True, inline="always")
def _is_sep(c):
    return c == 32 or c == 10 or c == 9 or c == 13 or c == 11 or c == 12


@numba.njit(cache=True)
def _tokenize(buf, max_tok, max_lines, pow10):
    """One pass over the bytes: parse every token [+-]digits[.digits][(e|E)[+-]digits] as it is scanned.

    Returns values, per non-empty line (token count, byte offset of the first token, 1-based line number),
    the number of tokens and lines found, and the byte offset of the first bad token (-1 if none).
    """
    values = np.empty(max_tok, dtype=np.float64)
    line_ntok = np.zeros(max_lines, dtype=np.int32)
    line_start = np.zeros(max_lines, dtype=np.int64)
    line_no = np.zeros(max_lines, dtype=np.int64)
    k = 0
    li = -1
    phys = 1
    line_open = False
    i = 0
    n = buf.shape[0]
    while i < n:
        c = buf[i]
        if c == 10:
            phys += 1
            line_open = False
            i += 1
            continue
        if _is_sep(c):
            i += 1
            continue
        start = i
        if not line_open:
            li += 1
            line_open = True
            line_start[li] = start
            line_no[li] = phys
        neg = False
        if c == 43 or c == 45:  # + -
            neg = c == 45
            i += 1
        mant = 0
        ndig = 0
        exp10 = 0
        any_digit = False
        while i < n:
            d = np.int64(buf[i]) - 48
            if d < 0 or d > 9:
                break
            any_digit = True
            if mant != 0 or d != 0:
                if ndig < 18:
                    mant = mant * 10 + d
                    ndig += 1
                else:
                    exp10 += 1
            i += 1
        if i < n and buf[i] == 46:  # .
            i += 1
            while i < n:
                d = np.int64(buf[i]) - 48
                if d < 0 or d > 9:
                    break
                any_digit = True
                if mant == 0 and d == 0:
                    exp10 -= 1
                elif ndig < 18:
                    mant = mant * 10 + d
                    ndig += 1
                    exp10 -= 1
                i += 1
        if not any_digit:
            return values, line_ntok, line_start, line_no, k, li + 1, start
        if i < n and (buf[i] == 101 or buf[i] == 69):  # e E
            i += 1
            eneg = False
            if i < n and (buf[i] == 43 or buf[i] == 45):
                eneg = buf[i] == 45
                i += 1
            e = 0
            e_digits = 0
            while i < n:
                d = np.int64(buf[i]) - 48
                if d < 0 or d > 9:
                    break
                if e < 100000:
                    e = e * 10 + d
                e_digits += 1
                i += 1
            if e_digits == 0:
                return values, line_ntok, line_start, line_no, k, li + 1, start
            exp10 += -e if eneg else e
        if i < n and not _is_sep(buf[i]):
            return values, line_ntok, line_start, line_no, k, li + 1, start
        if mant == 0:
            v = 0.0
        elif 0 <= exp10 <= 22:
            v = float(mant) * pow10[exp10]
        elif -22 <= exp10 < 0:
            v = float(mant) / pow10[-exp10]
        else:
            v = float(mant) * 10.0**exp10
        values[k] = -v if neg else v
        k += 1
        line_ntok[li] += 1
    return values, line_ntok, line_start, line_no, k, li + 1, -1


@dataclass
class Numbers:
    """The numbers of a text file: values (float64, all tokens in order), per non-empty line its token
    count (line_ntok), the byte offset of its first token (line_start), its 1-based line number in the file
    (line_no) and the index of its first value (line_offset)."""

    values: np.ndarray
    line_ntok: np.ndarray
    line_start: np.ndarray
    line_no: np.ndarray
    line_offset: np.ndarray


def read_numbers(path, raw: bytes | None = None) -> Numbers:
    """Tokenize a text file of whitespace-separated numbers; a token that is not a number raises a
    SkelclError naming the file, line and token."""
    if raw is None:
        raw = Path(path).read_bytes()
    buf = np.frombuffer(raw, dtype=np.uint8)
    max_tok = (len(raw) + 1) // 2
    max_lines = raw.count(b"\n") + 1
    values, line_ntok, line_start, line_no, n_tok, n_lines, bad = _tokenize(buf, max_tok, max_lines, _POW10)
    if bad >= 0:
        line = raw.count(b"\n", 0, bad) + 1
        token = raw[bad:].split(None, 1)[0][:40].decode("utf-8", "replace")
        raise SkelclError(f"{path}:{line}: {token!r} is not a number")
    values, line_ntok = values[:n_tok], line_ntok[:n_lines]
    line_start, line_no = line_start[:n_lines], line_no[:n_lines]
    offset = np.zeros(n_lines, dtype=np.int64)
    if n_lines:
        offset[1:] = np.cumsum(line_ntok[:-1], dtype=np.int64)
    return Numbers(values, line_ntok, line_start, line_no, offset)


def body_activity(joints: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Activity of each body: the summed variance over time of its 75 coordinates, over the frames where
    it is present. joints (T, B, 25, 3), present (T, B) bool -> (B,) float64 (0 for a body seen < 2 times)."""
    x = joints.reshape(joints.shape[0], joints.shape[1], -1).astype(np.float64)
    w = present.astype(np.float64)[:, :, None]
    n = w.sum(axis=0)  # (B, 1)
    mean = (x * w).sum(axis=0) / np.maximum(n, 1)
    var = (((x - mean) ** 2) * w).sum(axis=0) / np.maximum(n, 1)
    act = var.sum(axis=1)
    act[n[:, 0] < 2] = 0.0
    return act


def select_bodies(joints: np.ndarray, present: np.ndarray, keep: int = 2) -> np.ndarray:
    """Indices of the `keep` most active bodies (body_activity, descending; ties: the earlier index first)."""
    act = body_activity(joints, present)
    order = sorted(range(len(act)), key=lambda b: (-act[b], b))
    return np.asarray(order[:keep], dtype=np.int64)


def empty_frames(joints: np.ndarray) -> np.ndarray:
    """(T,) bool: frames where every joint of every body is exactly zero."""
    return ~np.any(joints.reshape(len(joints), -1) != 0, axis=1)


@dataclass
class Report:
    """What a reader did: sequences written, dropped (by reason, with names), bad files, repairs, counts."""

    reader: str
    source: str
    written: int = 0
    frames: int = 0
    frames_repaired: int = 0
    dropped: dict = field(default_factory=dict)
    bad_files: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    max_listed: int = 2000

    def drop(self, name: str, reason: str) -> None:
        entry = self.dropped.setdefault(reason, {"count": 0, "names": []})
        entry["count"] += 1
        if len(entry["names"]) < self.max_listed:
            entry["names"].append(str(name))

    def bad(self, path, error) -> None:
        self.bad_files.append({"file": str(path), "error": str(error)})

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def to_dict(self) -> dict:
        return {
            "reader": self.reader,
            "source": self.source,
            "written": self.written,
            "frames": self.frames,
            "frames_repaired": self.frames_repaired,
            "dropped": self.dropped,
            "bad_files": self.bad_files,
            "counts": self.counts,
        }

    def summary(self) -> str:
        lines = [f"{self.reader}: wrote {self.written} sequences ({self.frames} frames) from {self.source}"]
        lines.append(f"  frames repaired (empty frames filled): {self.frames_repaired}")
        for reason, entry in sorted(self.dropped.items()):
            shown = ", ".join(entry["names"][:5]) + (" ..." if entry["count"] > 5 else "")
            lines.append(f"  dropped ({reason}): {entry['count']}  [{shown}]")
        if self.bad_files:
            lines.append(f"  bad files skipped: {len(self.bad_files)}")
            for item in self.bad_files[:10]:
                lines.append(f"    {item['error']}")
        for key, value in sorted(self.counts.items()):
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)
