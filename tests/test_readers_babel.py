"""BABEL reader: resampling, frame labels from segments, joint-file lookup, subsets, drops, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skelcl.data import babel, emit
from skelcl.errors import SkelclError


def test_resample_120fps_linear_motion():
    T = 121  # one second at 120 fps
    t = np.arange(T) / 120.0
    joints = np.zeros((T, 1, 25, 3))
    joints[..., 0] = (2.0 * t - 1.0)[:, None, None]  # x moves linearly: exact under linear interpolation
    joints[..., 1] = 5.0
    out = babel.resample_30fps(joints, 120.0)
    assert out.shape == (31, 1, 25, 3)
    np.testing.assert_allclose(out[:, 0, 3, 0], 2.0 * np.arange(31) / 30.0 - 1.0, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], 5.0)


def test_resample_odd_rate_matches_np_interp():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 1, 25, 3))
    out = babel.resample_30fps(x, 50.0)
    n_out = int(np.floor(49 * 30 / 50)) + 1  # 30
    assert out.shape[0] == n_out
    src_t = np.arange(50) / 50.0
    ref = np.interp(np.arange(n_out) / 30.0, src_t, x[:, 0, 7, 2])
    np.testing.assert_allclose(out[:, 0, 7, 2], ref, atol=1e-6)
    np.testing.assert_array_equal(
        babel.resample_30fps(x[:, 0].astype(np.float32), 30.0), x[:, 0].astype(np.float32)
    )


def test_frame_labels_overlap_multilabel_and_none():
    entry = emit.babel_entry(
        7,
        "CMU/CMU/01/01_01_poses.npz",
        1.0,
        frame_labels=[
            (["walk"], 0.0, 0.2),  # frames 0..5 (times 0, 1/30, ..., 5/30 < 0.2)
            (["jump", "walk"], 0.1, 0.3),  # overlaps; multi-label; frames 3..8
            (None, 0.3, 0.5),  # act_cat None: no class
            (["Turn"], 0.5, 0.6),  # case-insensitive; frames 15..17
            (["sit"], 0.6, 1.0),  # a subset-2 class: background in subset 1
        ],
    )
    segs, used_seq = babel.segments(entry, "train.json", "7")
    assert not used_seq and len(segs) == 5
    labels, multi = babel.frame_labels(segs, 31, subset=1)
    expected = [0] * 9 + [4] * 6 + [2] * 3 + [4] * 13  # walk=0 wins over jump=3 where both
    assert labels.tolist() == expected
    assert multi == 6  # frames 3..8 carry walk and jump (walk listed in both overlapping segments)
    labels2, _ = babel.frame_labels(segs, 31, subset=2)
    assert labels2.tolist() == [4] * 18 + [0] * 12 + [4]  # sit on frames 18..29 (t < 1.0)


def test_frame_ann_none_uses_seq_ann():
    entry = emit.babel_entry(8, "x.npz", 2.0, frame_labels=None, seq_labels=[["stand"], None])
    assert entry["frame_ann"] is None
    segs, used_seq = babel.segments(entry, "val.json", "8")
    assert used_seq
    labels, _ = babel.frame_labels(segs, 10, subset=1)
    assert labels.tolist() == [1] * 10


def test_find_joints_old_and_new_amass_names(tmp_path):
    j = np.zeros((3, 25, 3), np.float32)
    emit.write_joint_array(tmp_path / "BMLrub" / "rub001" / "0000_walk_poses.npy", j, 120)
    emit.write_joint_array(tmp_path / "MPI_HDM05" / "MPI_HDM05" / "bk" / "a_poses.npz", j, 60)
    emit.write_joint_array(tmp_path / "99.npy", j, 30)
    old = "BioMotionLab_NTroje/BioMotionLab_NTroje/rub001/0000_walk_poses.npz"
    assert babel.find_joints(tmp_path, 1, old) == tmp_path / "BMLrub" / "rub001" / "0000_walk_poses.npy"
    found = babel.find_joints(tmp_path, 2, "HDM05/bk/a_poses.npz")
    assert found == tmp_path / "MPI_HDM05" / "MPI_HDM05" / "bk" / "a_poses.npz"
    assert babel.find_joints(tmp_path, 99, "nowhere/x.npz") == tmp_path / "99.npy"
    assert babel.find_joints(tmp_path, 3, "nowhere/x.npz") is None
    arr, fps = babel.read_joints(found)
    assert fps == 60 and arr.shape == (3, 1, 25, 3)


def test_read_joints_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 25, 3)))
    with pytest.raises(SkelclError, match=r"a.npy: no frame rate"):
        babel.read_joints(tmp_path / "a.npy")
    assert babel.read_joints(tmp_path / "a.npy", 100.0)[1] == 100.0
    np.save(tmp_path / "b.npy", np.zeros((4, 24, 3)))
    with pytest.raises(SkelclError, match=r"b.npy: joints must be"):
        babel.read_joints(tmp_path / "b.npy", 30.0)
    (tmp_path / "c.npy").write_bytes(b"not an npy")
    with pytest.raises(SkelclError, match=r"c.npy: cannot read"):
        babel.read_joints(tmp_path / "c.npy", 30.0)


def test_malformed_json_names_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{\n "1": {"babel_sid": 1,\n  "dur": 2.0,,\n}}')
    with pytest.raises(SkelclError, match=r"train.json:3: not valid JSON"):
        babel.load_annotations(path)
    bad = {"5": {"babel_sid": 5, "feat_p": "a", "dur": 1.0, "frame_ann": {"labels": [{"act_cat": ["walk"]}]}}}
    with pytest.raises(SkelclError, match=r"sequence 5: frame_ann.labels\[0\] needs start_t"):
        babel.segments(bad["5"], path, "5")
    entry = emit.babel_entry(6, "a", 1.0, frame_labels=[("walk", 0, 1)])  # act_cat a string, not a list
    with pytest.raises(SkelclError, match=r"act_cat must be a list"):
        babel.segments(json.loads(json.dumps(entry)), path, "6")
