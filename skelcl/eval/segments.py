"""Action segments and the runs they come from.

A `Segment` is one action instance in one video: a 0-based class `label`, a frame range and a confidence
`score`. Frame ranges are half-open, [start, end): a segment covering frames 10, 11 and 12 has start 10 and
end 13, so its length is end - start. (How the temporal IoU reads start and end is chosen in
`skelcl.eval.detection`; see `iou` there.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skelcl.errors import SkelclError


class EvalInputError(SkelclError, ValueError):
    """Bad input to an evaluation function: catch it as SkelclError (command line) or ValueError (library)."""


@dataclass(frozen=True)
class Segment:
    """One action instance: 0-based class `label`, frames [start, end), confidence `score`."""

    label: int
    start: float
    end: float
    score: float = 1.0

    @property
    def length(self) -> float:
        return self.end - self.start


def label_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal values in a 1-D array: (values, starts, ends), ends exclusive.

    [5, 5, 2, 2, 2, 5] -> values [5, 2, 5], starts [0, 2, 5], ends [2, 5, 6].
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise EvalInputError(f"frame labels must be 1-D (T,), got shape {labels.shape}")
    if labels.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return labels[:0], empty, empty
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    ends = np.concatenate((change, [labels.size])).astype(np.int64)
    return labels[starts], starts, ends


def segments_from_labels(labels, background: int, ignore: int = -1) -> list[Segment]:
    """Segments of a per-frame labeling: each maximal run of one class becomes a Segment (score 1.0).

    labels: int (T,). Frames labeled `background` or `ignore` belong to no segment and split runs.
    [bg, 3, 3, bg, 1] with background bg -> [Segment(3, 1, 3), Segment(1, 4, 5)].
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise EvalInputError(f"frame labels must be 1-D (T,), got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise EvalInputError(f"frame labels must be integers, got dtype {labels.dtype}")
    values, starts, ends = label_runs(labels)
    keep = (values != background) & (values != ignore)
    return [Segment(int(v), int(s), int(e), 1.0) for v, s, e in zip(values[keep], starts[keep], ends[keep])]


def segments_to_arrays(segments) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A list of Segments as four arrays: labels int64, starts, ends and scores float64."""
    n = len(segments)
    labels = np.fromiter((s.label for s in segments), dtype=np.int64, count=n)
    starts = np.fromiter((s.start for s in segments), dtype=np.float64, count=n)
    ends = np.fromiter((s.end for s in segments), dtype=np.float64, count=n)
    scores = np.fromiter((s.score for s in segments), dtype=np.float64, count=n)
    return labels, starts, ends, scores
