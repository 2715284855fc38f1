"""The cache: round trip, subsets and splits, atomic writes, damage detection."""

import json

import numpy as np
import pytest

from skelcl.data import CacheWriter, open_cache
from skelcl.data.cache import Cache
from skelcl.errors import SkelclError

CLASSES = ["a", "b", "background"]


def _random_sequences(rng, n=7):
    seqs = []
    for i in range(n):
        T = int(rng.integers(1, 40))
        M = int(rng.integers(1, 3))
        joints = rng.normal(size=(T, M, 25, 3)).astype(np.float32)
        labels = rng.integers(-1, len(CLASSES), size=T)
        seqs.append((f"seq{i}", joints, labels))
    return seqs


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    seqs = _random_sequences(rng)
    with CacheWriter(tmp_path / "c", CLASSES, dtype=dtype, splits={"xsub": ["train", "test"]},
                     attrs=["subject"]) as w:  # fmt: skip
        for i, (name, joints, labels) in enumerate(seqs):
            w.add(
                name, joints, labels, split={"xsub": "train" if i % 2 else "test"}, attrs={"subject": 10 + i}
            )
    ds = open_cache(tmp_path / "c")
    assert isinstance(ds, Cache) and len(ds) == len(seqs)
    assert ds.classes == CLASSES
    tol = 0 if dtype == "float32" else 2e-3
    for i, (name, joints, labels) in enumerate(seqs):
        s = ds[i]
        assert s.name == name
        assert s.joints.dtype == np.float32 and s.joints.shape == (len(labels), 2, 25, 3)
        assert s.labels.dtype == np.int64
        M = joints.shape[1]
        np.testing.assert_allclose(s.joints[:, :M], joints, atol=tol * 8, rtol=tol)
        assert (s.joints[:, M:] == 0).all()
        np.testing.assert_array_equal(s.labels, labels)
        assert s.bodies == M
    assert list(ds.split("xsub", "train")) == [1, 3, 5]
    assert list(ds.attr("subject")) == [10 + i for i in range(len(seqs))]
    sub = ds.subset([4, 0])
    assert list(sub.names) == ["seq4", "seq0"]
    np.testing.assert_array_equal(sub[0].labels, seqs[4][2])
    assert ds[-1].name == seqs[-1][0]
    with pytest.raises(IndexError):
        ds[len(seqs)]


def test_empty_cache_opens(tmp_path):
    with CacheWriter(tmp_path / "c", CLASSES):
        pass
    ds = open_cache(tmp_path / "c")
    assert len(ds) == 0


def test_crash_leaves_no_cache(tmp_path):
    rng = np.random.default_rng(1)
    with pytest.raises(RuntimeError):
        with CacheWriter(tmp_path / "c", CLASSES) as w:
            for name, joints, labels in _random_sequences(rng, 3):
                w.add(name, joints, labels)
            raise RuntimeError("simulated crash")
    assert not (tmp_path / "c").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SkelclError, match="no such cache"):
        open_cache(tmp_path / "c")


def test_crash_keeps_old_cache_on_overwrite(tmp_path):
    rng = np.random.default_rng(2)
    with CacheWriter(tmp_path / "c", CLASSES) as w:
        w.add("old", *_random_sequences(rng, 1)[0][1:])
    with pytest.raises(RuntimeError):
        with CacheWriter(tmp_path / "c", CLASSES, overwrite=True) as w:
            w.add("new", *_random_sequences(rng, 1)[0][1:])
            raise RuntimeError("simulated crash")
    assert list(open_cache(tmp_path / "c").names) == ["old"]
    with CacheWriter(tmp_path / "c", CLASSES, overwrite=True) as w:
        w.add("new", *_random_sequences(rng, 1)[0][1:])
    assert list(open_cache(tmp_path / "c").names) == ["new"]


