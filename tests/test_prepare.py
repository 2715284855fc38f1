"""`skelcl prepare` end to end: PKU-MMD and BABEL releases laid out on disk, through the CLI and the API."""

from __future__ import annotations

import json
import shutil

import numpy as np

from skelcl.cli import main
from skelcl.data import emit
from skelcl.data.cache import open_cache
from skelcl.data.prepare import prepare_babel, prepare_ntu, prepare_pkummd


def make_pku_release(root, rng):
    """Three sequences: 0002-L (one body, an empty frame), 0002-M (two bodies), 0291-R (one body)."""
    seqs = {}
    for name, bodies, T in (("0002-L", 1, 40), ("0002-M", 2, 30), ("0291-R", 1, 25)):
        j = rng.normal(size=(T, bodies, 25, 3)).astype(np.float32)
        seqs[name] = j
    seqs["0002-L"][5] = 0  # no body in frame 5
    labels = {
        "0002-L": np.array([51] * 10 + [4] * 10 + [51] * 5 + [50] * 15),
        "0002-M": np.array([0] * 30),
        "0291-R": np.array([51] * 25),
    }
    splits = {
        "cross-subject": (["0002-L", "0002-M"], ["0291-R"]),
        "cross-view": (["0002-M", "0291-R"], ["0002-L"]),
    }
    emit.emit_pkummd(root, [(n, seqs[n], labels[n]) for n in seqs], splits, digits=None)
    # quirks: a start > end row (class 3 on frames 30..32, written swapped) and a leading-space line
    with open(root / "Train_Label_PKU_final" / "0291-R.txt", "w") as f:
        f.write("3,32,30,1\n")
    path = root / "PKU_Skeleton_Renew" / "0291-R.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(" " + line for line in lines) + "\n")
    return seqs, labels


