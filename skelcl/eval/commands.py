"""`skelcl evaluate`: detection mAP of predicted segments against ground truth."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from skelcl.eval.detection import IOU_MODES, PROTOCOLS, evaluate_protocol, format_table, threshold_key
from skelcl.eval.io import _write_atomic, read_segments
from skelcl.eval.segments import EvalInputError

DESCRIPTION = """\
Compute mAP at temporal IoU thresholds of predicted segments against ground-truth segments.

Inputs (--gt, --pred), each a folder or a JSON file:
  folder  PKU-MMD style: one NAME.txt per video, lines `label,start,end[,score]`. Class ids in these
          files are 1-BASED, as in PKU-MMD (1..51); --label-base 0 reads 0-based files instead.
          An empty NAME.txt in the ground truth is a video without actions. A classes.json beside the
          files (`skelcl predict` writes one) names the classes and says the label base of the ids.
          A row with start > end is an error; --swap-reversed reads it with the two swapped.
          A negative start, or start = end under --iou continuous (a half-open segment of no frame), is
          an error in the ground truth (file:line) and a warning in the predictions (evaluated as given).
  JSON    {"format": "skelcl-segments", "label_base": 0, "classes": [...], "videos": {NAME: [[label,
          start, end, score], ...]}}: the file says its own label_base (0 when absent).
Every video of the ground truth is evaluated; predictions for a video or a class the ground truth does not
know are an error. The number of classes is --classes, else the number of ground-truth class names
(JSON "classes" or classes.json), else the largest ground-truth class id. A warning (stderr) says when the
predictions hold no segments, or when class ids were inferred and no ground-truth segment has the first
id (with the wrong --label-base every class is shifted by one).

IoU (--iou): "continuous" (default) reads [start, end) as a real interval of length end - start (skelcl
writes segments that way, end = last frame + 1); "inclusive" counts end as a frame inside the segment
(length end - start + 1). PKU-MMD's own label files name the last frame as end: to compare them with
skelcl's predictions, keep --iou continuous and add --gt-inclusive-end (reads their end as end + 1).

