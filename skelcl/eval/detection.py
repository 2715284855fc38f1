"""Detection mAP at temporal IoU thresholds, and the named evaluation protocols.

Temporal IoU of two segments a = [s1, e1], b = [s2, e2] (see `temporal_iou`):

    continuous (default): the segment is the real interval [start, end); length = end - start.
        inter = max(0, min(e1, e2) - max(s1, s2)),  union = (e1 - s1) + (e2 - s2) - inter.
        This is the right reading for skelcl's own half-open segments (end = last frame + 1).
    inclusive: start and end are both frame indices inside the segment; length = end - start + 1.
        inter = max(0, min(e1, e2) - max(s1, s2) + 1),  union = (e1 - s1 + 1) + (e2 - s2 + 1) - inter.
        Use it when both files name the last frame of a segment as its end. When only one side does (raw
        PKU-MMD label files against skelcl predictions), read that side with `inclusive_end=True`
        (skelcl.eval.io; `--gt-inclusive-end` on the command line) and keep `continuous`.

Matching (ActivityNet convention), per class and IoU threshold t: predictions are taken in descending score
order; each one is a true positive if some still-unmatched ground-truth segment of the same video and class
has IoU >= t, and it then takes the one with the highest IoU; otherwise it is a false positive (duplicates of
an already-found segment are false positives). Predictions with equal scores are taken in a fixed order
(video name, start, end), and ground-truth segments tied on IoU in order of (start, end), so the result never
depends on the order of the input lists.

AP is the area under the interpolated precision/recall curve: with precision p_i and recall r_i after the
i-th step (a step is one prediction, or one group of predictions with equal score),
AP = sum_i (r_i - r_{i-1}) * max_{j >= i} p_j, r_0 = 0. A class with ground truth but no predictions has AP 0.
mAP is the mean AP over the classes that have at least one ground-truth segment; predictions of the other
(known) classes are counted but cannot change mAP.

Speed: two sorts of all predictions (by (class, video) group, then by class); the greedy matching runs in
rounds (the k-th best prediction of every group at once), vectorized over groups and thresholds with numpy.
"""

from __future__ import annotations

import math

import numpy as np

from skelcl.eval.segments import EvalInputError, Segment, segments_to_arrays

IOU_MODES = ("continuous", "inclusive")

PROTOCOLS = {
    # name: (thresholds, ranges whose average is reported as avg_mAP_lo:hi)
    "babel": ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), ((0.1, 0.5), (0.1, 0.7))),
    "pkummd": ((0.1, 0.3, 0.5), ((0.1, 0.5),)),
    "thumos": ((0.3, 0.4, 0.5, 0.6, 0.7), ((0.3, 0.7),)),
    "anet": ((0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95), ((0.5, 0.95),)),
}


def temporal_iou(start_a, end_a, start_b, end_b, iou: str = "continuous") -> np.ndarray:
    """IoU of segments a and b (arrays broadcast together); 0 where the union is empty."""
    pad = _iou_pad(iou)
    start_a, end_a, start_b, end_b = (
        np.asarray(x, dtype=np.float64) for x in (start_a, end_a, start_b, end_b)
    )
    inter = np.maximum(np.minimum(end_a, end_b) - np.maximum(start_a, start_b) + pad, 0.0)
    union = (end_a - start_a + pad) + (end_b - start_b + pad) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def threshold_key(t: float) -> str:
    """0.5 -> '0.5', 0.30000000000000004 -> '0.3' (for readable result keys)."""
    return f"{round(float(t), 6):g}"


