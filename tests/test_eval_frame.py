"""Frame accuracy, segmental edit and F1@k against small hand-worked examples."""

import numpy as np
import pytest

from skelcl.eval import EvalInputError, frame_metrics
from skelcl.eval.frame import edit_score

BG, A, B = 9, 0, 1


def test_worked_example():
    true = np.array([BG, BG, A, A, A, A, BG, B, B, B])
    pred = np.array([BG, A, A, A, BG, BG, BG, B, B, A])
    m = frame_metrics([pred], [true], background=BG)
    # frames 0, 2, 3, 6, 7, 8 right
    assert m["accuracy"] == pytest.approx(0.6)
    # segments: true A[2,6) B[7,10); pred A[1,4) B[7,9) A[9,10): sequences ABA vs AB, distance 1
    assert m["edit"] == pytest.approx(1 - 1 / 3)
    # IoUs: A[1,4)~A[2,6) = 2/5, B[7,9)~B[7,10) = 2/3, A[9,10) overlaps no A -> 0
    # @10 and @25: tp 2, fp 1, fn 0 -> 4/5;  @50: tp 1, fp 2, fn 1 -> 2/5
    assert m["F1@10"] == pytest.approx(0.8)
    assert m["F1@25"] == pytest.approx(0.8)
    assert m["F1@50"] == pytest.approx(0.4)
    assert m["num_videos"] == 1 and m["num_frames"] == 10


def test_second_hit_on_same_segment_is_false_positive():
    true = np.array([A] * 10)
    pred = np.array([A] * 5 + [BG] + [A] * 4)  # A[0,5) and A[6,10), IoU 1/2 and 2/5 with A[0,10)
    m = frame_metrics([pred], [true], background=BG)
    assert m["F1@10"] == pytest.approx(2 / 3)  # tp 1, fp 1, fn 0
    assert m["F1@50"] == pytest.approx(2 / 3)
    assert m["edit"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.9)


def test_counts_pool_over_videos_and_edit_averages():
    v1 = np.array([BG, A, A, BG])
    v2_true = np.array([B, B, B, BG])
    v2_pred = np.full(4, BG)
    m = frame_metrics([v1, v2_pred], [v1, v2_true], background=BG)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["edit"] == pytest.approx((1 + 0) / 2)
    assert m["F1@50"] == pytest.approx(2 / 3)  # tp 1, fp 0, fn 1


def test_ignored_frames_are_dropped():
    true = np.array([-1, A, A, -1, A])
    pred = np.array([B, A, A, B, A])
    m = frame_metrics([pred], [true], background=BG)
    assert m == {
        "accuracy": 1.0,
        "edit": 1.0,
        "F1@10": 1.0,
        "F1@25": 1.0,
        "F1@50": 1.0,
        "num_videos": 1,
        "num_frames": 3,
    }


def test_only_background():
    m = frame_metrics([np.full(5, BG)], [np.full(5, BG)], background=BG)
    assert m["accuracy"] == 1.0 and m["edit"] == 1.0 and m["F1@50"] == 1.0
    m = frame_metrics([np.array([BG, A, BG])], [np.full(3, BG)], background=BG)
    assert m["edit"] == 0.0 and m["F1@10"] == 0.0  # one false positive, nothing to find


def test_edit_score_levenshtein():
    assert edit_score(list("kitten"), list("sitting")) == pytest.approx(1 - 3 / 7)
    assert edit_score([], []) == 1.0
    assert edit_score([1, 2, 3], []) == 0.0
    assert edit_score([1, 2, 3], [3, 2, 1]) == pytest.approx(1 - 2 / 3)


def test_bad_input():
    with pytest.raises(EvalInputError, match="differ in shape"):
        frame_metrics([np.zeros(3, int)], [np.zeros(4, int)], background=BG)
    with pytest.raises(EvalInputError, match="2 predicted"):
        frame_metrics([np.zeros(3, int)] * 2, [np.zeros(3, int)], background=BG)
    with pytest.raises(EvalInputError, match="no labeled frames"):
        frame_metrics([np.zeros(3, int)], [np.full(3, -1)], background=BG)
