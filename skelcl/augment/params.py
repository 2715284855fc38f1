"""Parameter sampling, separate from application, and the quantities every backend derives from it.

`sample()` draws every random choice for a batch from one numpy Generator into plain arrays (see
`ViewParams`); the backends only read them. The derived helpers here (time table, spatial matrix, keep
mask, blur taps) are what the fast backends consume; the NumPy reference in `reference.py` does not use
them, it rebuilds every op from the raw draws, so the tests compare two independent paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skelcl.augment.recipe import Recipe, load_recipe
from skelcl.data.skeleton import BODY_PARTS, FLIP_PERM, NUM_JOINTS
from skelcl.errors import SkelclError

PART_NAMES = tuple(BODY_PARTS)  # part index -> name, in BODY_PARTS order


@dataclass
class ViewParams:
    """The draws for one view; every array has the batch size B as its first axis.

    Time (window coordinates: frame u of the window is sequence frame window_start + u):
      pad           str          "edge" or "reflect": how indices outside the window / sequence are read
                                 (the crop's `pad`, recipe.Crop; see pad_index)
      crop_shift    int64 (B,)   crop shift c in [-pad, pad], pad = W // pad_ratio (0: no crop)
      resize_start  int64 (B,)   crop-resize sub-window start b (0 without crop_resize)
      resize_len    int64 (B,)   crop-resize sub-window length Lc (W without crop_resize)
      speed         int64 (B,)   tempo: output frames are `speed` window frames apart (1 or 2)
      tempo_offset  int64 (B,)   tempo: first frame of the selection, o in [0, W - speed * (frames - 1) - 1]
                                 (drawn, or centred on another view's span: recipe.Tempo.align)
      offset, step  float64 (B,) the composition of the above: output frame t reads window coordinate
                                 u(t) = offset + step * t = c + b + (o + speed * t) * r,
                                 r = (Lc - 1) / (W - 1) (1 when W == 1)
      out_len       int64 (B,)   valid output frames (frames, or the sequence length for whole-sequence views)
    Space (applied in this order after the time map):
      flip          bool (B,)        left-right mirror (joints permuted by FLIP_PERM, x negated)
      shear         float64 (B,3,3)  S (identity where not applied); x -> S x
      rotation_deg  float64 (B,3)    angles about x, y, z in degrees; x -> Rz Ry Rx x
      noise_std     float32 (B,)     noise standard deviation (0: no noise)
      noise_seed    uint64 (B,)      seed of the counter-based noise (skelcl.augment.noise)
      blur_sigma    float64 (B,)     Gaussian blur along time (0: no blur); blur_size taps
      axis          int64 (B,)       coordinate zeroed by the axis mask (-1: none)
      joint_keep    bool (B,25)      False for joints zeroed by the joint mask
      part          int64 (B,)       body part zeroed (index into PART_NAMES; -1: none)
    """

    name: str
    frames: int | None
    pad: str
    crop_shift: np.ndarray
    resize_start: np.ndarray
    resize_len: np.ndarray
    speed: np.ndarray
    tempo_offset: np.ndarray
    offset: np.ndarray
    step: np.ndarray
    out_len: np.ndarray
    flip: np.ndarray
    shear: np.ndarray
    rotation_deg: np.ndarray
    noise_std: np.ndarray
    noise_seed: np.ndarray
    blur_sigma: np.ndarray
    blur_size: int
    axis: np.ndarray
    joint_keep: np.ndarray
    part: np.ndarray


@dataclass
class Params:
    """All draws for one batch: the shared window and one ViewParams per view of the recipe.

    lengths       int64 (B,)  the sequence lengths the draws were made for
    window_start  int64 (B,)  first sequence frame of the window (shared by all views)
    window_len    int64 (B,)  W: the recipe's window, or the sequence length for whole-sequence recipes
    """

    recipe: Recipe
    lengths: np.ndarray
    window_start: np.ndarray
    window_len: np.ndarray
    views: list

    @property
    def batch_size(self) -> int:
        return len(self.lengths)


def check_lengths(lengths, T: int | None = None) -> np.ndarray:
    """int64 (B,) lengths, or SkelclError naming the first bad entry (length < 1, or > T when T is given)."""
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.size == 0:
        raise SkelclError(f"augment: lengths must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        whole = (
            np.issubdtype(arr.dtype, np.floating)
            and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        )
        if not whole:
            raise SkelclError(f"augment: lengths must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr < 1)
    if bad.size:
        i = int(bad[0])
        raise SkelclError(f"augment: sequence {i} of the batch has length {arr[i]}; each needs >= 1 frame")
    if T is not None:
        bad = np.flatnonzero(arr > T)
        if bad.size:
            i = int(bad[0])
            raise SkelclError(f"augment: sequence {i} has length {arr[i]}, but the batch holds {T} frames")
    return arr


def _apply_mask(rng, p, B) -> np.ndarray:
    return rng.random(B) < p


def sample(recipe, lengths, rng) -> Params:
    """Draw every random parameter of `recipe` for a batch of sequences with these lengths.

    recipe: a Recipe or a name/path for load_recipe; lengths: (B,) ints >= 1; rng: np.random.Generator.
    The draws depend only on (recipe, lengths, the Generator's state): same seed, same Params.
    """
    recipe = load_recipe(recipe)
    if not isinstance(rng, np.random.Generator):
        raise SkelclError(f"augment.sample: rng must be a numpy Generator, got {type(rng).__name__}")
    L = check_lengths(lengths)
    B = len(L)
    if recipe.window is None:
        W = L.copy()
        start = np.zeros(B, dtype=np.int64)
    else:
        W = np.full(B, recipe.window, dtype=np.int64)
        start = rng.integers(0, np.maximum(L - W, 0) + 1).astype(np.int64)

    paired = [i for i, v in enumerate(recipe.views) if v.op("tempo") is not None and v.op("tempo").pair]
    pair_speed = {}
    if paired:
        speeds = np.asarray(recipe.views[paired[0]].op("tempo").speeds, dtype=np.int64)
        perm = np.argsort(rng.random((B, len(paired))), axis=1)
        for k, i in enumerate(paired):
            pair_speed[i] = speeds[perm[:, k]]

    views = []
    for vi, view in enumerate(recipe.views):
        ops = view.ops
        frames = view.frames
        T_out = L if frames is None else np.full(B, frames, dtype=np.int64)

        c = np.zeros(B, dtype=np.int64)
        if "crop" in ops:
            op = ops["crop"]
            pad = W // op.pad_ratio
            c = rng.integers(-pad, pad + 1).astype(np.int64)
            c[~_apply_mask(rng, op.p, B)] = 0

        b = np.zeros(B, dtype=np.int64)
        Lc = W.copy()
        if "crop_resize" in ops:
            op = ops["crop_resize"]
            ratio = rng.uniform(op.ratio[0], op.ratio[1], B)
            Lc_draw = np.clip(np.floor(W * ratio).astype(np.int64), 1, W)
            b_draw = rng.integers(0, W - Lc_draw + 1).astype(np.int64)
            on = _apply_mask(rng, op.p, B)
            Lc = np.where(on, Lc_draw, W)
            b = np.where(on, b_draw, 0)

        s = np.ones(B, dtype=np.int64)
        o = np.zeros(B, dtype=np.int64)
        if "tempo" in ops:
            op = ops["tempo"]
            if vi in pair_speed:
                s = pair_speed[vi].copy()
            elif op.same_as is not None:  # the named (earlier) view's speed, per sample
                s = next(v for v in views if v.name == op.same_as).speed.copy()
            else:
                s = np.asarray(op.speeds, dtype=np.int64)[rng.integers(0, len(op.speeds), B)]
            o = rng.integers(0, W - s * (T_out - 1)).astype(np.int64)
            if op.align is not None:  # centred on the named view's time span (see recipe.Tempo)
                ref = next(v for v in views if v.name == op.align)
                centre = ref.tempo_offset + ref.speed * (ref.out_len - 1) / 2
                o = np.clip(np.round(centre - s * (T_out - 1) / 2), 0, W - s * (T_out - 1) - 1)
                o = o.astype(np.int64)

        r = np.where(W > 1, (Lc - 1) / np.maximum(W - 1, 1), 1.0)
        offset = c + b + o * r
        step = s * r

        flip = np.zeros(B, dtype=bool)
        if "flip" in ops:
            flip = _apply_mask(rng, ops["flip"].p, B)

        shear = np.tile(np.eye(3), (B, 1, 1))
        if "shear" in ops:
            op = ops["shear"]
            off = rng.uniform(-op.r, op.r, (B, 6))
            on = _apply_mask(rng, op.p, B)
            rows, cols = np.nonzero(~np.eye(3, dtype=bool))
            shear[:, rows, cols] = np.where(on[:, None], off, 0.0)

        angles = np.zeros((B, 3))
        if "rotate" in ops:
            op = ops["rotate"]
            main = rng.integers(0, 3, B)
            angles = rng.uniform(-op.other_deg, op.other_deg, (B, 3))
            angles[np.arange(B), main] = rng.uniform(-op.main_deg, op.main_deg, B)
            angles[~_apply_mask(rng, op.p, B)] = 0.0

        noise_std = np.zeros(B, dtype=np.float32)
        noise_seed = np.zeros(B, dtype=np.uint64)
        if "noise" in ops:
            op = ops["noise"]
            noise_seed = rng.integers(0, 2**64, B, dtype=np.uint64)
            noise_std = np.where(_apply_mask(rng, op.p, B), op.std, 0.0).astype(np.float32)

        blur_sigma = np.zeros(B)
        blur_size = 1
        if "blur" in ops:
            op = ops["blur"]
            blur_size = int(op.size)
            sig = rng.uniform(op.sigma[0], op.sigma[1], B)
            blur_sigma = np.where(_apply_mask(rng, op.p, B), sig, 0.0)

        axis = np.full(B, -1, dtype=np.int64)
        if "axis_mask" in ops:
            a = rng.integers(0, 3, B)
            axis = np.where(_apply_mask(rng, ops["axis_mask"].p, B), a, -1).astype(np.int64)

        joint_keep = np.ones((B, NUM_JOINTS), dtype=bool)
        if "joint_mask" in ops:
            op = ops["joint_mask"]
            n = rng.integers(op.count[0], op.count[1] + 1, B)
            order = np.argsort(rng.random((B, NUM_JOINTS)), axis=1)
            n[~_apply_mask(rng, op.p, B)] = 0
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(NUM_JOINTS)[None, :].repeat(B, 0), axis=1)
            joint_keep = rank >= n[:, None]

        part = np.full(B, -1, dtype=np.int64)
        if "part_mask" in ops:
            pi = rng.integers(0, len(PART_NAMES), B)
            part = np.where(_apply_mask(rng, ops["part_mask"].p, B), pi, -1).astype(np.int64)

        views.append(
            ViewParams(
                name=view.name,
                frames=frames,
                pad=view.pad,
                crop_shift=c,
                resize_start=b,
                resize_len=Lc,
                speed=s,
                tempo_offset=o,
                offset=offset.astype(np.float64),
                step=step.astype(np.float64),
                out_len=T_out.astype(np.int64),
                flip=flip,
                shear=shear,
                rotation_deg=angles,
                noise_std=noise_std,
                noise_seed=noise_seed,
                blur_sigma=blur_sigma,
                blur_size=blur_size,
                axis=axis,
                joint_keep=joint_keep,
                part=part,
            )
        )
    return Params(recipe=recipe, lengths=L, window_start=start, window_len=W, views=views)


# ---------------------------------------------------------------------------------------------------------
# Derived quantities used by the fast backends (and by the pretraining loader for frame alignment).


def reflect_symmetric(i: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mirror integer indices into [0, n) repeating the edge frame (..., 1, 0 | 0, 1, ..., n-1 | n-1, ...)."""
    r = np.mod(i, 2 * n)
    return np.where(r < n, r, 2 * n - 1 - r)


def edge_index(i: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Clamp integer indices into [0, n), repeating the edge frame (0, 0 | 0, 1, ..., n-1 | n-1, n-1)."""
    return np.clip(i, 0, np.asarray(n) - 1)


def pad_index(i: np.ndarray, n: np.ndarray, mode: str) -> np.ndarray:
    """Indices i read from a length-n axis padded with `mode`: "edge" (edge_index) or "reflect"
    (reflect_symmetric)."""
    return reflect_symmetric(i, n) if mode == "reflect" else edge_index(i, n)


def output_frames(params: Params, view: int, T: int | None = None) -> int:
    """T_out of a view: its fixed `frames`, or (whole-sequence views) T if given, else max(lengths)."""
    vp = params.views[view]
    if vp.frames is not None:
        return vp.frames
    return int(T) if T is not None else int(params.lengths.max())


def time_table(params: Params, view: int, T: int | None = None):
    """The interpolation table of one view: out[b, t] = x[b, i0] + w * (x[b, i1] - x[b, i0]).

    Frame u of the window is sequence frame window_start + u; indices outside the window, then outside
    [0, length), are padded with the view's mode (pad_index). Returns i0, i1 int64 (B, T_out) sequence
    frame indices, w float32 (B, T_out) in [0, 1), and valid
    bool (B, T_out) (False for t >= out_len: those output frames are zero; their i0 = i1 = 0, w = 0).
    """
    vp = params.views[view]
    T_out = output_frames(params, view, T)
    t = np.arange(T_out, dtype=np.float64)
    u = vp.offset[:, None] + vp.step[:, None] * t[None, :]
    k0 = np.floor(u)
    w = (u - k0).astype(np.float32)
    k0 = k0.astype(np.int64)
    W = params.window_len[:, None]
    L = params.lengths[:, None]
    start = params.window_start[:, None]
    i0 = pad_index(start + pad_index(k0, W, vp.pad), L, vp.pad)
    i1 = pad_index(start + pad_index(k0 + 1, W, vp.pad), L, vp.pad)
    valid = np.arange(T_out)[None, :] < vp.out_len[:, None]
    i0 = np.where(valid, i0, 0)
    i1 = np.where(valid, i1, 0)
    w = np.where(valid, w, np.float32(0))
    return i0, i1, w, valid


def source_frames(params: Params, view: int, T: int | None = None) -> np.ndarray:
    """int64 (B, T_out): the sequence frame nearest to each output frame (-1 for padding frames).

    For temporal alignment of snippets between views: output frame t of view v shows (about) sequence
    frame source_frames(params, v)[b, t].
    """
    i0, i1, w, valid = time_table(params, view, T)
    return np.where(valid, np.where(w < 0.5, i0, i1), -1)


def reversed_share(params: Params, views=None) -> float:
    """Share of output frames that play backwards: frames t >= 1 of a view (t < out_len) whose source
    position p(t) = i0 + w (i1 - i0) (time_table, in sequence frames) is below p(t - 1), over all samples
    and the given views (default all). 0 for "edge" padding (p never decreases); > 0 with "reflect" where a
    view reaches past the window or a short sequence's end."""
    views = range(len(params.views)) if views is None else views
    back = total = 0
    for v in views:
        i0, i1, w, valid = time_table(params, v)
        pos = i0 + w.astype(np.float64) * (i1 - i0)
        pairs = valid[:, 1:]  # frame t and t - 1 both valid
        back += int(((pos[:, 1:] < pos[:, :-1]) & pairs).sum())
        total += int(pairs.sum())
    return back / max(total, 1)


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """float64 (B, 3, 3): Rz(c) Ry(b) Rx(a) for angles (a, b, c) in degrees about x, y, z."""
    a, b, c = np.deg2rad(angles_deg).T
    B = len(a)
    Rx = np.zeros((B, 3, 3))
    Ry = np.zeros((B, 3, 3))
    Rz = np.zeros((B, 3, 3))
    Rx[:, 0, 0] = 1
    Rx[:, 1, 1] = np.cos(a)
    Rx[:, 1, 2] = -np.sin(a)
    Rx[:, 2, 1] = np.sin(a)
    Rx[:, 2, 2] = np.cos(a)
    Ry[:, 1, 1] = 1
    Ry[:, 0, 0] = np.cos(b)
    Ry[:, 0, 2] = np.sin(b)
    Ry[:, 2, 0] = -np.sin(b)
    Ry[:, 2, 2] = np.cos(b)
    Rz[:, 2, 2] = 1
    Rz[:, 0, 0] = np.cos(c)
    Rz[:, 0, 1] = -np.sin(c)
    Rz[:, 1, 0] = np.sin(c)
    Rz[:, 1, 1] = np.cos(c)
    return Rz @ Ry @ Rx


def spatial_matrix(vp: ViewParams) -> np.ndarray:
    """float64 (B, 3, 3): A = R S F, the flip's x mirror F, then shear S, then rotation R (x -> A x)."""
    F = np.tile(np.eye(3), (len(vp.flip), 1, 1))
    F[vp.flip, 0, 0] = -1.0
    return rotation_matrix(vp.rotation_deg) @ vp.shear @ F


def joint_permutation(vp: ViewParams) -> np.ndarray:
    """int64 (B, 25): output joint j reads input joint perm[b, j] (FLIP_PERM where flipped)."""
    perm = np.tile(np.arange(NUM_JOINTS), (len(vp.flip), 1))
    perm[vp.flip] = FLIP_PERM
    return perm


def keep_mask(vp: ViewParams) -> np.ndarray:
    """float32 (B, 25, 3): 0 where the axis, joint or part masks zero a coordinate, else 1."""
    B = len(vp.axis)
    keep = np.ones((B, NUM_JOINTS, 3), dtype=np.float32)
    rows = np.flatnonzero(vp.axis >= 0)
    keep[rows, :, vp.axis[rows]] = 0
    keep[~vp.joint_keep] = 0
    for pi, name in enumerate(PART_NAMES):
        keep[np.ix_(vp.part == pi, BODY_PARTS[name])] = 0
    return keep


def blur_taps(vp: ViewParams) -> np.ndarray:
    """float32 (B, size): normalized exp(-k^2 / (2 sigma^2)), k = -r..r; a unit impulse where sigma is 0."""
    size = vp.blur_size
    r = size // 2
    k = np.arange(-r, r + 1, dtype=np.float64)
    sig = vp.blur_sigma[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.exp(-(k[None, :] ** 2) / (2 * np.where(sig > 0, sig, 1.0) ** 2))
    g = np.where(sig > 0, g, (k == 0)[None, :].astype(np.float64))
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)