def test_partial_directory_does_not_open(tmp_path):
    """A writer killed before finishing leaves a directory without meta.json: it never opens."""
    rng = np.random.default_rng(3)
    w = CacheWriter(tmp_path / "c", CLASSES).__enter__()
    w.add("x", *_random_sequences(rng, 1)[0][1:])
    partial = w._tmp
    w._frames_file.flush()
    with pytest.raises(SkelclError, match="meta.json"):
        open_cache(partial)
    assert not (tmp_path / "c").exists()


def test_refuses_to_overwrite_by_default(tmp_path):
    with CacheWriter(tmp_path / "c", CLASSES):
        pass
    with pytest.raises(SkelclError, match="already exists"):
        CacheWriter(tmp_path / "c", CLASSES)


def _make(tmp_path):
    rng = np.random.default_rng(4)
    with CacheWriter(tmp_path / "c", CLASSES) as w:
        for name, joints, labels in _random_sequences(rng, 3):
            w.add(name, joints, labels)
    return tmp_path / "c"


def test_truncated_frames_detected(tmp_path):
    path = _make(tmp_path)
    data = (path / "frames.bin").read_bytes()
    (path / "frames.bin").write_bytes(data[:-100])
    with pytest.raises(SkelclError, match="frames.bin.*damaged"):
        open_cache(path)


def test_bad_meta_detected(tmp_path):
    path = _make(tmp_path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(SkelclError, match="meta.json: not valid JSON"):
        open_cache(path)
    (path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(SkelclError, match="not a skelcl cache"):
        open_cache(path)


def test_missing_meta_field_named(tmp_path):
    path = _make(tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    del meta["classes"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SkelclError, match="'classes'"):
        open_cache(path)


def test_not_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SkelclError, match="not a directory"):
        open_cache(tmp_path / "f")


@pytest.mark.parametrize(
    "joints, labels, match",
    [
        (np.zeros((5, 1, 24, 3)), None, "joints must be"),
        (np.zeros((5, 3, 25, 3)), None, "3 bodies"),
        (np.zeros((0, 1, 25, 3)), None, "no frames"),
        (np.full((5, 1, 25, 3), np.nan), None, "NaN"),
        (np.zeros((5, 1, 25, 3)), np.zeros(4), r"labels must be \(5,\)"),
        (np.zeros((5, 1, 25, 3)), np.full(5, 3), "label values"),
    ],
)
def test_bad_sequences_rejected_with_name(tmp_path, joints, labels, match):
    with CacheWriter(tmp_path / "c", CLASSES) as w:
        with pytest.raises(SkelclError, match=match) as err:
            w.add("bad_one", joints, labels)
        assert "bad_one" in str(err.value)


def test_duplicate_name_and_unknown_split(tmp_path):
    with CacheWriter(tmp_path / "c", CLASSES, splits={"xsub": ["train", "test"]}) as w:
        w.add("a", np.zeros((2, 1, 25, 3)))
        with pytest.raises(SkelclError, match="duplicate"):
            w.add("a", np.zeros((2, 1, 25, 3)))
        with pytest.raises(SkelclError, match="parts"):
            w.add("b", np.zeros((2, 1, 25, 3)), split={"xsub": "val"})
    ds = open_cache(tmp_path / "c")
    with pytest.raises(SkelclError, match="no split scheme"):
        ds.split("xview", "train")


def test_streaming_writer_memory_is_bounded(tmp_path):
    """Writing many sequences must not accumulate frames in memory: the writer keeps only index rows."""
    import tracemalloc

    rng = np.random.default_rng(5)
    joints = rng.normal(size=(300, 2, 25, 3)).astype(np.float32)  # 180 kB per sequence
    tracemalloc.start()
    with CacheWriter(tmp_path / "c", CLASSES) as w:
        for i in range(300):  # 54 MB of frames in total
            w.add(f"s{i}", joints)
        _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000
    assert len(open_cache(tmp_path / "c")) == 300