def detection_map(
    gt: dict[str, list[Segment]],
    pred: dict[str, list[Segment]],
    thresholds,
    *,
    num_classes: int | None = None,
    iou: str = "continuous",
) -> dict:
    """mAP of `pred` against `gt` at each IoU threshold.

    gt, pred: video name -> list of Segments (0-based labels). Every video to evaluate must be a key of `gt`
    (an empty list is a video without actions); `pred` may leave videos out, but may not name a video that is
    not in `gt`, nor a class outside 0..num_classes-1 (num_classes defaults to max ground-truth label + 1).

    Returns a JSON-serializable dict: thresholds, iou, mAP (one per threshold), classes (labels with ground
    truth, ascending), AP (per class, per threshold), num_gt / num_pred (per class), num_videos,
    num_gt_total, num_pred_total, num_pred_no_gt (predictions of known classes absent from the ground truth).
    """
    _iou_pad(iou)  # validates the mode
    thr = _check_thresholds(thresholds)
    videos = sorted(gt)
    if not videos:
        raise EvalInputError("the ground truth holds no videos")
    unknown = sorted(set(pred) - set(gt))
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise EvalInputError(f"predictions for {len(unknown)} video(s) not in the ground truth: {shown}")

    g_lab, g_s, g_e, _, g_vid = _flatten(gt, videos, "ground truth")
    p_lab, p_s, p_e, p_sc, p_vid = _flatten(pred, videos, "prediction")
    if g_lab.size == 0:
        raise EvalInputError("the ground truth holds no segments")
    if num_classes is None:
        num_classes = int(g_lab.max()) + 1
    _check_labels(g_lab, g_vid, videos, num_classes, "ground truth")
    _check_labels(p_lab, p_vid, videos, num_classes, "prediction")

    tp = _match(g_lab, g_s, g_e, g_vid, p_lab, p_s, p_e, p_sc, p_vid, len(videos), thr, iou)

    num_gt = np.bincount(g_lab, minlength=num_classes)
    num_pred = np.bincount(p_lab, minlength=num_classes)
    classes = np.flatnonzero(num_gt > 0)
    # Class-major order, best score first, fixed tie order: the order the precision/recall curve is read in.
    order = np.lexsort((p_e, p_s, p_vid, -p_sc, p_lab))
    lab_sorted = p_lab[order]
    bounds = np.searchsorted(lab_sorted, np.arange(num_classes + 1))
    ap = np.zeros((classes.size, thr.size))
    for row, c in enumerate(classes):
        block = order[bounds[c] : bounds[c + 1]]
        ap[row] = average_precision(tp[:, block], p_sc[block], int(num_gt[c]))
    return {
        "thresholds": [float(t) for t in thr],
        "iou": iou,
        "mAP": [float(x) for x in ap.mean(axis=0)],
        "classes": [int(c) for c in classes],
        "AP": [[float(x) for x in row] for row in ap],
        "num_gt": [int(num_gt[c]) for c in classes],
        "num_pred": [int(num_pred[c]) for c in classes],
        "num_classes": int(num_classes),
        "num_videos": len(videos),
        "num_gt_total": int(g_lab.size),
        "num_pred_total": int(p_lab.size),
        "num_pred_no_gt": int(num_pred[num_gt == 0].sum()),
    }


def average_precision(hits: np.ndarray, scores: np.ndarray, num_gt: int) -> np.ndarray:
    """Interpolated AP per row of `hits`.

    hits: bool (K, n), true positives of n predictions sorted by descending score, one row per threshold;
    scores: (n,) those scores (equal scores form one step of the curve); num_gt > 0. Returns (K,).
    """
    hits = np.asarray(hits, dtype=bool)
    if hits.shape[1] == 0:
        return np.zeros(hits.shape[0])
    scores = np.asarray(scores)
    step_end = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))  # last prediction of each step
    found = np.cumsum(hits, axis=1)[:, step_end].astype(np.float64)
    precision = found / (step_end + 1)
    recall = found / num_gt
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    gained = np.diff(recall, axis=1, prepend=0.0)
    return (gained * envelope).sum(axis=1)


def evaluate_protocol(
    gt: dict[str, list[Segment]],
    pred: dict[str, list[Segment]],
    protocol: str = "babel",
    *,
    num_classes: int | None = None,
    iou: str = "continuous",
    class_names=None,
) -> dict:
    """Run a named protocol (see PROTOCOLS) and return flat, JSON-serializable figures.

    Keys: protocol, iou, num_videos, num_classes, num_classes_with_gt, num_gt, num_pred, num_pred_no_gt,
    "mAP@t" for each threshold t, "avg_mAP_lo:hi" (mean of the protocol's thresholds within [lo, hi]) and
    per_class: {name: {num_gt, num_pred, "AP@t", ...}}, name = class_names[label] if given, else str(label).
    All AP/mAP values are fractions in [0, 1].
    """
    if protocol not in PROTOCOLS:
        raise EvalInputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    thresholds, ranges = PROTOCOLS[protocol]
    res = detection_map(gt, pred, thresholds, num_classes=num_classes, iou=iou)
    if class_names is not None and len(class_names) < res["num_classes"]:
        raise EvalInputError(f"{len(class_names)} class names given for {res['num_classes']} classes")
    out = {
        "protocol": protocol,
        "iou": iou,
        "num_videos": res["num_videos"],
        "num_classes": res["num_classes"],
        "num_classes_with_gt": len(res["classes"]),
        "num_gt": res["num_gt_total"],
        "num_pred": res["num_pred_total"],
        "num_pred_no_gt": res["num_pred_no_gt"],
    }
    for t, m in zip(thresholds, res["mAP"]):
        out[f"mAP@{threshold_key(t)}"] = m
    for lo, hi in ranges:
        inside = [m for t, m in zip(thresholds, res["mAP"]) if lo - 1e-9 <= t <= hi + 1e-9]
        out[f"avg_mAP_{threshold_key(lo)}:{threshold_key(hi)}"] = float(np.mean(inside))
    per_class = {}
    for c, ap, ng, npred in zip(res["classes"], res["AP"], res["num_gt"], res["num_pred"]):
        name = str(class_names[c]) if class_names is not None else str(c)
        entry = {"num_gt": ng, "num_pred": npred}
        entry.update({f"AP@{threshold_key(t)}": a for t, a in zip(thresholds, ap)})
        per_class[name] = entry
    out["per_class"] = per_class
    return out


# ----------------------------------------------------------------------------------------------------


def _iou_pad(iou: str) -> float:
    if iou not in IOU_MODES:
        raise EvalInputError(f"iou must be one of {IOU_MODES}, got {iou!r}")
    return 1.0 if iou == "inclusive" else 0.0


