"""PKU-MMD v1 reader: skeleton, label and split files (hand-written and emitted), error paths."""

from __future__ import annotations

import numpy as np
import pytest

from skelcl.data import emit, pkummd
from skelcl.errors import SkelclError


def pku_line(t, second_body=False, lead=""):
    """150 hand-made numbers: body 1 joint j = (t + j/100, -j, 0.5); body 2 = body 1 + 1 or zeros."""
    b1 = [v for j in range(25) for v in (f"{t + j / 100:.2f}", f"{-j}", "0.5")]
    b2 = [f"{float(v) + 1:.2f}" for v in b1] if second_body else ["0"] * 75
    return lead + " ".join(b1 + b2)


def test_hand_written_skeleton_with_leading_space(tmp_path):
    path = tmp_path / "0002-L.txt"
    path.write_text("\n".join([pku_line(0, lead=" "), pku_line(1, True), pku_line(2, lead=" ")]) + "\n")
    joints = pkummd.read_skeleton(path)
    assert joints.shape == (3, 2, 25, 3)
    np.testing.assert_allclose(joints[1, 0, 7], [1.07, -7.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(joints[1, 1, 7], [2.07, -6.0, 1.5], rtol=1e-6)
    assert not joints[0, 1].any() and not joints[2, 1].any()


def test_emitted_skeleton_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(20, 2, 25, 3)).astype(np.float32)
    emit.write_pku_skeleton(tmp_path / "0291-M.txt", joints, digits=None, leading_space=True)
    np.testing.assert_array_equal(pkummd.read_skeleton(tmp_path / "0291-M.txt"), joints)


@pytest.mark.parametrize(
    "content, line, words",
    [
        (lambda: [pku_line(0), pku_line(1)[:-2]], 2, "149 numbers, expected 150"),  # truncated line
        (lambda: [pku_line(0), pku_line(1).replace("0.5", "x0.5", 1)], 2, "'x0.5' is not a number"),
        (lambda: [pku_line(0), "", pku_line(1) + " 7"], 3, "151 numbers"),
    ],
)
def test_malformed_skeleton(tmp_path, content, line, words):
    path = tmp_path / "0005-R.txt"
    path.write_text("\n".join(content()) + "\n")
    with pytest.raises(SkelclError) as err:
        pkummd.read_skeleton(path)
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value)


def test_labels_swapped_rows_and_frame_labels(tmp_path):
    path = tmp_path / "0002-L.txt"
    # class 3 on frames 2..4; a start > end row (class 5, frames 6..8); class 1 overlapping class 3 at 4
    path.write_text("3,2,4,1\n5,8,6,0\n\n1,4,4,2\n2,9,15,1\n")
    rows, swapped = pkummd.read_labels(path)
    assert swapped == 1
    assert rows.tolist() == [[3, 2, 4], [5, 6, 8], [1, 4, 4], [2, 9, 15]]
    labels, multi, clipped = pkummd.frame_labels(rows, 11)
    bg = 51
    # frame:         0   1   2  3  4  5   6  7  8  9  10
    assert labels.tolist() == [bg, bg, 2, 2, 0, bg, 4, 4, 4, 1, 1]
    assert multi == 1 and clipped == 1


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("3,2,4,1\n52,1,2,1\n", 2, "label 52 outside 1..51"),
        ("3,2,4,1\n3,a,4,1\n", 2, "numbers"),
        ("3,2\n", 1, "expected 'label,start,end,confidence'"),
        ("3,2,4,1\n\n3,-1,4,1\n", 3, "negative"),
    ],
)
def test_malformed_labels(tmp_path, text, line, words):
    path = tmp_path / "0002-L.txt"
    path.write_text(text)
    with pytest.raises(SkelclError) as err:
        pkummd.read_labels(path)
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value)


def test_split_file_with_misspelled_header(tmp_path):
    path = tmp_path / "cross-subject.txt"
    path.write_text(
        "Training videos: \n0002-L, 0002-M, 0002-R, 0003-L,\n0003-M, 0003-R\n"
        "Validataion videos: \n0291-L, 0291-M,\n0291-R\n"
    )
    train, test = pkummd.read_split(path)
    assert train == ["0002-L", "0002-M", "0002-R", "0003-L", "0003-M", "0003-R"]
    assert test == ["0291-L", "0291-M", "0291-R"]
    emit.write_pku_split(tmp_path / "w.txt", train, test, per_line=4)
    assert "Validataion videos:" in (tmp_path / "w.txt").read_text()
    assert pkummd.read_split(tmp_path / "w.txt") == (train, test)
    (tmp_path / "bad.txt").write_text("Training videos: \n0002-L, 2-L\nValidataion videos: \n0291-L\n")
    with pytest.raises(SkelclError, match=r"bad.txt:2: '2-L'"):
        pkummd.read_split(tmp_path / "bad.txt")
    (tmp_path / "nohead.txt").write_text("Training videos: 0002-L\n")
    with pytest.raises(SkelclError, match="Validataion videos:"):
        pkummd.read_split(tmp_path / "nohead.txt")


def test_classes_and_names():
    assert len(pkummd.CLASSES) == 52 and pkummd.CLASSES[-1] == "background"
    assert pkummd.CLASSES[0] == "bow" and pkummd.CLASSES[50] == "writing"
    assert pkummd.parse_name("0002-L") == {"subject_group": 2, "view": 0}
    assert pkummd.parse_name("0002-X") is None


