"""The skeleton cache: one memory-mapped frame array plus an index.

A cache is a directory:

    meta.json     format, version, dtype, shapes, class names, split schemes, attribute names, source notes
    frames.bin    raw little-endian array (num_frames, max_bodies, 25, 3) of float16 or float32, C order
    labels.bin    raw int16 array (num_frames,): per-frame class index, -1 where unlabeled
    index.npz     per sequence: names (str), offsets (int64), lengths (int64), bodies (int8),
                  split_<scheme> (int8, index into that scheme's parts, -1 = in none), attr_<name> (int64)

Sequence i occupies frames offsets[i] : offsets[i] + lengths[i]. Loading it is a slice of the memory map.

Writing streams: `CacheWriter.add` appends one sequence to the open frame and label files, so memory stays
bounded by one sequence. Everything is written into a hidden sibling directory and moved into place with a
rename only after `meta.json` (written last, with the byte sizes of the data files) is complete; a crash
leaves at most a stray `.NAME.partial-*` directory, never a cache that opens as valid.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skelcl.data.skeleton import NUM_JOINTS
from skelcl.errors import SkelclError

FORMAT = "skelcl-cache"
VERSION = 1
FRAME_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class Sequence:
    """One sequence read from a cache.

    joints: float32 (T, M, 25, 3), M = the cache's max_bodies (absent bodies are zeros).
    labels: int64 (T,), class index per frame, -1 where unlabeled.
    bodies: how many of the M body slots hold a skeleton.
    """

    name: str
    joints: np.ndarray
    labels: np.ndarray
    bodies: int
    index: int


class CacheWriter:
    """Streams sequences into a new cache directory; use as a context manager.

    >>> with CacheWriter(out, classes=["walk", "background"]) as w:
    ...     w.add("seq0", joints, labels, split={"xsub": "train"}, attrs={"subject": 3})

    The cache appears at `path` only when the `with` block finishes without an exception. An existing
    cache at `path` is replaced only if `overwrite=True`.
    """

    def __init__(
        self,
        path,
        classes,
        *,
        dtype: str = "float32",
        max_bodies: int = 2,
        splits: dict[str, list[str]] | None = None,
        attrs: list[str] | tuple[str, ...] = (),
        fps: float = 30.0,
        source: dict | None = None,
        overwrite: bool = False,
    ):
        if dtype not in FRAME_DTYPES:
            raise SkelclError(f"cache dtype must be one of {FRAME_DTYPES}, got {dtype!r}")
        if max_bodies < 1:
            raise SkelclError(f"max_bodies must be >= 1, got {max_bodies}")
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise SkelclError(f"class names must be unique, got {classes}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise SkelclError(f"{self.path}: already exists (pass overwrite to replace it)")
        self.classes = classes
        self.dtype = np.dtype(dtype)
        self.max_bodies = int(max_bodies)
        self.splits = {k: list(v) for k, v in (splits or {}).items()}
        self.attrs = list(attrs)
        self.fps = float(fps)
        self.source = dict(source or {})
        self.overwrite = overwrite
        self._names: list[str] = []
        self._names_seen: set[str] = set()
        self._lengths: list[int] = []
        self._bodies: list[int] = []
        self._split_values = {k: [] for k in self.splits}
        self._attr_values = {k: [] for k in self.attrs}
        self._num_frames = 0
        self._tmp: Path | None = None
        self._frames_file = None
        self._labels_file = None

    def __enter__(self) -> CacheWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        self._frames_file = open(self._tmp / "frames.bin", "wb")
        self._labels_file = open(self._tmp / "labels.bin", "wb")
        return self

    def add(self, name: str, joints, labels=None, *, split: dict[str, str] | None = None, attrs=None) -> None:
        """Append one sequence. joints (T, M', 25, 3) with M' <= max_bodies (or (T, 25, 3) for one body);
        labels (T,) ints in [-1, num_classes) or None (all unlabeled)."""
        if self._frames_file is None:
            raise RuntimeError("CacheWriter.add called outside its `with` block")
        name = str(name)
        if name in self._names_seen:
            raise SkelclError(f"sequence {name!r}: duplicate name")
        joints = np.asarray(joints)
        if joints.ndim == 3:
            joints = joints[:, None]
        if joints.ndim != 4 or joints.shape[2:] != (NUM_JOINTS, 3):
            raise SkelclError(
                f"sequence {name!r}: joints must be (T, M, {NUM_JOINTS}, 3), got {joints.shape}"
            )
        length, bodies = joints.shape[:2]
        if length < 1:
            raise SkelclError(f"sequence {name!r}: has no frames")
        if bodies > self.max_bodies:
            raise SkelclError(
                f"sequence {name!r}: {bodies} bodies, the cache holds at most {self.max_bodies}"
            )
        if not np.isfinite(joints).all():
            raise SkelclError(f"sequence {name!r}: joints contain NaN or inf")
        if labels is None:
            labels = np.full(length, -1, dtype=np.int16)
        labels = np.asarray(labels)
        if labels.shape != (length,):
            raise SkelclError(f"sequence {name!r}: labels must be ({length},), got {labels.shape}")
        if labels.size and (labels.min() < -1 or labels.max() >= len(self.classes)):
            raise SkelclError(
                f"sequence {name!r}: label values must lie in [-1, {len(self.classes) - 1}], "
                f"got [{labels.min()}, {labels.max()}]"
            )
        split = split or {}
        for scheme in split:
            if scheme not in self.splits:
                raise SkelclError(f"sequence {name!r}: unknown split scheme {scheme!r}")
        split_codes = {}
        for scheme, parts in self.splits.items():
            part = split.get(scheme)
            if part is not None and part not in parts:
                raise SkelclError(f"sequence {name!r}: split {scheme!r} has parts {parts}, got {part!r}")
            split_codes[scheme] = -1 if part is None else parts.index(part)
        attrs = attrs or {}
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise SkelclError(f"sequence {name!r}: unknown attributes {sorted(unknown)}")

        padded = np.zeros((length, self.max_bodies, NUM_JOINTS, 3), dtype=self.dtype)
        padded[:, :bodies] = joints
        padded.tofile(self._frames_file)
        labels.astype("<i2").tofile(self._labels_file)
        self._names.append(name)
        self._names_seen.add(name)
        self._lengths.append(int(length))
        self._bodies.append(int(bodies))
        for scheme, code in split_codes.items():
            self._split_values[scheme].append(code)
        for key in self.attrs:
            self._attr_values[key].append(int(attrs.get(key, -1)))
        self._num_frames += int(length)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._frames_file.close()
        self._labels_file.close()
        self._frames_file = self._labels_file = None
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        try:
            self._finish()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def _finish(self) -> None:
        tmp = self._tmp
        lengths = np.asarray(self._lengths, dtype=np.int64)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths):
            offsets[1:] = np.cumsum(lengths)[:-1]
        arrays = {
            "names": np.asarray(self._names, dtype=np.str_),
            "offsets": offsets,
            "lengths": lengths,
            "bodies": np.asarray(self._bodies, dtype=np.int8),
        }
        for scheme, codes in self._split_values.items():
            arrays[f"split_{scheme}"] = np.asarray(codes, dtype=np.int8)
        for key, values in self._attr_values.items():
            arrays[f"attr_{key}"] = np.asarray(values, dtype=np.int64)
        with open(tmp / "index.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        for data_file in ("frames.bin", "labels.bin"):
            with open(tmp / data_file, "rb+") as f:
                os.fsync(f.fileno())
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": self.dtype.name,
            "num_sequences": len(self._names),
            "num_frames": self._num_frames,
            "max_bodies": self.max_bodies,
            "num_joints": NUM_JOINTS,
            "fps": self.fps,
            "classes": self.classes,
            "splits": self.splits,
            "attrs": self.attrs,
            "source": self.source,
            "bytes": {
                "frames.bin": (tmp / "frames.bin").stat().st_size,
                "labels.bin": (tmp / "labels.bin").stat().st_size,
                "index.npz": (tmp / "index.npz").stat().st_size,
            },
        }
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        # Move into place. An old cache is first renamed aside, so a crash in between leaves either the
        # old cache, or nothing at `path` plus the complete new one in the partial directory.
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
        os.replace(tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


class Cache:
    """A read-only view of a cache directory (or of a subset of its sequences).

    len(ds); ds[i] -> Sequence; ds.classes (background last); ds.names, ds.lengths, ds.offsets, ds.bodies;
    ds.frames (memory map, (F, M, 25, 3)) and ds.frame_labels ((F,) int16) for vectorized access;
    ds.split(scheme, part) -> indices; ds.subset(indices) -> Cache; ds.attr(name) -> (len(ds),) int64.
    """

    def __init__(
        self, path, meta: dict, index: dict, frames: np.ndarray, frame_labels: np.ndarray, rows=None
    ):
        self.path = Path(path)
        self.meta = meta
        self._index = index
        self.frames = frames
        self.frame_labels = frame_labels
        self._rows = np.arange(meta["num_sequences"]) if rows is None else np.asarray(rows, dtype=np.int64)

    # -- sizes and columns ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def num_classes(self) -> int:
        """Number of classes including background (the last one)."""
        return len(self.meta["classes"])

    @property
    def max_bodies(self) -> int:
        return int(self.meta["max_bodies"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def names(self) -> np.ndarray:
        return self._index["names"][self._rows]

    @property
    def lengths(self) -> np.ndarray:
        return self._index["lengths"][self._rows]

    @property
    def offsets(self) -> np.ndarray:
        return self._index["offsets"][self._rows]

    @property
    def bodies(self) -> np.ndarray:
        return self._index["bodies"][self._rows]

    @property
    def split_schemes(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.meta["splits"].items()}

    def attr(self, name: str) -> np.ndarray:
        key = f"attr_{name}"
        if key not in self._index:
            raise SkelclError(f"{self.path}: no attribute {name!r} (has {self.meta['attrs']})")
        return self._index[key][self._rows]

    def split(self, scheme: str, part: str) -> np.ndarray:
        """Positions (into this view) of the sequences in `part` of split `scheme`."""
        parts = self.meta["splits"].get(scheme)
        if parts is None:
            raise SkelclError(f"{self.path}: no split scheme {scheme!r} (has {list(self.meta['splits'])})")
        if part not in parts:
            raise SkelclError(f"{self.path}: split {scheme!r} has parts {parts}, not {part!r}")
        codes = self._index[f"split_{scheme}"][self._rows]
        return np.flatnonzero(codes == parts.index(part))

    def subset(self, positions) -> Cache:
        """A view holding the sequences at `positions` of this view, in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        return Cache(self.path, self.meta, self._index, self.frames, self.frame_labels, self._rows[positions])

    # -- sequences --------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> Sequence:
        n = len(self._rows)
        if not -n <= i < n:
            raise IndexError(f"sequence index {i} out of range for {n} sequences")
        row = int(self._rows[i])
        start = int(self._index["offsets"][row])
        stop = start + int(self._index["lengths"][row])
        return Sequence(
            name=str(self._index["names"][row]),
            joints=np.asarray(self.frames[start:stop], dtype=np.float32),
            labels=self.frame_labels[start:stop].astype(np.int64),
            bodies=int(self._index["bodies"][row]),
            index=row,
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, sequences={len(self)}, frames={int(self.lengths.sum())})"


def open_cache(path) -> Cache:
    """Open a cache directory written by CacheWriter; a missing or damaged cache raises SkelclError."""
    path = Path(path)
    if not path.exists():
        raise SkelclError(f"{path}: no such cache directory")
    if not path.is_dir():
        raise SkelclError(f"{path}: not a directory (a cache is a directory with meta.json)")
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise SkelclError(f"{meta_path}: missing; {path} is not a complete skelcl cache")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SkelclError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SkelclError(f"{meta_path}: not a skelcl cache (field 'format' is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise SkelclError(f"{meta_path}: cache version {meta.get('version')!r}, this skelcl reads {VERSION}")
    required = ("dtype", "num_sequences", "num_frames", "max_bodies", "classes", "splits", "attrs", "bytes")
    for field in required:
        if field not in meta:
            raise SkelclError(f"{meta_path}: field {field!r} is missing")
    if meta["dtype"] not in FRAME_DTYPES:
        raise SkelclError(f"{meta_path}: field 'dtype' is {meta['dtype']!r}, expected one of {FRAME_DTYPES}")
    for name, size in meta["bytes"].items():
        f = path / name
        if not f.exists():
            raise SkelclError(f"{f}: missing")
        if f.stat().st_size != size:
            raise SkelclError(
                f"{f}: {f.stat().st_size} bytes, meta.json records {size}; the cache is damaged"
            )
    num_frames = int(meta["num_frames"])
    frame_shape = (num_frames, int(meta["max_bodies"]), NUM_JOINTS, 3)
    expected = int(np.prod(frame_shape)) * np.dtype(meta["dtype"]).itemsize
    if meta["bytes"].get("frames.bin") != expected or meta["bytes"].get("labels.bin") != 2 * num_frames:
        raise SkelclError(
            f"{meta_path}: byte sizes do not match num_frames={num_frames}; the cache is damaged"
        )
    try:
        with np.load(path / "index.npz", allow_pickle=False) as z:
            index = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any unreadable index is reported the same way
        raise SkelclError(f"{path / 'index.npz'}: cannot be read ({err})") from None
    n = int(meta["num_sequences"])
    for key in ("names", "offsets", "lengths", "bodies"):
        if key not in index or len(index[key]) != n:
            raise SkelclError(f"{path / 'index.npz'}: field {key!r} missing or not {n} long")
    if n and int(index["offsets"][-1] + index["lengths"][-1]) != num_frames:
        raise SkelclError(f"{path / 'index.npz'}: offsets and lengths do not add up to {num_frames} frames")
    if num_frames:
        frames = np.memmap(path / "frames.bin", dtype=meta["dtype"], mode="r", shape=frame_shape)
        labels = np.memmap(path / "labels.bin", dtype="<i2", mode="r", shape=(num_frames,))
    else:
        frames = np.zeros(frame_shape, dtype=meta["dtype"])
        labels = np.zeros((0,), dtype="<i2")
    return Cache(path, meta, index, frames, labels)
