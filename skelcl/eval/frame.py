"""Frame-wise accuracy, segmental edit score and F1@k (MS-TCN conventions), all as fractions in [0, 1].

For each video, frames whose true label is `ignore` are dropped from both sequences first. Then:

accuracy: correct frames / labeled frames, pooled over all videos (background frames count).
edit: segments are the runs of non-background labels (`segments_from_labels`); with p and g the label
    sequences of the predicted and true segments, edit = 1 - levenshtein(p, g) / max(len(p), len(g)),
    averaged over videos (1 when both are empty).
F1@k (k = 10, 25, 50 for IoU 0.10, 0.25, 0.50): predicted segments, in time order, each look for the true
    segment of the same class with the highest IoU; a hit if that IoU >= k/100 and that true segment is not
    hit yet, else a false positive. Unhit true segments are false negatives. tp, fp, fn are summed over all
    videos, then F1 = 2 tp / (2 tp + fp + fn) (= 2PR / (P + R)); 1 when there are no segments at all.

Difference from the MS-TCN script: segment ends are exact (half-open, end = last frame + 1) for every
segment, including one that runs to the last frame, and IoU uses the true union.
"""

from __future__ import annotations

import numpy as np

from skelcl.eval.segments import EvalInputError, segments_from_labels

F1_OVERLAPS = (0.10, 0.25, 0.50)


def frame_metrics(pred_labels, true_labels, background: int, ignore: int = -1) -> dict:
    """Accuracy, edit, F1@10, F1@25, F1@50 over lists of per-video label arrays (each int (T_i,))."""
    if len(pred_labels) != len(true_labels):
        raise EvalInputError(f"{len(pred_labels)} predicted label arrays for {len(true_labels)} true ones")
    correct = total = 0
    edits = []
    counts = np.zeros((len(F1_OVERLAPS), 3), dtype=np.int64)  # tp, fp, fn per overlap
    for i, (pred, true) in enumerate(zip(pred_labels, true_labels)):
        pred, true = np.asarray(pred), np.asarray(true)
        if pred.ndim != 1 or pred.shape != true.shape:
            raise EvalInputError(
                f"video {i}: predicted labels {pred.shape} and true labels {true.shape} differ in shape"
            )
        keep = true != ignore
        pred, true = pred[keep], true[keep]
        correct += int((pred == true).sum())
        total += int(true.size)
        p_segs = segments_from_labels(pred, background, ignore)
        t_segs = segments_from_labels(true, background, ignore)
        edits.append(edit_score([s.label for s in p_segs], [s.label for s in t_segs]))
        for k, overlap in enumerate(F1_OVERLAPS):
            counts[k] += f1_counts(p_segs, t_segs, overlap)
    if total == 0:
        raise EvalInputError("no labeled frames to evaluate")
    out = {"accuracy": correct / total, "edit": float(np.mean(edits))}
    for overlap, (tp, fp, fn) in zip(F1_OVERLAPS, counts):
        denom = 2 * tp + fp + fn
        out[f"F1@{round(overlap * 100):d}"] = 1.0 if denom == 0 else float(2 * tp / denom)
    out["num_videos"] = len(edits)
    out["num_frames"] = total
    return out


def edit_score(pred_seq, true_seq) -> float:
    """1 - levenshtein(pred_seq, true_seq) / max(len), unit costs; 1.0 for two empty sequences."""
    m, n = len(pred_seq), len(true_seq)
    if max(m, n) == 0:
        return 1.0
    prev = list(range(n + 1))
    for i in range(1, m + 1):
        cur = [i] + [0] * n
        for j in range(1, n + 1):
            cost = 0 if pred_seq[i - 1] == true_seq[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        prev = cur
    return 1.0 - prev[n] / max(m, n)


def f1_counts(pred_segs, true_segs, overlap: float) -> tuple[int, int, int]:
    """(tp, fp, fn) of predicted vs true segments at IoU `overlap`, MS-TCN matching (see module doc)."""
    hit = [False] * len(true_segs)
    tp = fp = 0
    for p in pred_segs:
        best, best_iou = -1, -1.0
        for j, t in enumerate(true_segs):
            if t.label != p.label:
                continue
            inter = max(0.0, min(p.end, t.end) - max(p.start, t.start))
            union = (p.end - p.start) + (t.end - t.start) - inter
            iou = inter / union if union > 0 else 0.0
            if iou > best_iou:
                best, best_iou = j, iou
        if best >= 0 and best_iou >= overlap and not hit[best]:
            tp += 1
            hit[best] = True
        else:
            fp += 1
    return tp, fp, len(true_segs) - sum(hit)
