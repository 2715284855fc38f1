"""The DALI backend (CPU operators, device_id=None) against the per-sample NumPy reference, shared params."""

from __future__ import annotations

import numpy as np
import pytest

try:
    import nvidia.dali  # noqa: F401
except ImportError as e:  # only a missing DALI skips these tests
    pytest.skip(f"nvidia.dali cannot be imported: {e}", allow_module_level=True)

from test_augment import OPS_P1, SHORT_AND_LONG, check_close, make_batch, make_recipe, time_ops_only

import skelcl.augment as aug
from skelcl.augment.dali_backend import apply_dali
from skelcl.augment.recipe import recipe_from_dict


def run_both(x, lengths, params):
    ref = aug.apply(x, lengths, params, backend="numpy")
    aug.check_batch(x, lengths, params)
    out = apply_dali(x, lengths, params, device_id=None)  # CPU operators even where a GPU exists
    return out, ref


@pytest.mark.parametrize("op", list(OPS_P1))
def test_dali_cpu_matches_reference_per_op(op):
    x, lengths = make_batch(seed=21)
    params = aug.sample(make_recipe({op: OPS_P1[op]}), lengths, np.random.default_rng(8))
    out, ref = run_both(x, lengths, params)
    check_close(out, ref)


@pytest.mark.parametrize("name", ["skeletonclr", "rvtclr", "aimclr", "finetune"])
def test_dali_cpu_matches_reference_builtin(name):
    x, lengths = make_batch(B=6, T=330, seed=22, min_len=40)
    params = aug.sample(name, lengths, np.random.default_rng(12))
    out, ref = run_both(x, lengths, params)
    check_close(out, ref)


@pytest.mark.parametrize("pad", ["edge", "reflect"])
def test_dali_cpu_matches_reference_pad_modes(pad):
    """Short and long sequences, the rvtclr time ops with each pad mode: the same frames in every backend."""
    lengths = np.array(SHORT_AND_LONG[:10])
    x, _ = make_batch(B=len(lengths), T=int(lengths.max()), seed=26)
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    params = aug.sample(time_ops_only("rvtclr", pad=pad), lengths, np.random.default_rng(14))
    out, ref = run_both(x, lengths, params)
    check_close(out, ref)
    check_close(aug.apply(x, lengths, params, backend="numba"), ref)
    assert (aug.reversed_share(params) > 0) == (pad == "reflect")


def test_dali_cpu_all_ops_whole_sequence():
    ops = {k: dict(v, p=0.6) if "p" in v else v for k, v in OPS_P1.items() if k != "tempo"}
    recipe = recipe_from_dict(
        "ws", {"window": None, "views": [{"name": "a", "frames": None, "ops": ops}] * 2}
    )
    # whole-sequence views: lengths above the blur window (DALI's border rule differs below it)
    x, lengths = make_batch(B=7, T=60, seed=23, min_len=16)
    lengths[1] = 16
    params = aug.sample(recipe, lengths, np.random.default_rng(13))
    out, ref = run_both(x, lengths, params)
    check_close(out, ref)


def test_dali_through_apply_is_deterministic():
    x, lengths = make_batch(B=4, T=320, seed=24, min_len=40)
    params = aug.sample("aimclr", lengths, np.random.default_rng(1))
    a = aug.apply(x, lengths, params, backend="dali")
    b = aug.apply(x, lengths, params, backend="dali")
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_dali_pipeline_serves_a_smaller_batch():
    x, lengths = make_batch(B=6, T=320, seed=25, min_len=40)
    params = aug.sample("skeletonclr", lengths, np.random.default_rng(2))
    check_close(*run_both(x, lengths, params))
    small = aug.sample("skeletonclr", lengths[:3], np.random.default_rng(3))
    check_close(*run_both(x[:3], lengths[:3], small))