Protocols (thresholds; averages):
"""
for _name, (_thr, _avg) in PROTOCOLS.items():
    DESCRIPTION += (
        f"  {_name:<8}{', '.join(threshold_key(t) for t in _thr)}; "
        + ", ".join(f"avg {threshold_key(a)}:{threshold_key(b)}" for a, b in _avg)
        + "\n"
    )
DESCRIPTION += "\nThe table shows percentages; --json writes every figure as a fraction in [0, 1]."


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="mAP at temporal IoU of predicted segments against ground truth",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gt", required=True, metavar="DIR|FILE.json", help="ground-truth segments")
    p.add_argument("--pred", required=True, metavar="DIR|FILE.json", help="predicted segments")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default="babel", help="default: babel")
    p.add_argument("--iou", choices=IOU_MODES, default="continuous", help="default: continuous")
    p.add_argument("--classes", type=int, metavar="N", help="number of classes (default: from ground truth)")
    p.add_argument(
        "--label-base",
        type=int,
        choices=(0, 1),
        default=1,
        help="id of the first class in folder files (default 1, as in PKU-MMD)",
    )
    p.add_argument(
        "--gt-inclusive-end",
        action="store_true",
        help="ground-truth files give the last frame of a segment as its end (PKU-MMD label files do): "
        "read end + 1, so it compares with skelcl's half-open predictions",
    )
    p.add_argument("--pred-inclusive-end", action="store_true", help="the same for the prediction files")
    p.add_argument(
        "--swap-reversed",
        action="store_true",
        help="read a segment with start > end with the two swapped (PKU-MMD v1 label files have a few); "
        "by default it is an error naming file and line",
    )
    p.add_argument(
        "--json",
        metavar="OUT",
        help="write all figures (and per-class AP) to this JSON file (in an existing folder)",
    )
    p.add_argument("--per-class", action="store_true", help="also print AP per class")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.classes is not None and args.classes < 1:
        raise EvalInputError(f"--classes must be >= 1, got {args.classes}")
    if args.json:
        _check_json_out(Path(args.json))
    swap = args.swap_reversed
    # odd rows: in the ground truth an error (it defines what is measured); in the predictions a warning
    # (the row is what is being judged, and costs only itself: a zero-length one is a false positive)
    zero_ok, odd_pred = args.iou == "inclusive", []
    gt, gt_names, gt_base = read_segments(
        args.gt,
        args.label_base,
        num_classes=args.classes,
        inclusive_end=args.gt_inclusive_end,
        swap_reversed=swap,
        odd="error",
        allow_zero=zero_ok,
    )
    if not gt:
        raise EvalInputError(f"{args.gt}: no ground-truth videos found")
    num_classes = args.classes
    if num_classes is None and gt_names is not None:
        num_classes = len(gt_names)
    if num_classes is None:
        labels = [s.label for segs in gt.values() for s in segs]
        if not labels:
            raise EvalInputError(f"{args.gt}: the ground truth holds no segments")
        num_classes = max(labels) + 1
    pred, pred_names, _ = read_segments(
        args.pred,
        args.label_base,
        num_classes=num_classes,
        inclusive_end=args.pred_inclusive_end,
        swap_reversed=swap,
        odd=odd_pred,
        allow_zero=zero_ok,
    )
    if odd_pred:
        more = f" (and {len(odd_pred) - 1} more)" if len(odd_pred) > 1 else ""
        print(f"skelcl evaluate: warning: {len(odd_pred)} predicted segment(s) with a negative start or zero "
              f"length, evaluated as given: {odd_pred[0]}{more}", file=sys.stderr)  # fmt: skip
    if gt_names is not None and pred_names is not None and gt_names != pred_names:
        raise EvalInputError(f"{args.pred}: its class names differ from those of {args.gt}")
    unknown = sorted(set(pred) - set(gt))
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise EvalInputError(
            f"{args.pred}: predictions for {len(unknown)} video(s) not in the ground truth: {shown}"
        )
    for warning in _warnings(args, gt, pred, gt_base, inferred=args.classes is None and gt_names is None):
        print(f"skelcl evaluate: warning: {warning}", file=sys.stderr)
    names = gt_names or pred_names or [str(c + gt_base) for c in range(num_classes)]
    result = evaluate_protocol(
        gt, pred, args.protocol, num_classes=num_classes, iou=args.iou, class_names=names
    )
    result["gt"] = str(args.gt)
    result["pred"] = str(args.pred)
    print(format_table(result))
    if args.per_class:
        ids = {str(n): c + gt_base for c, n in enumerate(names)}
        print(_per_class_table(result, ids if (gt_names or pred_names) else None))
    if args.json:
        _write_atomic(Path(args.json), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _check_json_out(out: Path) -> None:
    """--json OUT: its folder may be new, but only under an existing one (a mistyped path makes no tree of
    folders, at the filesystem root or elsewhere)."""
    if out.is_dir():
        raise EvalInputError(f"--json {out}: that is a folder; give a file name, e.g. {out / 'results.json'}")
    folder = out.absolute().parent
    if not folder.is_dir() and not folder.parent.is_dir():
        raise EvalInputError(f"--json {out}: neither its folder {out.parent} nor the folder above exists "
                             "(create them first)")  # fmt: skip


def _warnings(args, gt: dict, pred: dict, base: int, inferred: bool) -> list[str]:
    """Inputs that evaluate but are likely mistakes: no predicted segments; class ids inferred from the
    ground truth with none at the first id (files read with the wrong label base)."""
    out = []
    if not pred:
        what = "no NAME.txt files" if Path(args.pred).is_dir() else "no videos"
        out.append(f"{args.pred}: {what}; every ground-truth segment counts as missed (mAP 0)")
    elif not any(pred.values()):
        out.append(f"{args.pred}: the prediction files hold no segments (mAP 0)")
    labels = {s.label for segs in gt.values() for s in segs}
    if inferred and labels and 0 not in labels:
        other = 1 - base if base in (0, 1) else 1
        out.append(
            f"{args.gt}: no ground-truth segment has class id {base}, the first class with --label-base "
            f"{base}; if the ids start at {other}, use --label-base {other} (else every class is shifted)"
        )
    return out


def _per_class_table(result: dict, ids: dict | None = None) -> str:
    """AP per class; with ids ({class name: id in the files}) an id column before the names."""
    keys = [k for k in next(iter(result["per_class"].values())) if k.startswith("AP@")]
    width = max(8, *(len(n) + 2 for n in result["per_class"]))
    head = f"{'id':>4}  " if ids else ""
    lines = [f"{head}{'class':<{width}}{'gt':>7}{'pred':>8}" + "".join(f"{k:>9}" for k in keys)]
    for name, entry in result["per_class"].items():
        row = f"{ids.get(name, '?'):>4}  " if ids else ""
        row += f"{name:<{width}}{entry['num_gt']:>7}{entry['num_pred']:>8}"
        lines.append(row + "".join(f"{100 * entry[k]:>9.2f}" for k in keys))
    return "\n".join(lines)
