"""The numba backend: one fused, compiled pass per view, parallel over the samples of the batch.

For output frame t of sample b the kernel computes the window coordinate u = offset + step * t, mirrors
the two neighbouring integer frames into the sequence (reflect padding, short sequences), interpolates
linearly, then applies the composed 3x3 matrix A = R S F (flip mirror, shear, rotation) with the joint
permutation of the flip, adds the counter-based noise and multiplies by the keep mask (axis, joint and
part masks), all in registers. Views with a Gaussian blur write A x + noise to a per-sample scratch buffer
first and filter it along time in a second pass (the masks are constant over time, so they commute with
the blur and are applied last).

Compiled functions use cache=True: the first call in a fresh environment compiles (a few seconds), later
processes load the machine code from __pycache__.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from skelcl.augment import noise as noise_mod
from skelcl.augment.params import (
    Params,
    blur_taps,
    joint_permutation,
    keep_mask,
    output_frames,
    spatial_matrix,
)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK16 = np.uint64(0xFFFF)


@njit(cache=True, inline="always")
def _sym(i, n):
    """Mirror i into [0, n), repeating the edge frame."""
    r = i % (2 * n)
    return r if r < n else 2 * n - 1 - r


@njit(cache=True, inline="always")
def _reflect101(i, n):
    """Mirror i into [0, n) without repeating the edge frame (numpy mode 'reflect')."""
    if n == 1:
        return 0
    period = 2 * n - 2
    r = i % period
    return r if r < n else period - r


@njit(cache=True, inline="always")
def _splitmix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _noise_frame(seed, e0, count, table, buf):
    """buf[:count] = noise values of the flat elements e0 .. e0+count-1 (see skelcl.augment.noise)."""
    g = e0 >> 2
    g_end = (e0 + count - 1) >> 2
    while g <= g_end:
        h = _splitmix64(seed + np.uint64(g) * _GOLDEN)
        for q in range(4):
            e = g * 4 + q
            if e >= e0 and e < e0 + count:
                buf[e - e0] = table[np.int64((h >> np.uint64(16 * q)) & _MASK16)]
        g += 1


@njit(cache=True, parallel=True)
def _view_kernel(
    x,
    lengths,
    win_start,
    win_len,
    offset,
    step,
    out_len,
    A,
    perm,
    noise_std,
    noise_seed,
    table,
    has_blur,
    taps,
    keep,
    out,
):
    B, T, M, V, _ = x.shape
    T_out = out.shape[1]
    R = taps.shape[1] // 2
    E = M * V * 3
    for b in prange(B):
        L = lengths[b]
        W = win_len[b]
        ws = win_start[b]
        n = out_len[b]
        a00, a01, a02 = A[b, 0, 0], A[b, 0, 1], A[b, 0, 2]
        a10, a11, a12 = A[b, 1, 0], A[b, 1, 1], A[b, 1, 2]
        a20, a21, a22 = A[b, 2, 0], A[b, 2, 1], A[b, 2, 2]
        std = noise_std[b]
        seed = noise_seed[b]
        blur = has_blur[b]
        nbuf = np.zeros(E, dtype=np.float32)
        if blur:
            z = np.empty((n, M, V, 3), dtype=np.float32)
        else:
            z = np.empty((1, M, V, 3), dtype=np.float32)
        for t in range(n):
            u = offset[b] + step[b] * t
            k0f = np.floor(u)
            w = np.float32(u - k0f)
            k0 = np.int64(k0f)
            s0 = _sym(ws + _sym(k0, W), L)
            s1 = _sym(ws + _sym(k0 + 1, W), L)
            if std != 0:
                _noise_frame(seed, t * E, E, table, nbuf)
            for m in range(M):
                for j in range(V):
                    pj = perm[b, j]
                    p0 = x[b, s0, m, pj, 0]
                    p1 = x[b, s0, m, pj, 1]
                    p2 = x[b, s0, m, pj, 2]
                    if w != 0:
                        p0 = p0 + w * (x[b, s1, m, pj, 0] - p0)
                        p1 = p1 + w * (x[b, s1, m, pj, 1] - p1)
                        p2 = p2 + w * (x[b, s1, m, pj, 2] - p2)
                    y0 = a00 * p0 + a01 * p1 + a02 * p2
                    y1 = a10 * p0 + a11 * p1 + a12 * p2
                    y2 = a20 * p0 + a21 * p1 + a22 * p2
                    if std != 0:
                        e = (m * V + j) * 3
                        y0 += std * nbuf[e]
                        y1 += std * nbuf[e + 1]
                        y2 += std * nbuf[e + 2]
                    if blur:
                        z[t, m, j, 0] = y0
                        z[t, m, j, 1] = y1
                        z[t, m, j, 2] = y2
                    else:
                        out[b, t, m, j, 0] = keep[b, j, 0] * y0
                        out[b, t, m, j, 1] = keep[b, j, 1] * y1
                        out[b, t, m, j, 2] = keep[b, j, 2] * y2
        if blur:
            for t in range(n):
                for m in range(M):
                    for j in range(V):
                        for c in range(3):
                            acc = np.float32(0.0)
                            for i in range(2 * R + 1):
                                acc += taps[b, i] * z[_reflect101(t + i - R, n), m, j, c]
                            out[b, t, m, j, c] = keep[b, j, c] * acc
        for t in range(n, T_out):
            for m in range(M):
                for j in range(V):
                    for c in range(3):
                        out[b, t, m, j, c] = 0.0


@njit(cache=True, parallel=True)
def _nonfinite_kernel(flat, lengths, bad):
    B, T, E = flat.shape
    for b in prange(B):
        bad[b] = -1
        for t in range(lengths[b]):
            acc = np.float32(0.0)
            for e in range(E):
                acc += flat[b, t, e] * np.float32(0.0)
            if acc != acc:
                bad[b] = t
                break


def nonfinite_frames(batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int64 (B,): the first frame < length holding a NaN or inf value, -1 where there is none."""
    B, T = batch.shape[:2]
    flat = np.ascontiguousarray(batch).reshape(B, T, -1)
    bad = np.empty(B, dtype=np.int64)
    _nonfinite_kernel(flat, np.ascontiguousarray(lengths, dtype=np.int64), bad)
    return bad


def apply_numba(batch: np.ndarray, lengths: np.ndarray, params: Params) -> list:
    """All views of a checked batch (see apply()): list of float32 (B, T_out, M, 25, 3)."""
    table = noise_mod.normal_table()
    B, T = batch.shape[:2]
    views = []
    for v, vp in enumerate(params.views):
        T_out = output_frames(params, v, T)
        out = np.empty((B, T_out) + batch.shape[2:], dtype=np.float32)
        _view_kernel(
            batch,
            lengths,
            params.window_start,
            params.window_len,
            vp.offset,
            vp.step,
            vp.out_len,
            spatial_matrix(vp).astype(np.float32),
            joint_permutation(vp),
            vp.noise_std,
            vp.noise_seed,
            table,
            vp.blur_sigma > 0,
            blur_taps(vp),
            keep_mask(vp),
            out,
        )
        views.append(out)
    return views
