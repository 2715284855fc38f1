"""NTU RGB+D readers: .skeleton parsing (hand-written and emitted files), body choice, splits, npz, pyskl."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from skelcl.data import emit, ntu
from skelcl.data.cache import open_cache
from skelcl.data.prepare import prepare_ntu
from skelcl.data.readcommon import read_numbers
from skelcl.errors import SkelclError

BIG_ID = "72057594037931101"  # > 2**53: a float64 would turn it into 72057594037931104


def joint_line(b, t, j):
    """A hand-made joint line: x = b + t/10 + j/100, y = -j/8, z = 3.5, then 9 other fields."""
    return f"{b + t / 10 + j / 100:.4f} {-j / 8:.4f} 3.5 250.1 200.2 900.3 500.4 0.1 0.2 0.3 0.4 2"


def body_block(body_id, b, t):
    lines = [f"{body_id} 0 1 1 1 1 0 0.1214 -0.2031 2", "25"]
    lines += [joint_line(b, t, j) for j in range(25)]
    return lines


def expected_joints(b, t):
    return np.array([[float(f"{b + t / 10 + j / 100:.4f}"), float(f"{-j / 8:.4f}"), 3.5] for j in range(25)])


def test_hand_written_file_with_64bit_id_and_empty_frame(tmp_path):
    assert float(BIG_ID) != int(BIG_ID)  # the point of keeping the ID as text
    lines = ["3"]
    lines += ["1"] + body_block(BIG_ID, 0, 0)  # frame 0: one body
    lines += ["0"]  # frame 1: no body
    lines += ["2"] + body_block(BIG_ID, 0, 2) + body_block("72057594037931102", 1, 2)  # frame 2: two
    path = tmp_path / "S001C002P003R002A013.skeleton"
    path.write_text("\r\n".join(lines) + "\r\n")  # Windows line ends, as the release has
    sample = ntu.read_skeleton(path)
    assert sample.body_ids == [BIG_ID, "72057594037931102"]
    assert sample.joints.shape == (3, 2, 25, 3)
    assert sample.bodies_per_frame.tolist() == [1, 0, 2]
    assert sample.present.tolist() == [[True, False], [False, False], [True, True]]
    np.testing.assert_array_equal(sample.joints[0, 0], expected_joints(0, 0).astype(np.float32))
    np.testing.assert_array_equal(sample.joints[2, 1], expected_joints(1, 2).astype(np.float32))
    assert not sample.joints[1].any()


def test_three_bodies_keeps_the_two_most_active(tmp_path):
    rng = np.random.default_rng(1)
    T = 12
    spread = {"111": 0.5, "222": 0.01, "72057594037999999": 2.0}  # body 222 barely moves
    base = rng.normal(size=(3, 25, 3))
    moves = {k: base[i] + s * rng.normal(size=(T, 25, 3)) for i, (k, s) in enumerate(spread.items())}
    frames = [[(k, moves[k][t]) for k in spread if not (k == "111" and t < 3)] for t in range(T)]
    path = tmp_path / "S002C001P001R001A050.skeleton"
    emit.write_ntu_skeleton(path, frames, digits=None)
    sample = ntu.read_skeleton(path)
    assert (sample.bodies_per_frame == 3).sum() == T - 3
    joints, ids = ntu.choose_bodies(sample)
    # independent reference: variance over the frames where each body appears, summed over coordinates
    act = {k: np.var(moves[k][3:] if k == "111" else moves[k], axis=0).sum() for k in spread}
    assert ids == sorted(act, key=lambda k: -act[k])[:2] == ["72057594037999999", "111"]
    np.testing.assert_array_equal(joints[:, 0], moves["72057594037999999"].astype(np.float32))
    assert not joints[:3, 1].any()  # body 111 absent in the first frames stays zero
    np.testing.assert_array_equal(joints[3:, 1], moves["111"][3:].astype(np.float32))


def test_emitted_file_round_trip_exact(tmp_path):
    rng = np.random.default_rng(2)
    joints = rng.normal(size=(7, 2, 25, 3)).astype(np.float32)
    joints[4, 1] = 0  # second body missing in one frame
    path = emit.emit_ntu(tmp_path, [("S003C003P008R001A001", joints)], digits=None)[0]
    sample = ntu.read_skeleton(path)
    np.testing.assert_array_equal(sample.joints, joints)
    assert sample.present[:, 1].tolist() == [True] * 4 + [False] + [True] * 2


@pytest.mark.parametrize(
    "mutate, line, words",
    [
        (lambda lines: lines[:40], 41, "truncated"),  # cut inside the first body's joints
        (lambda lines: lines[:5] + ["0.1 0.2 abc 1 1 1 1 1 1 1 1 2"] + lines[6:], 6, "'abc' is not a number"),
        (lambda lines: lines[:3] + ["24"] + lines[4:], 4, "joint count 25"),
        (lambda lines: lines[:6] + ["0.1 0.2"] + lines[7:], 7, "joint line (12 values)"),
        (lambda lines: lines + ["1"], 58, "more lines"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, mutate, line, words):
    lines = ["2"] + ["1"] + body_block(BIG_ID, 0, 0) + ["1"] + body_block(BIG_ID, 0, 1)
    assert len(lines) == 57
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(SkelclError) as err:
        ntu.read_skeleton(path)
    assert f"{path}:{line}:" in str(err.value)
    assert words in str(err.value)


def test_tokenizer_matches_python_float():
    rng = np.random.default_rng(3)
    tokens = ["0", "-0", "+1.5", ".5", "5.", "1e3", "-2.5E-3", "007", "0.000123", "123456789012345"]
    tokens += [f"{v:.9g}" for v in rng.normal(scale=10.0 ** rng.integers(-8, 8, 300))]
    tokens += [f"{v:.7g}" for v in rng.normal(size=300)]
    long = [repr(float(v)) for v in rng.normal(scale=10.0 ** rng.integers(-8, 8, 300))]  # 17 digits
    text = "\n".join(" ".join((tokens + long)[i : i + 7]) for i in range(0, len(tokens + long), 7))
    nums = read_numbers("mem", text.encode())
    assert nums.line_ntok.sum() == len(tokens) + len(long)
    # up to 15 significant digits: exactly Python's correctly rounded float()
    np.testing.assert_array_equal(nums.values[: len(tokens)], np.array([float(t) for t in tokens]))
    # longer tokens: within a few ulp
    np.testing.assert_allclose(nums.values[len(tokens) :], np.array([float(t) for t in long]), rtol=1e-15)
    for bad in ["1.2.3", "e5", "-", "1e", "nan", "0x10", "1,5"]:
        with pytest.raises(SkelclError, match=r"mem:2: "):
            read_numbers("mem", f"1 2\n3 {bad}\n".encode())


def test_name_attributes_and_standard_splits():
    attrs = ntu.parse_name("S017C002P003R002A120")
    assert attrs == {"setup": 17, "camera": 2, "performer": 3, "replication": 2, "action": 120}
    assert ntu.standard_splits(attrs) == {"xsub": "test", "xview": "train", "xset": "test"}
    attrs = ntu.parse_name("S002C001P038R001A001")
    assert ntu.standard_splits(attrs) == {"xsub": "train", "xview": "test", "xset": "train"}
    # the NTU-60 cross-subject training list (20 performers), as the NTU RGB+D paper gives it
    ntu60 = [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38]
    assert sorted(p for p in ntu.TRAIN_SUBJECTS if p <= 40) == ntu60
    assert len(ntu.TRAIN_SUBJECTS) == 53
    assert ntu.parse_name("foo") is None


def test_prepare_skeleton_folder_missing_list_and_skip_bad(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "skeletons"
    seqs = {
        "S001C001P001R001A001": rng.normal(size=(6, 1, 25, 3)),
        "S002C002P003R001A002": rng.normal(size=(5, 2, 25, 3)),
        "S001C003P002R002A003": rng.normal(size=(4, 1, 25, 3)),
    }
    seqs["S002C002P003R001A002"][0] = 0  # a frame with no body -> repaired
    emit.emit_ntu(src, list(seqs.items()), digits=None)
    (src / "S003C001P001R001A004.skeleton").write_text("1\n1\n123 0 0\n")  # malformed
    missing = tmp_path / "missing.txt"
    missing.write_text("# samples with missing skeletons\nS001C003P002R002A003\n")
    with pytest.raises(SkelclError, match="S003C001P001R001A004.skeleton:3:"):
        prepare_ntu(src, tmp_path / "c0", missing=[missing])
    report = prepare_ntu(src, tmp_path / "cache", missing=[missing], skip_bad=True)
    assert report.written == 2
    assert report.dropped["missing_skeleton_list"]["names"] == ["S001C003P002R002A003"]
    assert len(report.bad_files) == 1 and "A004" in report.bad_files[0]["file"]
    assert report.frames_repaired == 1
    ds = open_cache(tmp_path / "cache")
    assert ds.names.tolist() == ["S001C001P001R001A001", "S002C002P003R001A002"]
    assert ds.num_classes == 61 and ds.classes[-1] == "background"
    seq = ds[1]
    assert seq.labels.tolist() == [1] * 5
    np.testing.assert_array_equal(
        seq.joints[0], seq.joints[1]
    )  # a leading empty frame takes the first present one
    np.testing.assert_array_equal(seq.joints[1:], seqs["S002C002P003R001A002"][1:].astype(np.float32))
    assert ds.split("xsub", "train").tolist() == [0]
    assert ds.split("xview", "train").tolist() == [1]
    assert ds.split("xset", "train").tolist() == [1]
    assert ds.attr("performer").tolist() == [1, 3]
    assert ds.meta["source"]["report"]["written"] == 2


def test_prepare_ctrgcn_npz(tmp_path):
    rng = np.random.default_rng(5)
    train = [rng.normal(size=(30, 2, 25, 3)), rng.normal(size=(20, 1, 25, 3))]
    test = [rng.normal(size=(300, 2, 25, 3))]
    path = tmp_path / "NTU60_CS.npz"
    emit.write_ctrgcn_npz(path, emit.ctrgcn_rows(train), [4, 59], emit.ctrgcn_rows(test), [7])
    with np.load(path) as z:
        assert z["x_train"].shape == (2, 300, 150) and z["y_train"].shape == (2, 60)
    report = prepare_ntu(path, tmp_path / "cache")
    ds = open_cache(tmp_path / "cache")
    assert report.written == 3
    assert ds.lengths.tolist() == [30, 20, 300]
    assert ds.split("xsub", "test").tolist() == [2]
    assert ds[1].labels.tolist() == [59] * 20 and ds[1].bodies == 2  # npz rows always hold 2 slots
    np.testing.assert_array_equal(ds[0].joints, train[0].astype(np.float32))
    np.testing.assert_array_equal(ds[1].joints[:, 0], train[1][:, 0].astype(np.float32))
    assert not ds[1].joints[:, 1].any()


def test_prepare_pyskl_pickle_and_unsafe_pickle(tmp_path):
    rng = np.random.default_rng(6)
    samples = [
        ("S001C001P001R001A010", rng.normal(size=(9, 2, 25, 3)), 9),
        ("S001C002P002R001A011", rng.normal(size=(5, 1, 25, 3)), 10),
    ]
    path = tmp_path / "ntu60_3danno.pkl"
    split = {"xsub_train": ["S001C001P001R001A010"], "xsub_val": ["S001C002P002R001A011"]}
    emit.write_pyskl_pickle(path, samples, split)
    prepare_ntu(path, tmp_path / "cache")
    ds = open_cache(tmp_path / "cache")
    assert ds.names.tolist() == [s[0] for s in samples]
    assert ds.split("xsub", "train").tolist() == [0] and ds.split("xsub", "test").tolist() == [1]
    assert ds.split("xview", "train").tolist() == []
    np.testing.assert_array_equal(ds[0].joints, samples[0][1].astype(np.float16).astype(np.float32))
    assert ds[1].labels.tolist() == [10] * 5

    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"split": {}, "annotations": [Evil()]}))
    with pytest.raises(SkelclError, match="builtins.print"):
        prepare_ntu(bad, tmp_path / "c2")


def test_prepare_drops_files_without_frames_or_bodies(tmp_path):
    src = tmp_path / "sk"
    src.mkdir()
    (src / "S001C001P001R001A001.skeleton").write_text("0\n")  # no frames
    (src / "S001C001P002R001A001.skeleton").write_text("3\n0\n0\n0\n")  # frames, never a body
    emit.emit_ntu(src, [("S001C001P003R001A001", np.ones((2, 1, 25, 3)))])
    report = prepare_ntu(src, tmp_path / "cache")
    assert report.written == 1
    assert report.dropped["no_frames"]["names"] == ["S001C001P001R001A001"]
    assert report.dropped["no_body"]["names"] == ["S001C001P002R001A001"]
    assert report.counts["frames_with_no_body"] == 3
