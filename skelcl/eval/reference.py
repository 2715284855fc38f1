"""Plain-Python detection mAP, written for clarity, not speed: the reference that tests and the benchmark
check `skelcl.eval.detection.detection_map` against. Same conventions (see that module), float64 throughout.
"""

from __future__ import annotations


def iou_1d(a_start, a_end, b_start, b_end, inclusive: bool = False) -> float:
    pad = 1.0 if inclusive else 0.0
    inter = max(0.0, min(a_end, b_end) - max(a_start, b_start) + pad)
    union = (a_end - a_start + pad) + (b_end - b_start + pad) - inter
    return inter / union if union > 0 else 0.0


def detection_map_reference(gt, pred, thresholds, num_classes=None, iou="continuous") -> dict:
    """{'classes': [...], 'AP': [[per threshold] per class], 'mAP': [per threshold]} by direct loops."""
    inclusive = iou == "inclusive"
    if num_classes is None:
        num_classes = 1 + max(s.label for segs in gt.values() for s in segs)
    classes = sorted({s.label for segs in gt.values() for s in segs})
    ap_table = []
    for c in classes:
        truth = {}  # video -> list of (start, end), sorted
        for video, segs in gt.items():
            truth[video] = sorted((float(s.start), float(s.end)) for s in segs if s.label == c)
        n_gt = sum(len(v) for v in truth.values())
        preds = [
            (-float(s.score), video, float(s.start), float(s.end))
            for video, segs in pred.items()
            for s in segs
            if s.label == c
        ]
        preds.sort()
        row = []
        for t in thresholds:
            used = {video: [False] * len(v) for video, v in truth.items()}
            flags = []
            for _, video, start, end in preds:
                best_j, best_iou = None, -1.0
                for j, (gs, ge) in enumerate(truth[video]):
                    if used[video][j]:
                        continue
                    ov = iou_1d(start, end, gs, ge, inclusive)
                    if ov >= t and ov > best_iou:
                        best_j, best_iou = j, ov
                if best_j is not None:
                    used[video][best_j] = True
                flags.append(best_j is not None)
            row.append(_ap(flags, [-p[0] for p in preds], n_gt))
        ap_table.append(row)
    m = [sum(col) / len(col) for col in zip(*ap_table)] if ap_table else []
    return {"classes": classes, "AP": ap_table, "mAP": m}


def _ap(flags, scores, n_gt) -> float:
    points = []  # (precision, recall) at the end of each group of equal scores
    found = 0
    for i, hit in enumerate(flags):
        found += hit
        if i + 1 == len(flags) or scores[i + 1] != scores[i]:
            points.append((found / (i + 1), found / n_gt))
    total, prev_recall = 0.0, 0.0
    for i, (_, recall) in enumerate(points):
        best_later = max(p for p, _ in points[i:])
        total += (recall - prev_recall) * best_later
        prev_recall = recall
    return total
