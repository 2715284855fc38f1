"""Action segments from per-frame class probabilities.

probs: float (T, C+1), one row per frame; columns 0..C-1 are the action classes and the last column is
background, which never becomes a segment. Rows need not sum to one (any per-frame scores work), but the
sweep thresholds below assume probabilities.

Two generators (`proposals_from_scores(probs, method=...)`):

argmax: every maximal run of the per-frame argmax class (not background) of at least `min_length` frames
    is one segment; its score is the mean probability of that class inside the run.

sweep (multi-threshold grouping of the frame scores; every mAP this project reports uses it): for each
    class c and each threshold h in `thresholds`, every maximal run of frames with probs[:, c] >= h that
    lasts at least `min_length` frames is a proposal [s, e). With L = e - s and n = max(1, round(context
    * L)) context frames on each side (clipped at the sequence ends), its score is

        mean(probs[s:e, c]) - context_weight * mean(probs[max(0, s - n):s, c] ++ probs[e:min(T, e + n), c])

    (the context mean is 0 when the run covers the whole sequence). Identical ranges found at several
    thresholds are kept once. Finally a per-class greedy NMS keeps the best-scoring proposal and drops the
    others of the same class whose IoU with it exceeds `nms_iou`.

Both return Segments with 0-based labels and half-open frame ranges, sorted by (start, end, label).
"""

from __future__ import annotations

import numpy as np

from skelcl.eval.segments import EvalInputError, Segment, label_runs

SWEEP_DEFAULTS = {
    "thresholds": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "min_length": 3,
    "context": 0.25,
    "context_weight": 0.6,
    "nms_iou": 0.2,
}
ARGMAX_DEFAULTS = {"min_length": 1}


def proposals_from_scores(probs, method: str = "sweep", **options) -> list[Segment]:
    """Segments from frame probabilities (T, C+1), background last; see the module docstring.

    method "sweep" takes thresholds, min_length, context, context_weight, nms_iou;
    method "argmax" takes min_length.
    """
    probs = _check_probs(probs)
    if method == "sweep":
        return sweep_proposals(probs, **_options(options, SWEEP_DEFAULTS, method))
    if method == "argmax":
        return argmax_proposals(probs, **_options(options, ARGMAX_DEFAULTS, method))
    raise EvalInputError(f"unknown proposal method {method!r}; choose 'sweep' or 'argmax'")


def argmax_proposals(probs, min_length: int = 1) -> list[Segment]:
    """Runs of the per-frame argmax class (background excluded), scored by their mean probability."""
    probs = _check_probs(probs)
    background = probs.shape[1] - 1
    values, starts, ends = label_runs(probs.argmax(axis=1))
    keep = (values != background) & (ends - starts >= min_length)
    cum = _cumsum(probs)
    out = []
    for c, s, e in zip(values[keep], starts[keep], ends[keep]):
        score = (cum[e, c] - cum[s, c]) / (e - s)
        out.append(Segment(int(c), int(s), int(e), float(score)))
    return out


def sweep_proposals(
    probs,
    thresholds=SWEEP_DEFAULTS["thresholds"],
    min_length: int = 3,
    context: float = 0.25,
    context_weight: float = 0.6,
    nms_iou: float = 0.2,
) -> list[Segment]:
    """Threshold-sweep proposals with the inside-minus-context score and per-class NMS."""
    probs = _check_probs(probs)
    thr = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if thr.ndim != 1 or thr.size == 0:
        raise EvalInputError("sweep needs at least one threshold")
    if min_length < 1 or context < 0:
        raise EvalInputError(f"need min_length >= 1 and context >= 0, got {min_length} and {context}")
    num_frames, num_cols = probs.shape
    cum = _cumsum(probs)
    out = []
    for c in range(num_cols - 1):
        above = probs[None, :, c] >= thr[:, None]  # (K, T)
        edge = np.diff(np.pad(above, ((0, 0), (1, 1))).astype(np.int8), axis=1)
        starts = np.nonzero(edge == 1)[1]  # row-major: the k-th start and k-th end belong together
        ends = np.nonzero(edge == -1)[1]
        keep = ends - starts >= min_length
        if not keep.any():
            continue
        ranges = np.unique(np.stack([starts[keep], ends[keep]], axis=1), axis=0)
        s, e = ranges[:, 0], ranges[:, 1]
        length = e - s
        inside = (cum[e, c] - cum[s, c]) / length
        n = np.maximum(1, np.rint(context * length)).astype(np.int64) if context > 0 else np.zeros_like(s)
        lo, hi = np.maximum(s - n, 0), np.minimum(e + n, num_frames)
        ctx_sum = (cum[s, c] - cum[lo, c]) + (cum[hi, c] - cum[e, c])
        ctx_n = (s - lo) + (hi - e)
        ctx_mean = np.where(ctx_n > 0, ctx_sum / np.maximum(ctx_n, 1), 0.0)
        score = inside - context_weight * ctx_mean
        for i in nms(s, e, score, nms_iou):
            out.append(Segment(c, int(s[i]), int(e[i]), float(score[i])))
    out.sort(key=lambda seg: (seg.start, seg.end, seg.label))
    return out


def nms(starts, ends, scores, iou_threshold: float) -> np.ndarray:
    """Greedy 1-D NMS on half-open ranges: indices kept, best score first (ties: earlier start, end).

    Keeps the best remaining range and drops every remaining one whose IoU with it is > iou_threshold.
    """
    starts, ends, scores = (np.asarray(x, dtype=np.float64) for x in (starts, ends, scores))
    order = np.lexsort((ends, starts, -scores))
    kept = []
    while order.size:
        i = order[0]
        kept.append(i)
        rest = order[1:]
        inter = np.maximum(np.minimum(ends[i], ends[rest]) - np.maximum(starts[i], starts[rest]), 0.0)
        union = (ends[i] - starts[i]) + (ends[rest] - starts[rest]) - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def _cumsum(probs: np.ndarray) -> np.ndarray:
    """(T+1, C+1) float64 prefix sums: cum[e] - cum[s] = probs[s:e].sum(0)."""
    cum = np.zeros((probs.shape[0] + 1, probs.shape[1]))
    np.cumsum(probs, axis=0, out=cum[1:])
    return cum


def _check_probs(probs) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise EvalInputError(f"frame scores must be (T, C+1) with background last, got shape {probs.shape}")
    probs = probs.astype(np.float64, copy=False)
    if not np.isfinite(probs).all():
        raise EvalInputError("frame scores contain NaN or infinity")
    return probs


def _options(given: dict, defaults: dict, method: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise EvalInputError(f"method {method!r} has no option(s) {unknown}; it takes {sorted(defaults)}")
    return {**defaults, **given}
