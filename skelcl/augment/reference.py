"""The plain NumPy reference: one sample at a time, one op after another, in float64 (tests only).

It rebuilds every op from the raw draws in Params (window start, crop shift, crop-resize window, tempo,
angles, ...) the literal way (pad, slice, np.interp, matrix products), without the derived time table or
composed matrix the fast backends use, so comparing them checks both paths.
"""

from __future__ import annotations

import numpy as np

from skelcl.augment import noise as noise_mod
from skelcl.augment.params import PART_NAMES, Params, output_frames
from skelcl.data.skeleton import BODY_PARTS, FLIP_PERM


def _interp_time(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of x (n, ...) along axis 0 at fractional frame positions pos."""
    flat = x.reshape(len(x), -1)
    grid = np.arange(len(x), dtype=np.float64)
    out = np.stack([np.interp(pos, grid, flat[:, c]) for c in range(flat.shape[1])], axis=1)
    return out.reshape((len(pos),) + x.shape[1:])


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    if axis == 0:
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == 1:
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def augment_one(x: np.ndarray, length: int, params: Params, b: int, view: int, T_out: int) -> np.ndarray:
    """View `view` of sample b: x (T, M, 25, 3) -> float32 (T_out, M, 25, 3)."""
    vp = params.views[view]
    ops = params.recipe.views[view].ops
    seq = np.asarray(x[:length], dtype=np.float64)
    W = int(params.window_len[b])
    ws = int(params.window_start[b])
    zeros = ((0, 0),) * (seq.ndim - 1)

    # Window: W frames from ws; a too short sequence is extended by repeating its last frame ("edge") or
    # by mirroring ("reflect", the mirrored frames run backwards).
    reflect = vp.pad == "reflect"
    ext = np.pad(seq, ((0, max(0, ws + W - length)),) + zeros, mode="symmetric" if reflect else "edge")
    win = ext[ws : ws + W]

    if "crop" in ops:
        pad = W // ops["crop"].pad_ratio
        if reflect:
            head, tail = win[:pad][::-1], win[W - pad :][::-1]
        else:
            head, tail = np.repeat(win[:1], pad, axis=0), np.repeat(win[-1:], pad, axis=0)
        padded = np.concatenate([head, win, tail])
        c = int(vp.crop_shift[b])
        win = padded[pad + c : pad + c + W]
    if "crop_resize" in ops:
        s0, n = int(vp.resize_start[b]), int(vp.resize_len[b])
        win = _interp_time(win[s0 : s0 + n], np.linspace(0.0, n - 1, W))
    n_out = int(vp.out_len[b])
    s, o = int(vp.speed[b]), int(vp.tempo_offset[b])
    y = win[o : o + s * (n_out - 1) + 1 : s]
    assert len(y) == n_out

    if vp.flip[b]:
        y = y[:, :, FLIP_PERM].copy()
        y[..., 0] *= -1
    y = y @ vp.shear[b].T
    for axis in range(3):
        y = y @ _rot(axis, vp.rotation_deg[b, axis]).T
    if vp.noise_std[b] > 0:
        count = T_out * np.prod(y.shape[1:])
        n = noise_mod.gaussian(vp.noise_seed[b], count)[: y.size].reshape(y.shape)
        y = y + float(vp.noise_std[b]) * n.astype(np.float64)
    if vp.blur_sigma[b] > 0:
        r = vp.blur_size // 2
        k = np.arange(-r, r + 1)
        g = np.exp(-(k**2) / (2.0 * vp.blur_sigma[b] ** 2))
        g /= g.sum()
        padded = np.pad(y, ((r, r),) + zeros, mode="reflect")
        y = sum(g[i] * padded[i : i + n_out] for i in range(len(k)))
    if vp.axis[b] >= 0:
        y[..., vp.axis[b]] = 0
    y[:, :, ~vp.joint_keep[b]] = 0
    if vp.part[b] >= 0:
        y[:, :, list(BODY_PARTS[PART_NAMES[vp.part[b]]])] = 0

    out = np.zeros((T_out,) + y.shape[1:], dtype=np.float32)
    out[:n_out] = y
    return out


def apply_reference(batch: np.ndarray, lengths: np.ndarray, params: Params) -> list:
    """All views, sample by sample: list of float32 (B, T_out, M, 25, 3)."""
    views = []
    for v in range(len(params.views)):
        T_out = output_frames(params, v, batch.shape[1])
        out = np.zeros((batch.shape[0], T_out) + batch.shape[2:], dtype=np.float32)
        for b in range(batch.shape[0]):
            out[b] = augment_one(batch[b], int(lengths[b]), params, b, v, T_out)
        views.append(out)
    return views
