"""Detection mAP: hand-computed cases, the plain-loop reference, and properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skelcl.eval import EvalInputError, Segment, detection_map, evaluate_protocol, temporal_iou
from skelcl.eval.reference import detection_map_reference


def S(label, start, end, score=1.0):
    return Segment(label, start, end, score)


# ---------------------------------------------------------------------------------------------- by hand


def test_temporal_iou_modes():
    # [0, 9) vs [5, 9): inter 4, union 9.  Inclusive [0, 9] vs [5, 9]: inter 5 frames, union 10 frames.
    assert temporal_iou(0, 9, 5, 9) == pytest.approx(4 / 9)
    assert temporal_iou(0, 9, 5, 9, "inclusive") == pytest.approx(5 / 10)
    # touching half-open ranges do not overlap; inclusive ranges sharing frame 10 do
    assert temporal_iou(0, 10, 10, 20) == 0.0
    assert temporal_iou(0, 10, 10, 20, "inclusive") == pytest.approx(1 / 21)
    assert temporal_iou(3, 3, 3, 3) == 0.0  # empty union
    with pytest.raises(EvalInputError):
        temporal_iou(0, 1, 0, 1, "open")


def test_duplicates_and_threshold():
    gt = {"v": [S(0, 0, 10), S(0, 20, 30)]}
    pred = {"v": [S(0, 0, 10, 0.9), S(0, 0, 10, 0.8), S(0, 22, 30, 0.7)]}
    # t=0.5: hits T F T; precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3
    # t=0.9: the third has IoU 8/10 < 0.9 -> hits T F F -> AP = 1/2
    res = detection_map(gt, pred, [0.5, 0.9])
    assert res["mAP"] == pytest.approx([0.5 + 1 / 3, 0.5])
    assert res["classes"] == [0] and res["num_gt"] == [2] and res["num_pred"] == [3]


def test_equal_scores_form_one_step():
    gt = {"v": [S(0, 0, 10)]}
    pred = [S(0, 0, 10, 0.5), S(0, 50, 60, 0.5)]
    # one step: precision 1/2 at recall 1 -> AP 1/2, whichever prediction is listed first
    assert detection_map(gt, {"v": pred}, [0.5])["mAP"] == [0.5]
    assert detection_map(gt, {"v": pred[::-1]}, [0.5])["mAP"] == [0.5]


def test_takes_best_unmatched_ground_truth():
    gt = {"v": [S(0, 0, 10), S(0, 4, 14)]}
    pred = {"v": [S(0, 0, 10, 0.9), S(0, 1, 11, 0.8)]}
    # first takes [0,10) (IoU 1). Second: IoU 9/11 with the taken one, 7/13 = 0.54 with [4,14):
    # a hit at 0.5 (AP 1), a miss at 0.6 (hits T F -> AP 1/2).
    assert detection_map(gt, pred, [0.5, 0.6])["mAP"] == pytest.approx([1.0, 0.5])
    # highest IoU wins: [5,15) prefers [4,14) (IoU 9/11) over [0,10) (5/15)
    gt2 = {"v": [S(0, 0, 10), S(0, 4, 14)]}
    pred2 = {"v": [S(0, 5, 15, 0.9), S(0, 0, 10, 0.8)]}
    assert detection_map(gt2, pred2, [0.5])["mAP"] == [1.0]


def test_empty_videos_and_absent_classes():
    gt = {"a": [S(0, 0, 10), S(1, 20, 30)], "empty": []}
    pred = {"empty": [S(0, 0, 10, 0.9)], "a": [S(0, 0, 10, 0.8), S(2, 0, 5, 0.7)]}
    res = detection_map(gt, pred, [0.5], num_classes=3)
    # class 0: a false positive in the empty video first, then the hit: precision 0, 1/2 -> AP 1/2
    # class 1: no predictions -> AP 0;  class 2: no ground truth -> not averaged
    assert res["classes"] == [0, 1]
    assert res["AP"] == [[0.5], [0.0]]
    assert res["mAP"] == [0.25]
    assert res["num_pred_no_gt"] == 1 and res["num_videos"] == 2
    # no predictions at all
    assert detection_map(gt, {}, [0.5])["mAP"] == [0.0]


def test_inclusive_mode_changes_matching():
    gt = {"v": [S(0, 0, 9)]}
    pred = {"v": [S(0, 5, 9)]}
    assert detection_map(gt, pred, [0.5])["mAP"] == [0.0]  # 4/9
    assert detection_map(gt, pred, [0.5], iou="inclusive")["mAP"] == [1.0]  # 5/10


def test_bad_input():
    gt = {"v": [S(0, 0, 10)]}
    with pytest.raises(EvalInputError, match="not in the ground truth: 'w'"):
        detection_map(gt, {"w": [S(0, 0, 10)]}, [0.5])
    with pytest.raises(EvalInputError, match="unknown class 1"):
        detection_map(gt, {"v": [S(1, 0, 10)]}, [0.5])
    with pytest.raises(EvalInputError, match="unknown class -1"):
        detection_map(gt, {"v": [S(-1, 0, 10)]}, [0.5], num_classes=4)
    with pytest.raises(EvalInputError, match="start <= end"):
        detection_map(gt, {"v": [S(0, 10, 0)]}, [0.5])
    with pytest.raises(EvalInputError, match="finite"):
        detection_map(gt, {"v": [S(0, 0, 10, float("nan"))]}, [0.5])
    with pytest.raises(EvalInputError, match="thresholds"):
        detection_map(gt, {}, [0.0, 0.5])
    with pytest.raises(EvalInputError, match="no segments"):
        detection_map({"v": []}, {}, [0.5])
    with pytest.raises(EvalInputError, match="no videos"):
        detection_map({}, {}, [0.5])
    with pytest.raises(EvalInputError, match="protocol"):
        evaluate_protocol(gt, {}, "coco")


def test_protocol_keys_and_values():
    gt = {"v": [S(0, 0, 10), S(1, 0, 10)]}
    pred = {"v": [S(0, 0, 10), S(1, 0, 6)]}  # class 1 IoU 0.6
    res = evaluate_protocol(gt, pred, "babel", class_names=["walk", "run"])
    expect = {0.1: 1, 0.2: 1, 0.3: 1, 0.4: 1, 0.5: 1, 0.6: 1, 0.7: 0.5}
    for t, m in expect.items():
        assert res[f"mAP@{t}"] == pytest.approx(m)
    assert res["avg_mAP_0.1:0.5"] == pytest.approx(1.0)
    assert res["avg_mAP_0.1:0.7"] == pytest.approx(6.5 / 7)
    assert res["per_class"]["run"]["AP@0.7"] == 0.0
    res = evaluate_protocol(gt, pred, "anet")
    assert [k for k in res if k.startswith("mAP@")][-1] == "mAP@0.95"
    assert res["avg_mAP_0.5:0.95"] == pytest.approx(np.mean([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]))
    assert set(evaluate_protocol(gt, pred, "pkummd")) >= {"mAP@0.1", "mAP@0.3", "mAP@0.5", "avg_mAP_0.1:0.5"}
    assert "avg_mAP_0.3:0.7" in evaluate_protocol(gt, pred, "thumos")


# ---------------------------------------------------------------------------------------------- properties

seg_strategy = st.tuples(
    st.integers(0, 2),  # label
    st.integers(0, 60),  # start
    st.integers(1, 25),  # length
    st.integers(0, 4),  # score level: many ties
)


def build(items, videos):
    out = {v: [] for v in videos}
    for video, (label, start, length, score) in items:
        out[video].append(S(label, start, start + length, score / 4))
    return out


videos_st = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), seg_strategy), max_size=25)


@settings(max_examples=60, deadline=None)
@given(videos_st, videos_st, st.sampled_from(["continuous", "inclusive"]))
def test_matches_reference(gt_items, pred_items, iou):
    gt = build(gt_items, ["a", "b", "c"])
    pred = build([it for it in pred_items if it[0] != "c"], ["a", "b"])  # "c": no predictions
    if not gt_items:
        return
    thr = [0.1, 0.3, 0.5, 0.7, 0.95]
    fast = detection_map(gt, pred, thr, num_classes=3, iou=iou)
    ref = detection_map_reference(gt, pred, thr, num_classes=3, iou=iou)
    assert fast["classes"] == ref["classes"]
    np.testing.assert_allclose(fast["AP"], ref["AP"], rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(videos_st.filter(bool), st.randoms(use_true_random=False))
def test_perfect_predictions_score_one(gt_items, rnd):
    gt = build(gt_items, ["a", "b", "c"])
    pred = {v: [S(s.label, s.start, s.end, rnd.random()) for s in segs] for v, segs in gt.items()}
    for iou in ("continuous", "inclusive"):
        res = detection_map(gt, pred, [0.1, 0.5, 0.95, 1.0], iou=iou)
        assert res["mAP"] == [1.0] * 4


@settings(max_examples=40, deadline=None)
@given(videos_st.filter(bool), videos_st, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(gt_items, pred_items, rnd):
    gt = build(gt_items, ["a", "b", "c"])
    pred = build(pred_items, ["a", "b", "c"])
    thr = [0.1, 0.5, 0.7]
    first = detection_map(gt, pred, thr, num_classes=3)

    def shuffled(d):
        names = list(d)
        rnd.shuffle(names)
        return {n: rnd.sample(d[n], len(d[n])) for n in names}

    again = detection_map(shuffled(gt), shuffled(pred), thr, num_classes=3)
    assert again == first


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40), st.floats(0, 1)), min_size=1, max_size=12),
    st.floats(0, 30),
    st.floats(0, 30),
)
def test_shifting_lowers_iou_and_map(segs, d1, d2):
    d1, d2 = sorted((d1, d2))
    # one ground-truth segment per (video, class): a prediction can only ever match its own segment
    gt = {f"v{i}": [S(i % 3, s, s + n)] for i, (s, n, _) in enumerate(segs)}
    for sign in (1, -1):

        def moved(d, sign=sign):
            return {
                f"v{i}": [S(i % 3, s + sign * d, s + n + sign * d, p)] for i, (s, n, p) in enumerate(segs)
            }

        for s, n, _ in segs:
            assert temporal_iou(s, s + n, s + sign * d2, s + n + sign * d2) <= temporal_iou(
                s, s + n, s + sign * d1, s + n + sign * d1
            )
        thr = [0.1, 0.3, 0.5, 0.7]
        near = detection_map(gt, moved(d1), thr)["mAP"]
        far = detection_map(gt, moved(d2), thr)["mAP"]
        assert all(f <= n + 1e-12 for f, n in zip(far, near))


def test_large_random_against_reference():
    rng = np.random.default_rng(7)
    gt, pred = {}, {}
    for v in range(40):
        starts = rng.integers(0, 2000, 15)
        lengths = rng.integers(5, 120, 15)
        labels = rng.integers(0, 6, 15)
        gt[f"v{v}"] = [S(int(c), int(s), int(s + n)) for c, s, n in zip(labels, starts, lengths)]
        pick = rng.integers(0, 15, 60)
        jitter = rng.normal(0, 15, (60, 2))
        pred[f"v{v}"] = [
            S(
                int(labels[k] if rng.random() < 0.8 else rng.integers(0, 6)),
                float(starts[k] + a),
                float(max(starts[k] + a + 1, starts[k] + lengths[k] + b)),
                float(rng.integers(0, 20)) / 20,
            )
            for k, a, b in zip(pick, jitter[:, 0], jitter[:, 1])
        ]
    thr = [0.1, 0.3, 0.5, 0.7]
    fast = detection_map(gt, pred, thr)
    ref = detection_map_reference(gt, pred, thr)
    np.testing.assert_allclose(fast["AP"], ref["AP"], rtol=0, atol=1e-12)
    assert 0.2 < fast["mAP"][2] < 0.9  # a non-trivial case
