"""The numba backend: one fused, compiled pass per view, parallel over the samples of the batch.

Per sample and view the kernel first derives, from the raw draws, the matrix A = R S F (rotation, shear,
flip mirror), the joint permutation, the keep mask and the blur taps (the formulas of
skelcl.augment.params, evaluated inside the parallel loop). Then, for output frame t, it computes the
window coordinate u = offset + step * t, maps the two neighbouring integer frames into the window, then
the sequence (padding: edge frame repeated, or mirrored for "reflect" views), interpolates linearly,
applies A to every joint, permutes the joints if flipped, adds the counter-based noise and multiplies by
the keep mask (axis, joint and part masks), one frame row at a time. Views with a Gaussian blur write A x
+ noise to a per-sample scratch buffer first and filter it along time in a second pass (the masks are
constant over time, so they commute with the blur and are applied last). All views of a sample run in the
same task, so its frames stay in cache.

Compiled functions use cache=True: the first call in a fresh environment compiles (a few seconds), later
processes load the machine code from __pycache__.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
from numba import njit, parallel_chunksize, prange

from skelcl.augment import noise as noise_mod
from skelcl.augment.params import PART_NAMES, Params, output_frames
from skelcl.data.skeleton import BODY_PARTS, FLIP_PERM, NUM_JOINTS

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
def _pad(i, n, reflect):
    """Index i of a length-n axis: mirrored (reflect, see _sym) or clamped to [0, n - 1] (edge)."""
    if reflect:
        return _sym(i, n)
    return min(max(i, 0), n - 1)


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
def _noise_fill(seed, count, table, buf):
    """buf[e] = noise value of flat element e, e < count (skelcl.augment.noise); len(buf) >= count + 3."""
    for g in range((count + 3) >> 2):
        h = _splitmix64(seed + np.uint64(g) * _GOLDEN)
        buf[4 * g] = table[np.int64(h & _MASK16)]
        buf[4 * g + 1] = table[np.int64((h >> np.uint64(16)) & _MASK16)]
        buf[4 * g + 2] = table[np.int64((h >> np.uint64(32)) & _MASK16)]
        buf[4 * g + 3] = table[np.int64((h >> np.uint64(48)) & _MASK16)]


@njit(cache=True)
def _mul3(P, Q):
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                out[i, j] += P[i, k] * Q[k, j]
    return out


@njit(cache=True)
def _matrix(shear, deg, flip):
    """float32 (3, 3): A = Rz Ry Rx S F (see params.spatial_matrix)."""
    a, b, c = np.deg2rad(deg[0]), np.deg2rad(deg[1]), np.deg2rad(deg[2])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    Ry = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
    Rz = np.array([[np.cos(c), -np.sin(c), 0.0], [np.sin(c), np.cos(c), 0.0], [0.0, 0.0, 1.0]])
    A = _mul3(_mul3(_mul3(Rz, Ry), Rx), shear)
    if flip:
        for i in range(3):
            A[i, 0] = -A[i, 0]
    return A.astype(np.float32)


@njit(cache=True)
def _taps(sigma, size):
    """float32 (size,): normalized Gaussian taps (see params.blur_taps)."""
    r = size // 2
    g = np.empty(size, dtype=np.float64)
    for i in range(size):
        k = i - r
        g[i] = np.exp(-(k * k) / (2.0 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


@njit(cache=True)
def _augment_one(
    x,
    L,
    ws,
    W,
    reflect,
    offset,
    step,
    n,
    shear,
    deg,
    flip,
    std,
    seed,
    sigma,
    size,
    axis,
    joint_keep,
    part,
    consts,
    out,
):
    """One view of one sample: x (T, E) -> out (T_out, E), E = M * 25 * 3 values per frame.

    Per output frame: interpolate the two source rows, apply A to every joint (contiguous xyz triples),
    permute joints if flipped, add noise, mask (or, with blur, store for the blur pass).
    """
    flip_perm, part_table, table = consts
    T_out, E = out.shape
    Q = E // 3
    V = flip_perm.shape[0]
    A = _matrix(shear, deg, flip)
    a00, a01, a02 = A[0, 0], A[0, 1], A[0, 2]
    a10, a11, a12 = A[1, 0], A[1, 1], A[1, 2]
    a20, a21, a22 = A[2, 0], A[2, 1], A[2, 2]
    pm = np.empty(Q, dtype=np.int64)
    kp = np.ones(E, dtype=np.float32)
    for q in range(Q):
        m, j = q // V, q % V
        pm[q] = (m * V + (flip_perm[j] if flip else j)) * 3
        for c in range(3):
            if c == axis or not joint_keep[j] or (part >= 0 and part_table[part, j]):
                kp[3 * q + c] = 0.0
    blur = sigma > 0
    taps = _taps(sigma, size) if blur else np.ones(1, dtype=np.float32)
    K = taps.shape[0]
    R = K // 2
    noisy = std != 0
    nbuf = np.empty(n * E + 4 if noisy else 1, dtype=np.float32)
    if noisy:
        _noise_fill(seed, n * E, table, nbuf)
    z = np.empty((n if blur else 1, E), dtype=np.float32)
    row = np.empty(E, dtype=np.float32)
    tmp = np.empty(E, dtype=np.float32)
    for t in range(n):
        u = offset + step * t
        k0f = np.floor(u)
        w = np.float32(u - k0f)
        k0 = np.int64(k0f)
        x0 = x[_pad(ws + _pad(k0, W, reflect), L, reflect)]
        if w != 0:
            x1 = x[_pad(ws + _pad(k0 + 1, W, reflect), L, reflect)]
            for e in range(E):
                row[e] = x0[e] + w * (x1[e] - x0[e])
            src = row
        else:
            src = x0
        dst = z[t] if blur else out[t]
        tgt = tmp if flip else dst
        for q in range(Q):
            p0 = src[3 * q]
            p1 = src[3 * q + 1]
            p2 = src[3 * q + 2]
            tgt[3 * q] = a00 * p0 + a01 * p1 + a02 * p2
            tgt[3 * q + 1] = a10 * p0 + a11 * p1 + a12 * p2
            tgt[3 * q + 2] = a20 * p0 + a21 * p1 + a22 * p2
        if flip:
            for q in range(Q):
                i = pm[q]
                dst[3 * q] = tmp[i]
                dst[3 * q + 1] = tmp[i + 1]
                dst[3 * q + 2] = tmp[i + 2]
        if noisy:
            e0 = t * E
            for e in range(E):
                dst[e] += std * nbuf[e0 + e]
        if not blur:
            for e in range(E):
                dst[e] *= kp[e]
    if blur:  # the taps are symmetric: g[R - k] == g[R + k], so pair the two frames k apart
        for t in range(n):
            dst = out[t]
            zt = z[t]
            g0 = taps[R]
            for e in range(E):
                dst[e] = g0 * zt[e]
            for k in range(1, R + 1):
                g = taps[R + k]
                if g == 0:
                    break
                lo = t - k
                hi = t + k
                za = z[lo if lo >= 0 else _reflect101(lo, n)]
                zb = z[hi if hi < n else _reflect101(hi, n)]
                for e in range(E):
                    dst[e] += g * (za[e] + zb[e])
            for e in range(E):
                dst[e] *= kp[e]
    for t in range(n, T_out):
        dst = out[t]
        for e in range(E):
            dst[e] = 0.0


@njit(cache=True, parallel=True)
def _views_kernel(x, lengths, win_start, win_len, reflect, time, spatial, noise, masks, blur_size, consts,
                  out):  # fmt: skip
    """nv views with the same T_out for the whole batch, parallel over samples (all views of a sample in
    one task, so its source frames stay in cache). x (B, T, E); out (nv, B, T_out, E); reflect (nv,) bool
    (the view's pad mode is "reflect"); per-view draws
    stacked (nv, B, ...): time = (offset, step, out_len), spatial = (shear, rotation_deg, flip),
    noise = (noise_std, noise_seed, blur_sigma), masks = (axis, joint_keep, part)."""
    offset, step, out_len = time
    shear, deg, flip = spatial
    noise_std, noise_seed, blur_sigma = noise
    axis, joint_keep, part = masks
    nv = out.shape[0]
    B = x.shape[0]
    for b in prange(B):
        for v in range(nv):
            _augment_one(
                x[b],
                lengths[b],
                win_start[b],
                win_len[b],
                reflect[v],
                offset[v, b],
                step[v, b],
                out_len[v, b],
                shear[v, b],
                deg[v, b],
                flip[v, b],
                noise_std[v, b],
                noise_seed[v, b],
                blur_sigma[v, b],
                blur_size[v],
                axis[v, b],
                joint_keep[v, b],
                part[v, b],
                consts,
                out[v, b],
            )


@njit(cache=True, parallel=True)
def _nonfinite_kernel(bits, lengths, bad):
    """bits: the batch viewed as int32 (B, T, E); a float32 is NaN or inf iff its exponent bits are all 1."""
    B, T, E = bits.shape
    for b in prange(B):
        bad[b] = -1
        for t in range(lengths[b]):
            worst = np.int32(0)
            for e in range(E):
                worst = max(worst, bits[b, t, e] & np.int32(0x7FFFFFFF))
            if worst >= np.int32(0x7F800000):
                bad[b] = t
                break


@njit(cache=True, parallel=True)
def _noise_rows(seeds, table, out):
    for b in prange(out.shape[0]):
        _noise_fill(seeds[b], out.shape[1] - 4, table, out[b])


def noise_values(seeds: np.ndarray, count: int) -> np.ndarray:
    """float32 (B, count): the first `count` noise values of every seed (skelcl.augment.noise)."""
    seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
    out = np.empty((len(seeds), count + 4), dtype=np.float32)
    _noise_rows(seeds, noise_mod.normal_table(), out)
    return out[:, :count]


def nonfinite_frames(batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int64 (B,): the first frame < length holding a NaN or inf value, -1 where there is none."""
    B, T = batch.shape[:2]
    bits = np.ascontiguousarray(batch).reshape(B, T, -1).view(np.int32)
    bad = np.empty(B, dtype=np.int64)
    _nonfinite_kernel(bits, np.ascontiguousarray(lengths, dtype=np.int64), bad)
    return bad


def _consts():
    """(FLIP_PERM, part membership (parts, 25) bool, noise table) for the kernel."""
    table = np.zeros((len(PART_NAMES), NUM_JOINTS), dtype=np.bool_)
    for i, name in enumerate(PART_NAMES):
        table[i, list(BODY_PARTS[name])] = True
    return np.asarray(FLIP_PERM, dtype=np.int64), table, noise_mod.normal_table()


# Output buffers kept for reuse. Writing into fresh memory makes the OS zero every page first, which costs
# about a quarter of the kernel time; a buffer is handed out again only when nothing references it any
# more (no array, view or tensor of an earlier result is alive), which CPython's reference count tells.
_POOL: dict = {}
_POOL_LOCK = threading.Lock()
_POOL_PER_SHAPE = 2
_POOL_SHAPES = 8


def _output_buffer(shape: tuple) -> np.ndarray:
    with _POOL_LOCK:
        bufs = _POOL.get(shape)
        if bufs is None:
            if len(_POOL) >= _POOL_SHAPES:
                _POOL.clear()
            bufs = _POOL[shape] = []
        for buf in bufs:
            # references: the pool's list, the loop variable and getrefcount's own argument
            if sys.getrefcount(buf) == 3:
                return buf
        buf = np.empty(shape, dtype=np.float32)
        if len(bufs) < _POOL_PER_SHAPE:
            bufs.append(buf)
        return buf


def apply_numba(batch: np.ndarray, lengths: np.ndarray, params: Params, chunksize: int = 2) -> list:
    """All views of a checked batch (see apply()): list of float32 (B, T_out, M, 25, 3).

    Views with the same T_out run in one parallel pass; samples are handed to the threads in chunks of
    `chunksize` (dynamic scheduling keeps both cores busy when another process shares one). The views
    share one buffer, reused by a later call once no view of it is referenced any more.
    """
    consts = _consts()
    B, T = batch.shape[:2]
    flat = batch.reshape(B, T, -1)
    groups = {}
    for v in range(len(params.views)):
        groups.setdefault(output_frames(params, v, T), []).append(v)
    views = [None] * len(params.views)
    for T_out, idx in groups.items():
        vps = [params.views[v] for v in idx]

        def stack(name, vps=vps):
            return np.stack([getattr(vp, name) for vp in vps])

        out = _output_buffer((len(idx), B, T_out) + batch.shape[2:])
        with parallel_chunksize(chunksize):
            _views_kernel(
                flat,
                lengths,
                params.window_start,
                params.window_len,
                np.array([vp.pad == "reflect" for vp in vps], dtype=np.bool_),
                (stack("offset"), stack("step"), stack("out_len")),
                (stack("shear"), stack("rotation_deg"), stack("flip")),
                (stack("noise_std"), stack("noise_seed"), stack("blur_sigma")),
                (stack("axis"), stack("joint_keep"), stack("part")),
                np.array([vp.blur_size for vp in vps], dtype=np.int64),
                consts,
                out.reshape(len(idx), B, T_out, -1),
            )
        for k, v in enumerate(idx):
            views[v] = out[k]
    return views