def test_frame_labels_match_a_naive_reference():
    rng = np.random.default_rng(5)
    for _ in range(20):
        length = int(rng.integers(1, 60))
        rows = np.array(
            [(rng.integers(1, 52), *sorted(rng.integers(0, 70, 2))) for _ in range(rng.integers(0, 6))]
        )
        rows = rows.reshape(-1, 3)
        labels, multi, clipped = pkummd.frame_labels(rows, length)
        for t in range(length):
            classes = {int(c) - 1 for c, s, e in rows if s <= t <= e}
            assert labels[t] == (min(classes) if classes else 51)
        assert multi == sum(len({c for c, s, e in rows if s <= t <= e}) >= 2 for t in range(length))
        assert clipped == int((rows[:, 2] >= length).sum()) if len(rows) else clipped == 0


# -- phase 2 ------------------------------------------------------------------------------------------

# The ten two-person actions of phase 1, which phase 2 leaves out (its 41 classes are the one-person ones).
TWO_PERSON = {
    "giving something to other person", "handshaking", "hugging other person", "kicking other person",
    "pat on back of other person", "point finger at the other person", "punching/slapping other person",
    "pushing other person", "put something inside pocket", "take out something from pocket",
}  # fmt: skip


def test_phase2_classes_and_names():
    classes = pkummd.class_names(2)
    assert len(classes) == 42 and classes[-1] == "background"
    assert not TWO_PERSON & set(classes)
    assert classes[:4] == ["bow", "brushing hair", "brushing teeth", "check time (from watch)"]
    assert classes[40] == "writing"
    ids = pkummd.label_ids(2)
    assert len(ids) == 41 and {pkummd.ACTIONS[i - 1] for i in set(range(1, 52)) - set(ids)} == TWO_PERSON
    assert pkummd.parse_name("A03N07-M") == {"script": 3, "subject": 7, "view": 1}
    assert pkummd.parse_name("A03N07") is None and pkummd.parse_name("A3N07-M") is None
    assert pkummd.name_phase("A10N08-L") == 2 and pkummd.name_phase("0002-L") == 1
    assert pkummd.name_phase("S001C001P001R001A001") is None


def test_phase2_labels_map_ids_to_41_classes(tmp_path):
    path = tmp_path / "A01N01-L.txt"
    # id 1 (bow) on 0..1, id 13 (hand waving) on 3..4, id 51 (writing) on 6..6; background 41 elsewhere
    path.write_text("1,0,1,1\n13,3,4,1\n51,6,6,2\n")
    rows, swapped = pkummd.read_labels(path, phase=2)
    assert swapped == 0
    labels, multi, clipped = pkummd.frame_labels(rows, 8, phase=2)
    # hand waving: phase-1 id 13, one two-person id (12) below it -> class 11; writing: 51 - 1 - 10 = 40
    assert labels.tolist() == [0, 0, 41, 11, 11, 41, 40, 41]
    assert multi == 0 and clipped == 0
    assert pkummd.class_names(2)[11] == "hand waving"
    # phase 1 keeps id - 1 for the same rows
    assert pkummd.frame_labels(rows, 8)[0].tolist() == [0, 0, 51, 12, 12, 51, 50, 51]


def test_phase2_refuses_two_person_label(tmp_path):
    path = tmp_path / "A01N01-L.txt"
    path.write_text("1,0,1,1\n12,3,4,1\n")
    with pytest.raises(SkelclError) as err:
        pkummd.read_labels(path, phase=2)
    assert f"{path}:2:" in str(err.value) and "label 12" in str(err.value)
    assert pkummd.read_labels(path)[0].shape == (2, 3)  # a phase-1 file may hold it


def test_phase2_split_files_and_phase_mixes(tmp_path):
    train, test = ["A01N01-L", "A01N01-M", "A02N04-R"], ["A01N02-L", "A26N13-R"]
    emit.write_pku_split(tmp_path / "cross_subject_v2.txt", train, test, per_line=2)
    assert pkummd.read_split(tmp_path / "cross_subject_v2.txt", phase=2) == (train, test)
    with pytest.raises(SkelclError, match=r"cross_subject_v2.txt:2: 'A01N01-L' is a phase-2 video name"):
        pkummd.read_split(tmp_path / "cross_subject_v2.txt")
    emit.write_pku_split(tmp_path / "cross-subject.txt", ["0002-L"], ["0291-R"])
    with pytest.raises(SkelclError, match=r"cross-subject.txt:2: '0002-L' is a phase-1 video name"):
        pkummd.read_split(tmp_path / "cross-subject.txt", phase=2)
    one, two = tmp_path / "0002-L.txt", tmp_path / "A10N08-L.txt"
    assert pkummd.detect_phase([two, tmp_path / "notes.txt"]) == 2
    assert pkummd.detect_phase([one]) == 1 and pkummd.detect_phase([tmp_path / "x.txt"]) == 1
    with pytest.raises(SkelclError) as err:
        pkummd.detect_phase([one, two])
    assert str(one) in str(err.value) and str(two) in str(err.value) and "mixed" in str(err.value)
    with pytest.raises(SkelclError) as err:
        pkummd.detect_phase([one], phase=2)
    assert str(one) in str(err.value) and "--phase 2" in str(err.value)
