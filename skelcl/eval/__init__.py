"""Localization evaluation: segments from frame scores, detection mAP at temporal IoU, frame metrics.

Conventions: labels are 0-based class indices (background is a separate index, never a segment); a Segment
covers frames [start, end), end exclusive. Files may use other conventions (PKU-MMD folders are 1-based);
`skelcl.eval.io` converts on reading and writing.
"""

from skelcl.eval.detection import PROTOCOLS, detection_map, evaluate_protocol, temporal_iou
from skelcl.eval.frame import frame_metrics
from skelcl.eval.proposals import proposals_from_scores
from skelcl.eval.segments import EvalInputError, Segment, segments_from_labels

__all__ = [
    "PROTOCOLS",
    "EvalInputError",
    "Segment",
    "detection_map",
    "evaluate_protocol",
    "frame_metrics",
    "proposals_from_scores",
    "segments_from_labels",
    "temporal_iou",
]