def test_cli_prepare_pkummd_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "PKUMMD"
    seqs, labels = make_pku_release(src, rng)
    out = tmp_path / "cache"
    rc = main(
        ["prepare", "pkummd", str(src), "--out", str(out), "--quiet", "--report", str(tmp_path / "r.json")]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote 3 sequences" in printed and "label_rows_swapped: 1" in printed
    ds = open_cache(out)
    assert ds.names.tolist() == ["0002-L", "0002-M", "0291-R"]
    assert ds.num_classes == 52 and ds.classes[-1] == "background"
    assert ds.bodies.tolist() == [1, 2, 1]
    # labels: emitted segments read back, background = 51; 0291-R: the swapped row clipped at T=25
    assert ds[0].labels.tolist() == labels["0002-L"].tolist()
    assert ds[1].labels.tolist() == [0] * 30
    assert ds[2].labels.tolist() == [51] * 25
    np.testing.assert_array_equal(ds[1].joints, seqs["0002-M"])
    np.testing.assert_array_equal(ds[0].joints[5], ds[0].joints[4])  # empty frame repaired
    np.testing.assert_array_equal(ds[0].joints[6:, 0], seqs["0002-L"][6:, 0])
    assert ds.split("xsub", "train").tolist() == [0, 1] and ds.split("xsub", "test").tolist() == [2]
    assert ds.split("xview", "test").tolist() == [0]
    assert ds.attr("view").tolist() == [0, 1, 2] and ds.attr("subject_group").tolist() == [2, 2, 291]
    report = ds.meta["source"]["report"]
    assert report["frames_repaired"] == 1
    assert report["counts"]["label_rows_swapped"] == 1 and report["counts"]["label_rows_clipped"] == 1
    assert json.loads((tmp_path / "r.json").read_text()) == report


def test_cli_prepare_pkummd_bad_file_and_skip_bad(tmp_path, capsys):
    rng = np.random.default_rng(1)
    src = tmp_path / "PKUMMD"
    make_pku_release(src, rng)
    path = src / "PKU_Skeleton_Renew" / "0002-M.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [lines[3][: len(lines[3]) // 2]]) + "\n")  # truncated mid-line
    out = tmp_path / "cache"
    assert main(["prepare", "pkummd", str(src), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4:" in err and "expected 150" in err
    assert not out.exists()  # nothing half-written
    assert main(["prepare", "pkummd", str(src), "--out", str(out), "--quiet", "--skip-bad"]) == 0
    ds = open_cache(out)
    assert ds.names.tolist() == ["0002-L", "0291-R"]
    assert ds.meta["source"]["report"]["bad_files"][0]["file"] == str(path)
    # parts given separately, no split files: no split schemes, still readable
    shutil.rmtree(src / "Split")
    report = prepare_pkummd(
        None,
        tmp_path / "c2",
        skeletons=src / "PKU_Skeleton_Renew",
        labels=src / "Train_Label_PKU_final",
        skip_bad=True,
    )
    assert report.written == 2 and open_cache(tmp_path / "c2").split_schemes == {}


def test_prepare_babel_subsets_drops_and_resampling(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "babel"
    jdir = src / "joints"

    def motion(T):
        return rng.normal(size=(T, 25, 3)).astype(np.float32)

    # 1: 120 fps with sidecar, found by its (old AMASS name) feat_p; walk then overlapping jump
    emit.write_joint_array(jdir / "BMLrub" / "rub001" / "0001_poses.npy", motion(241), 120.0)  # 2 s
    # 2: 30 fps npz found by sid, frame_ann None -> seq_ann (stand over the whole sequence)
    emit.write_joint_array(jdir / "2.npz", motion(45), 30.0)
    # 3: too long (over 1000 frames at 30 fps after resampling from 60 fps)
    emit.write_joint_array(jdir / "3.npy", motion(2200), 60.0)
    # 4: no subset-1 action (sit only) -> dropped unless keep_empty
    emit.write_joint_array(jdir / "4.npy", motion(30), 30.0)
    # 5: no joint file at all
    train = [
        emit.babel_entry(
            1,
            "BioMotionLab_NTroje/BioMotionLab_NTroje/rub001/0001_poses.npz",
            2.0,
            [(["walk"], 0.0, 1.0), (["jump", "walk"], 0.5, 1.5), (None, 1.5, 2.0)],
        ),
        emit.babel_entry(3, "CMU/CMU/03/03_poses.npz", 73.3, [(["walk"], 0.0, 73.3)]),
        emit.babel_entry(5, "CMU/CMU/05/05_poses.npz", 1.0, [(["walk"], 0.0, 1.0)]),
    ]
    val = [
        emit.babel_entry(2, "KIT/2/x_poses.npz", 1.5, None, seq_labels=[["stand"]]),
        emit.babel_entry(4, "KIT/4/x_poses.npz", 1.0, [(["sit"], 0.0, 1.0)]),
    ]
    emit.write_babel_json(src / "train.json", train)
    emit.write_babel_json(src / "val.json", val)
    report = prepare_babel(src, tmp_path / "s1", subset=1)
    ds = open_cache(tmp_path / "s1")
    assert ds.names.tolist() == ["1", "2"]
    assert ds.classes == ["walk", "stand", "turn", "jump", "background"]
    assert ds.lengths.tolist() == [61, 45]  # 241 frames at 120 fps -> 61 at 30 fps
    # t = j/30: walk on [0, 1.5) (walk wins over jump on [0.5, 1.5)), background after
    assert ds[0].labels.tolist() == [0] * 45 + [4] * 16
    assert ds[1].labels.tolist() == [1] * 45
    assert ds.split("official", "val").tolist() == [1]
    assert report.dropped["over_1000_frames"]["names"] == ["3"]
    assert report.dropped["no_joint_file"]["names"] == ["5"]
    assert report.dropped["no_subset_action"]["names"] == ["4"]
    assert report.counts["frames_with_two_subset_classes"] == 30  # t in [0.5, 1.5): frames 15..44
    assert report.counts["frame_ann_none_used_seq_ann"] == 1
    assert report.counts["sequences_resampled"] == 1
    # subset 2 with keep_empty: sequence 4 is sit throughout, sequence 1 all background
    report2 = prepare_babel(src, tmp_path / "s2", subset=2, keep_empty=True, parts=("val",))
    ds2 = open_cache(tmp_path / "s2")
    assert ds2.names.tolist() == ["2", "4"] and report2.written == 2
    assert ds2[1].labels.tolist() == [0] * 30 and ds2[0].labels.tolist() == [4] * 45


def test_prepare_normalize_option(tmp_path):
    rng = np.random.default_rng(3)
    joints = rng.normal(size=(8, 1, 25, 3)).astype(np.float32)
    emit.emit_ntu(tmp_path / "sk", [("S001C001P001R001A001", joints)], digits=None)
    prepare_ntu(tmp_path / "sk", tmp_path / "cache", normalize=True)
    seq = open_cache(tmp_path / "cache")[0].joints
    np.testing.assert_allclose(seq[:, 0, 1], 0.0, atol=1e-5)  # centered on spine_mid
    spine = seq[0, 0, 1] - seq[0, 0, 0]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 0, 1], atol=1e-5)  # spine onto +z
    # distances between joints are kept (a rigid motion per frame)
    d_in = np.linalg.norm(joints[:, 0, 3] - joints[:, 0, 7], axis=-1)
    d_out = np.linalg.norm(seq[:, 0, 3] - seq[:, 0, 7], axis=-1)
    np.testing.assert_allclose(d_out, d_in, rtol=1e-4)


def test_emit_babel_and_segments_round_trip(tmp_path):
    assert emit.labels_to_segments(np.array([4, 0, 0, 4, 3, 3, -1, 1]), background=4) == [
        (0, 1, 2),
        (3, 4, 5),
        (1, 7, 7),
    ]
    rng = np.random.default_rng(4)
    a = rng.normal(size=(61, 25, 3)).astype(np.float32)  # 2 s at 30 fps
    emit.emit_babel(tmp_path / "b", [(10, "train", a, [(["jog"], 0.0, 1.0)]), (11, "val", a[:31], None)])
    report = prepare_babel(tmp_path / "b", tmp_path / "c", subset=3, keep_empty=True)
    ds = open_cache(tmp_path / "c")
    assert report.written == 2 and ds.names.tolist() == ["10", "11"]
    np.testing.assert_array_equal(ds[0].joints[:, 0], a)
    assert ds[0].labels.tolist() == [0] * 30 + [4] * 31 and ds[1].labels.tolist() == [4] * 31
    assert ds.attr("babel_sid").tolist() == [10, 11]


def make_pku_v2_release(root, rng):
    """Phase 2: A01N01-L (one body), A01N02-M (two bodies), A02N03-R; splits in cross_*_v2.txt."""
    seqs, labels = {}, {}
    for name, bodies, T in (("A01N01-L", 1, 30), ("A01N02-M", 2, 20), ("A02N03-R", 1, 25)):
        seqs[name] = rng.normal(size=(T, bodies, 25, 3)).astype(np.float32)
    labels["A01N01-L"] = np.array([41] * 5 + [11] * 10 + [40] * 15)  # class 11 = hand waving, 40 = writing
    labels["A01N02-M"] = np.array([0] * 20)
    labels["A02N03-R"] = np.array([41] * 25)
    splits = {
        "cross_subject_v2": (["A01N01-L", "A02N03-R"], ["A01N02-M"]),
        "cross_view_v2": (["A01N01-L", "A01N02-M"], ["A02N03-R"]),
    }
    emit.emit_pkummd(root, [(n, seqs[n], labels[n]) for n in seqs], splits, digits=None, phase=2)
    return seqs, labels


def test_cli_prepare_pkummd_phase2_detected_from_names(tmp_path, capsys):
    src = tmp_path / "PKUMMDv2"
    seqs, labels = make_pku_v2_release(src, np.random.default_rng(5))
    # the label files carry phase-1 action ids: hand waving 13, writing 51, bow 1
    assert (src / "Label" / "A01N01-L.txt").read_text().split() == ["13,5,14,1", "51,15,29,1"]
    out = tmp_path / "cache"
    assert main(["prepare", "pkummd", str(src), "--out", str(out), "--quiet"]) == 0
    assert "wrote 3 sequences" in capsys.readouterr().out
    ds = open_cache(out)
    assert ds.num_classes == 42 and ds.classes[11] == "hand waving" and ds.classes[-1] == "background"
    assert "handshaking" not in ds.classes
    assert ds[0].labels.tolist() == labels["A01N01-L"].tolist()
    assert ds[1].labels.tolist() == [0] * 20 and ds[2].labels.tolist() == [41] * 25
    np.testing.assert_array_equal(ds[1].joints, seqs["A01N02-M"])
    assert ds.split("xsub", "test").tolist() == [1] and ds.split("xview", "test").tolist() == [2]
    assert ds.attr("subject").tolist() == [1, 2, 3] and ds.attr("script").tolist() == [1, 1, 2]
    assert ds.attr("view").tolist() == [0, 1, 2]
    assert ds.meta["source"]["phase"] == 2
    assert ds.meta["source"]["split_files"]["xsub"] == str(src / "Split" / "cross_subject_v2.txt")
    # --phase 2 given explicitly gives the same cache
    assert (
        main(["prepare", "pkummd", str(src), "--out", str(tmp_path / "c2"), "--quiet", "--phase", "2"]) == 0
    )
    assert open_cache(tmp_path / "c2")[0].labels.tolist() == labels["A01N01-L"].tolist()


def test_cli_prepare_pkummd_refuses_phase_mixes(tmp_path, capsys):
    rng = np.random.default_rng(6)
    src = tmp_path / "PKUMMDv2"
    make_pku_v2_release(src, rng)
    out = tmp_path / "cache"
    # --phase 1 on phase-2 files
    assert main(["prepare", "pkummd", str(src), "--out", str(out), "--quiet", "--phase", "1"]) == 2
    err = capsys.readouterr().err
    assert "--phase 1" in err and str(src / "Skeleton" / "A01N01-L.txt") in err and not out.exists()
    # a phase-1 split file next to phase-2 skeletons
    for f in (src / "Split").iterdir():
        f.unlink()
    emit.write_pku_split(src / "Split" / "cross-subject.txt", ["0002-L"], ["0291-R"])
    assert main(["prepare", "pkummd", str(src), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        str(src / "Split" / "cross-subject.txt") in err and "phase-1 video name" in err and not out.exists()
    )
    # a phase-1 skeleton file among phase-2 ones, parts given separately
    (src / "Split" / "cross-subject.txt").unlink()
    one = src / "Skeleton" / "0002-L.txt"
    emit.write_pku_skeleton(one, rng.normal(size=(10, 1, 25, 3)))
    rc = main(["prepare", "pkummd", "--skeletons", str(src / "Skeleton"), "--labels", str(src / "Label"),
               "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert str(one) in err and str(src / "Skeleton" / "A01N01-L.txt") in err and not out.exists()
