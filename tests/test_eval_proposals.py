"""Segments from frame labels and from frame score maps (argmax runs, threshold sweep + NMS)."""

import numpy as np
import pytest

from skelcl.eval import EvalInputError, Segment, proposals_from_scores, segments_from_labels, temporal_iou
from skelcl.eval.proposals import nms


def test_segments_from_labels():
    bg = 9
    labels = np.array([bg, 3, 3, bg, 1, 1, 1, -1, 1, 2])
    assert segments_from_labels(labels, bg) == [
        Segment(3, 1, 3),
        Segment(1, 4, 7),
        Segment(1, 8, 9),  # the ignored frame splits the run
        Segment(2, 9, 10),
    ]
    assert segments_from_labels(np.array([], dtype=np.int64), bg) == []
    assert segments_from_labels(np.full(5, bg), bg) == []
    assert segments_from_labels(np.array([0, 0, 1]), background=1) == [Segment(0, 0, 2)]
    with pytest.raises(EvalInputError):
        segments_from_labels(np.zeros((2, 2), dtype=int), bg)
    with pytest.raises(EvalInputError):
        segments_from_labels(np.array([0.5, 1.0]), bg)


def block_scores(num_frames, num_classes, blocks, low=0.05, high=0.9):
    """Probabilities: `high` for class c inside each (c, s, e) block, `low` for other classes, rest bg."""
    probs = np.full((num_frames, num_classes + 1), low)
    probs[:, -1] = 1 - low * num_classes
    for c, s, e in blocks:
        probs[s:e] = (1 - high) / num_classes
        probs[s:e, c] = high
    return probs


def test_argmax_runs():
    probs = block_scores(20, 3, [(0, 2, 6), (2, 6, 8), (0, 15, 20)])
    probs[4, 0] = 0.6  # inside the first block: still the argmax, lowers its mean
    segs = proposals_from_scores(probs, "argmax")
    assert [(s.label, s.start, s.end) for s in segs] == [(0, 2, 6), (2, 6, 8), (0, 15, 20)]
    assert segs[0].score == pytest.approx((0.9 * 3 + 0.6) / 4)
    assert segs[1].score == pytest.approx(0.9)
    # min_length drops the 2-frame run
    assert len(proposals_from_scores(probs, "argmax", min_length=3)) == 2
    # only background -> nothing
    assert proposals_from_scores(block_scores(10, 3, []), "argmax") == []


def test_sweep_clean_blocks_by_hand():
    probs = block_scores(100, 3, [(0, 10, 30), (2, 50, 80)])
    segs = proposals_from_scores(probs, "sweep")
    assert [(s.label, s.start, s.end) for s in segs] == [(0, 10, 30), (2, 50, 80)]
    # class 0: length 20 -> 5 context frames each side at 0.05 -> 0.9 - 0.6 * 0.05
    assert segs[0].score == pytest.approx(0.9 - 0.6 * 0.05)
    # class 2: length 30 -> round(7.5) = 8 context frames each side
    assert segs[1].score == pytest.approx(0.87)


def test_sweep_context_clipped_at_sequence_ends():
    probs = block_scores(12, 1, [(0, 0, 8)], low=0.2, high=0.8)
    [seg] = proposals_from_scores(probs, "sweep")
    assert (seg.start, seg.end) == (0, 8)
    # 2 context frames wanted on each side: none on the left, frames 8 and 9 on the right (0.2 each)
    assert seg.score == pytest.approx(0.8 - 0.6 * 0.2)
    whole = block_scores(6, 1, [(0, 0, 6)])
    [seg] = proposals_from_scores(whole, "sweep")
    assert seg.score == pytest.approx(0.9)  # no context frames at all


def test_sweep_short_runs_and_background_never_emitted():
    probs = block_scores(30, 2, [(0, 5, 7), (1, 20, 23)])
    probs[:, -1] = 0.99  # background above every threshold: still not a class
    segs = proposals_from_scores(probs, "sweep")
    assert [(s.label, s.start, s.end) for s in segs] == [(1, 20, 23)]  # 2-frame run dropped
    assert proposals_from_scores(probs, "sweep", min_length=2)[0] == Segment(
        0, 5, 7, pytest.approx(0.9 - 0.6 * 0.05)
    )


def direct_score(probs, c, s, e, context=0.25, weight=0.6):
    n = max(1, int(np.rint(context * (e - s))))
    ctx = np.concatenate([probs[max(0, s - n) : s, c], probs[e : e + n, c]])
    return probs[s:e, c].mean() - weight * (ctx.mean() if ctx.size else 0.0)


def test_sweep_on_noisy_ramps():
    rng = np.random.default_rng(3)
    num_frames, num_classes = 300, 4
    t = np.arange(num_frames)
    logits = rng.normal(0, 0.6, (num_frames, num_classes + 1))
    for c, centre in enumerate((40, 120, 200, 260)):
        logits[:, c] += 4 * np.exp(-(((t - centre) / 18) ** 2))
    logits[:, -1] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    thresholds = np.linspace(0.1, 0.9, 9)
    segs = proposals_from_scores(probs, "sweep", thresholds=thresholds, nms_iou=0.2)
    assert segs
    for seg in segs:
        s, e, c = int(seg.start), int(seg.end), seg.label
        assert e - s >= 3 and c < num_classes
        assert seg.score == pytest.approx(direct_score(probs, c, s, e), abs=1e-12)
        # the range is a maximal run above one of the thresholds
        inside = probs[s:e, c].min()
        outside = max(probs[s - 1, c] if s > 0 else -1, probs[e, c] if e < num_frames else -1)
        assert any(outside < h <= inside for h in thresholds)
    for c in range(num_classes):
        mine = [x for x in segs if x.label == c]
        for i, a in enumerate(mine):
            for b in mine[i + 1 :]:
                assert temporal_iou(a.start, a.end, b.start, b.end) <= 0.2
    # each class's peak is found
    for c, centre in enumerate((40, 120, 200, 260)):
        assert any(x.label == c and x.start <= centre < x.end for x in segs)
    # without NMS there are more, and NMS keeps the best of each class
    raw = proposals_from_scores(probs, "sweep", thresholds=thresholds, nms_iou=1.0)
    assert len(raw) > len(segs)
    for c in range(num_classes):
        best = max((x.score for x in raw if x.label == c), default=None)
        if best is not None:
            assert best == max(x.score for x in segs if x.label == c)


def test_nms_by_hand():
    starts, ends = np.array([0, 1, 20, 5]), np.array([10, 11, 30, 12])
    scores = np.array([0.5, 0.9, 0.4, 0.3])
    # best [1,11); [0,10) has IoU 9/11 -> dropped; [5,12) IoU 6/11 -> dropped; [20,30) stays
    assert nms(starts, ends, scores, 0.2).tolist() == [1, 2]
    # at 0.85 nothing overlaps enough: all kept, best score first
    assert nms(starts, ends, scores, 0.85).tolist() == [1, 0, 2, 3]
    assert nms([], [], [], 0.2).tolist() == []


def test_bad_scores_and_options():
    with pytest.raises(EvalInputError, match="T, C\\+1"):
        proposals_from_scores(np.zeros(5))
    with pytest.raises(EvalInputError, match="NaN"):
        proposals_from_scores(np.full((4, 3), np.nan))
    with pytest.raises(EvalInputError, match="no option"):
        proposals_from_scores(np.zeros((4, 3)), "argmax", thresholds=[0.5])
    with pytest.raises(EvalInputError, match="unknown proposal method"):
        proposals_from_scores(np.zeros((4, 3)), "peaks")
