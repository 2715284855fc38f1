"""Snippet augmentation: parameter sampling separate from application, three backends that agree.

    params = skelcl.augment.sample(recipe, lengths, rng)      # recipe: Recipe | "skeletonclr" | "rvtclr"
                                                              #   | "aimclr" | "finetune" | a YAML path
    views = skelcl.augment.apply(batch, lengths, params, backend="numba")   # or "dali", "numpy"
    recipe = skelcl.augment.load_recipe(name_or_path)

batch: float32 (B, T, M, 25, 3), zero-padded; lengths: (B,) ints, 1 <= length <= T (frames past a
sequence's length are never read). views: one float32 (B, T_out, M, 25, 3) per view of the recipe, in the
recipe's order. T_out is the view's `frames` (150 in the pretraining recipes), or T for whole-sequence
views (recipe window null, as in "finetune"), whose frames past the sequence's length are zero.

Views of the built-in recipes (skelcl/configs/augment.yaml):
  "skeletonclr": index 0 = query, 1 = key at the SAME tempo; "rvtclr": 0 = query, 1 = key at the same
  tempo, 2 = key at the other tempo; "aimclr": 0 = query, 1 = key at the other tempo, 2 = extreme view.
  Each sample gets one 300-frame window (random start; sequences shorter than 300 frames are extended by
  repeating their last frame); every view is a tempo view of 150 frames: speed 1 (150 consecutive frames
  at a random offset o in [0, 150]) or speed 2 (every 2nd frame, o in {0, 1}). Tempo op settings: `pair:
  true` views share one random permutation of the speeds per sample (so they differ), `same_as: VIEW`
  copies VIEW's speed (own offset), `align: VIEW` centres the view on VIEW's time span (rvtclr's keys on
  the query); params.views[v].speed tells. Each view also gets its own edge-padded temporal crop (shift in
  [-50, 50]) and shear (r = 0.5). The AimCLR extreme view adds flip, rotation, Gaussian noise, temporal
  Gaussian blur and an axis mask, at a random tempo.
  "finetune": one view, the whole sequence at the batch's length T (labels stay aligned), flip + shear.

Ops, applied in this order: time map (crop, crop_resize, tempo) -> flip -> shear -> rotate -> noise ->
blur -> axis mask -> joint mask / part mask.
  time map: output frame t reads window coordinate u(t) = offset + step * t (ViewParams.offset, .step,
    composed from the crop shift c, crop-resize window (b, Lc), tempo (speed s, offset o)); integer
    coordinates outside [0, W) are padded into the window, window frame i is sequence frame
    window_start + i, padded again into [0, length) when the window runs past the end of a short
    sequence; fractional u interpolates linearly between the neighbouring frames. Padding (the crop's
    `pad`): "edge" (default) repeats the first / last frame, so time never runs backwards; "reflect"
    (only when a recipe asks: `crop: {pad_ratio: 6, pad: reflect}`) mirrors, edge frame repeated, and the
    mirrored frames play backwards. reversed_share(params) is the share of output frames whose source
    frame lies before that of the previous output frame (0 with "edge").
  flip: joints permuted by skelcl.data.skeleton.FLIP_PERM and x negated.  shear: x -> S x, S = I with
    off-diagonals U(-r, r).  rotate: x -> Rz Ry Rx x (main axis +-30 deg, the others +-1 deg).
  noise: + std * n on every coordinate of the valid output frames (an absent, all-zero second body
    included, as in AimCLR), n from a counter-based hash of a per-sample seed (skelcl.augment.noise),
    identical in every backend.
  blur: normalized Gaussian taps along time over the valid frames, mirrored at the ends without
    repeating the edge frame (numpy 'reflect').  axis / joint / part mask: those coordinates -> 0.
  Every op has a probability p; a sample that does not get it sees the identity (still drawn, so the
  draws do not depend on earlier coin flips).

Params (see params.ViewParams for every array): params.window_start / window_len (B,) and, per view,
params.views[v]: crop_shift, resize_start, resize_len, speed, tempo_offset, offset, step, out_len, flip,
shear (B,3,3), rotation_deg (B,3), noise_std, noise_seed, blur_sigma, axis, joint_keep (B,25), part.
Frame alignment between views: time_table(params, v) gives the exact interpolation table (source frames
i0, i1 and weight w per output frame) and source_frames(params, v) the nearest source frame of every
output frame (in sequence coordinates; -1 for padding frames).

Bad input: a length < 1 or > T, NaN/inf in a valid frame, a non-float32 batch or params sampled for other
lengths raise SkelclError before any kernel runs. Rules instead of errors: a window or crop longer than the
sequence pads the sequence (see time map); a one-frame sequence repeats its frame.

Backends: "numba" (default; fused, parallel over samples), "dali" (a DALI pipeline fed by an external
source; CPU operators without a GPU), "numpy" (per-sample float64 reference, for tests).
"""

from skelcl.augment.apply import BACKENDS, apply, check_batch
from skelcl.augment.params import (
    PART_NAMES,
    Params,
    ViewParams,
    reversed_share,
    sample,
    source_frames,
    time_table,
)
from skelcl.augment.recipe import OP_ORDER, Recipe, View, load_recipe

__all__ = [
    "BACKENDS",
    "OP_ORDER",
    "PART_NAMES",
    "Params",
    "Recipe",
    "View",
    "ViewParams",
    "apply",
    "check_batch",
    "load_recipe",
    "reversed_share",
    "sample",
    "source_frames",
    "time_table",
]