def _check_thresholds(thresholds) -> np.ndarray:
    thr = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if thr.ndim != 1 or thr.size == 0:
        raise EvalInputError("give at least one IoU threshold")
    if not np.all((thr > 0) & (thr <= 1)):
        raise EvalInputError(f"IoU thresholds must lie in (0, 1], got {thr.tolist()}")
    return thr


def _flatten(segments: dict, videos: list[str], what: str):
    """All segments as flat arrays (label, start, end, score, video index), videos in the given order."""
    parts = []
    index = {v: i for i, v in enumerate(videos)}
    for name, segs in segments.items():
        lab, s, e, sc = segments_to_arrays(segs)
        bad = ~(np.isfinite(s) & np.isfinite(e) & np.isfinite(sc)) | (e < s)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise EvalInputError(
                f"{what} for video {name!r}, segment {k}: need finite start <= end and a finite score, "
                f"got {segs[k]}"
            )
        parts.append((lab, s, e, sc, np.full(lab.size, index[name], dtype=np.int64)))
    if not parts:
        z = np.zeros(0)
        return np.zeros(0, dtype=np.int64), z, z, z, np.zeros(0, dtype=np.int64)
    return tuple(np.concatenate(cols) for cols in zip(*parts))


def _check_labels(labels, vids, videos, num_classes: int, what: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise EvalInputError(
            f"{what} for video {videos[vids[k]]!r} has unknown class {int(labels[k])} "
            f"(known: 0..{num_classes - 1}; 0-based labels)"
        )


def _match(g_lab, g_s, g_e, g_vid, p_lab, p_s, p_e, p_sc, p_vid, num_videos, thr, iou) -> np.ndarray:
    """True-positive flags, bool (K thresholds, n predictions in input order)."""
    n_pred = p_lab.size
    tp = np.zeros((thr.size, n_pred), dtype=bool)
    if n_pred == 0:
        return tp
    # Ground truth grouped by (class, video), then ordered by (start, end) within a group.
    g_key = g_lab * num_videos + g_vid
    g_order = np.lexsort((g_e, g_s, g_key))
    g_key, g_s, g_e = g_key[g_order], g_s[g_order], g_e[g_order]
    keys, g_first, g_count = np.unique(g_key, return_index=True, return_counts=True)

    # Predictions grouped the same way, best score first inside a group, fixed order among ties.
    p_key = p_lab * num_videos + p_vid
    order = np.lexsort((p_e, p_s, -p_sc, p_key))
    k_sorted = p_key[order]
    new_group = np.append(True, k_sorted[1:] != k_sorted[:-1])
    group_start = np.flatnonzero(new_group)
    rank = np.arange(n_pred) - group_start[np.cumsum(new_group) - 1]
    pos = np.minimum(np.searchsorted(keys, k_sorted), keys.size - 1)
    has_gt = keys[pos] == k_sorted

    # Round r handles the r-th best prediction of every group that has ground truth.
    live = np.flatnonzero(has_gt)
    live = live[np.argsort(rank[live], kind="stable")]
    if live.size == 0:
        return tp
    round_bounds = np.searchsorted(rank[live], np.arange(rank[live[-1]] + 2))
    matched = np.zeros((thr.size, g_key.size), dtype=bool)
    for r in range(round_bounds.size - 1):
        at = live[round_bounds[r] : round_bounds[r + 1]]  # positions in the sorted prediction order
        first, count = g_first[pos[at]], g_count[pos[at]]
        width = np.arange(int(count.max()))
        valid = width[None, :] < count[:, None]
        gidx = first[:, None] + np.minimum(width[None, :], count[:, None] - 1)  # (P, M)
        pi = order[at]
        ov = temporal_iou(p_s[pi, None], p_e[pi, None], g_s[gidx], g_e[gidx], iou)
        free = valid[None] & ~matched[:, gidx]  # (K, P, M)
        cand = np.where(free, ov[None], -1.0)
        best = cand.argmax(axis=2)  # (K, P)
        best_iou = np.take_along_axis(cand, best[..., None], axis=2)[..., 0]
        hit = best_iou >= thr[:, None]
        tp[:, pi] = hit
        k_idx, p_idx = np.nonzero(hit)
        matched[k_idx, gidx[p_idx, best[k_idx, p_idx]]] = True
    return tp


def format_table(result: dict) -> str:
    """The figures of `evaluate_protocol` as a small text table (percent)."""
    lines = [
        f"protocol {result['protocol']}, iou {result['iou']}: {result['num_videos']} videos, "
        f"{result['num_classes_with_gt']}/{result['num_classes']} classes with ground truth, "
        f"{result['num_gt']} ground-truth and {result['num_pred']} predicted segments",
        f"{'metric':<18}{'value (%)':>10}",
    ]
    for key, value in result.items():
        if key.startswith("mAP@") or key.startswith("avg_mAP_"):
            shown = "nan" if math.isnan(value) else f"{100 * value:.2f}"
            lines.append(f"{key:<18}{shown:>10}")
    return "\n".join(lines)
