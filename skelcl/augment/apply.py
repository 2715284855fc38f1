"""`apply()`: check the batch and the parameters, then hand them to one backend."""

from __future__ import annotations

import numpy as np

from skelcl.augment.params import Params, check_lengths
from skelcl.data.skeleton import NUM_JOINTS
from skelcl.errors import SkelclError

BACKENDS = ("numba", "numpy", "dali")


def first_nonfinite(batch: np.ndarray, lengths: np.ndarray):
    """(sample, frame) of the first NaN/inf value inside the valid frames, or None."""
    from skelcl.augment.numba_backend import nonfinite_frames

    bad = nonfinite_frames(batch, lengths)
    rows = np.flatnonzero(bad >= 0)
    if rows.size == 0:
        return None
    return int(rows[0]), int(bad[rows[0]])


def check_batch(batch, lengths, params: Params | None = None, check_finite: bool = True):
    """Validate the inputs of apply(); returns (batch float32 C-contiguous, lengths int64).

    Rules: batch float32 (B, T, M, 25, 3); lengths (B,) with 1 <= length <= T (frames past a sequence's
    length are never read); no NaN/inf in the first `length` frames (checked unless check_finite=False);
    params sampled for exactly these lengths.
    """
    if not isinstance(batch, np.ndarray):
        raise SkelclError(f"augment: batch must be a numpy array, got {type(batch).__name__}")
    if batch.ndim != 5 or batch.shape[3] != NUM_JOINTS or batch.shape[4] != 3:
        raise SkelclError(f"augment: batch must have shape (B, T, M, {NUM_JOINTS}, 3), got {batch.shape}")
    if batch.dtype != np.float32:
        raise SkelclError(f"augment: batch must be float32, got {batch.dtype}")
    B, T = batch.shape[:2]
    if B == 0 or T == 0 or batch.shape[2] == 0:
        raise SkelclError(f"augment: empty batch of shape {batch.shape}")
    L = check_lengths(lengths, T)
    if len(L) != B:
        raise SkelclError(f"augment: {len(L)} lengths for a batch of {B} sequences")
    if params is not None:
        if not isinstance(params, Params):
            raise SkelclError(
                f"augment: params must come from skelcl.augment.sample, got {type(params).__name__}"
            )
        if params.batch_size != B or not np.array_equal(params.lengths, L):
            raise SkelclError(
                "augment: params were sampled for other sequence lengths; "
                "call sample() with this batch's lengths"
            )
    batch = np.ascontiguousarray(batch)
    if check_finite:
        bad = first_nonfinite(batch, L)
        if bad is not None:
            raise SkelclError(
                f"augment: sequence {bad[0]} of the batch has a NaN or infinite value in frame {bad[1]}"
            )
    return batch, L


def apply(batch, lengths, params: Params, backend: str = "numba", check_finite: bool = True) -> list:
    """Apply sampled params to a zero-padded batch: list (one per view) of float32 (B, T_out, M, 25, 3).

    backend: "numba" (default, batched and parallel over samples), "dali" (a DALI pipeline; CPU without a
    GPU) or "numpy" (the per-sample reference; slow, for tests). check_finite=False skips the NaN/inf scan
    of the valid frames (for data already checked, e.g. a verified cache).
    """
    if backend not in BACKENDS:
        raise SkelclError(f"augment: unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if params is None or not isinstance(params, Params):
        raise SkelclError("augment: params must come from skelcl.augment.sample")
    batch, L = check_batch(batch, lengths, params, check_finite)
    if backend == "numba":
        from skelcl.augment.numba_backend import apply_numba

        return apply_numba(batch, L, params)
    if backend == "numpy":
        from skelcl.augment.reference import apply_reference

        return apply_reference(batch, L, params)
    from skelcl.augment.dali_backend import apply_dali

    return apply_dali(batch, L, params)
