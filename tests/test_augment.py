"""skelcl.augment: recipes, sampling, the numba backend against the per-sample NumPy reference, invariants
checked against hand-computed or independent results, determinism and error paths."""

from __future__ import annotations

import math

import numpy as np
import pytest

import skelcl.augment as aug
from skelcl.augment import noise as noise_mod
from skelcl.augment.numba_backend import noise_values
from skelcl.augment.params import reflect_symmetric
from skelcl.augment.recipe import recipe_from_dict
from skelcl.data.skeleton import BODY_PARTS, FLIP_PERM, bone_lengths
from skelcl.errors import SkelclError

OPS_P1 = {
    "crop": {"pad_ratio": 6},
    "crop_resize": {"ratio": [0.5, 1.0]},
    "tempo": {"speeds": [1, 2]},
    "flip": {"p": 1.0},
    "shear": {"r": 0.5},
    "rotate": {"main_deg": 30, "other_deg": 5},
    "noise": {"std": 0.1, "p": 1.0},
    "blur": {"sigma": [0.5, 2.0], "size": 15, "p": 1.0},
    "axis_mask": {"p": 1.0},
    "joint_mask": {"count": [1, 5], "p": 1.0},
    "part_mask": {"p": 1.0},
}


def make_recipe(ops: dict, window=60, frames=24, views=1) -> aug.Recipe:
    raw_views = [{"name": f"v{i}", "frames": frames, "ops": ops} for i in range(views)]
    return recipe_from_dict("test", {"window": window, "views": raw_views})


def make_batch(B=8, T=90, M=2, seed=0, min_len=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, M, 25, 3)).astype(np.float32)
    lengths = rng.integers(min_len, T + 1, B)
    lengths[0] = T
    lengths[1] = min(T, 17)  # shorter than the windows below: mirrored
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, lengths


def check_close(out, ref):
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.dtype == np.float32 and r.dtype == np.float32
        assert o.shape == r.shape
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- numba vs NumPy


@pytest.mark.parametrize("op", list(OPS_P1))
def test_numba_matches_reference_per_op(op):
    x, lengths = make_batch(seed=1)
    recipe = make_recipe({op: OPS_P1[op]})
    params = aug.sample(recipe, lengths, np.random.default_rng(7))
    ref = aug.apply(x, lengths, params, backend="numpy")
    out = aug.apply(x, lengths, params, backend="numba")
    check_close(out, ref)
    assert ref[0].shape == (8, 24, 2, 25, 3)
    assert np.abs(ref[0]).max() > 0.5  # not a trivially zero output


@pytest.mark.parametrize("op", [k for k in OPS_P1 if k != "tempo"])
def test_numba_matches_reference_whole_sequence(op):
    x, lengths = make_batch(seed=2)
    recipe = recipe_from_dict(
        "ws", {"window": None, "views": [{"name": "a", "frames": None, "ops": {op: OPS_P1[op]}}]}
    )
    params = aug.sample(recipe, lengths, np.random.default_rng(3))
    ref = aug.apply(x, lengths, params, backend="numpy")
    out = aug.apply(x, lengths, params, backend="numba")
    check_close(out, ref)
    assert out[0].shape == x.shape
    for b, n in enumerate(lengths):  # padding frames stay zero
        assert not out[0][b, n:].any()


@pytest.mark.parametrize("name", ["skeletonclr", "rvtclr", "aimclr", "finetune"])
def test_builtin_recipes_match_reference(name):
    x, lengths = make_batch(B=6, T=340, seed=3)
    params = aug.sample(name, lengths, np.random.default_rng(11))
    ref = aug.apply(x, lengths, params, backend="numpy")
    out = aug.apply(x, lengths, params, backend="numba")
    check_close(out, ref)
    n_views = {"skeletonclr": 2, "rvtclr": 3, "aimclr": 3, "finetune": 1}[name]
    assert len(out) == n_views
    if name != "finetune":
        assert all(o.shape == (6, 150, 2, 25, 3) for o in out)


def test_all_ops_together_with_probabilities():
    ops = {k: dict(v, p=0.6) if "p" in v else v for k, v in OPS_P1.items()}
    recipe = make_recipe(ops, window=50, frames=20, views=3)
    x, lengths = make_batch(B=12, T=70, seed=4)
    params = aug.sample(recipe, lengths, np.random.default_rng(5))
    check_close(
        aug.apply(x, lengths, params, backend="numba"), aug.apply(x, lengths, params, backend="numpy")
    )


# ---------------------------------------------------------------------------------- hand-checked behaviour


def test_reflect_symmetric_hand_values():
    # window of 5: ... 1 0 | 0 1 2 3 4 | 4 3 ...
    i = np.array([-3, -2, -1, 0, 4, 5, 6, 9, 10])
    assert reflect_symmetric(i, 5).tolist() == [2, 1, 0, 0, 4, 4, 3, 0, 0]
    assert reflect_symmetric(np.array([-1, 0, 3]), 1).tolist() == [0, 0, 0]


def ramp_batch(B, T, M=1):
    """Frame t of every sequence holds the value t in every coordinate."""
    x = np.broadcast_to(np.arange(T, dtype=np.float32)[None, :, None, None, None], (B, T, M, 25, 3))
    return np.ascontiguousarray(x)


def test_tempo_views_hand_checked():
    B, T = 64, 400
    x = ramp_batch(B, T)
    lengths = np.full(B, T)
    recipe = recipe_from_dict(
        "tempo",
        {
            "window": 300,
            "views": [
                {"name": "q", "frames": 150, "ops": {"tempo": {"speeds": [1, 2], "pair": True}}},
                {"name": "k", "frames": 150, "ops": {"tempo": {"speeds": [1, 2], "pair": True}}},
            ],
        },
    )
    params = aug.sample(recipe, lengths, np.random.default_rng(0))
    q, k = aug.apply(x, lengths, params)
    sq, sk = params.views[0].speed, params.views[1].speed
    assert sorted(set(sq.tolist())) == [1, 2]
    assert np.all(sq + sk == 3)  # one view at each tempo, per sample
    for b in range(B):
        ws = params.window_start[b]
        assert 0 <= ws <= T - 300
        for view, s in ((q, sq[b]), (k, sk[b])):
            frames = view[b, :, 0, 0, 0]
            assert np.all(np.diff(frames) == s)  # consecutive or every second frame
            assert ws <= frames[0] and frames[-1] <= ws + 299  # inside the 300-frame window
    # the frame map exposed for snippet alignment agrees with the data
    np.testing.assert_array_equal(aug.source_frames(params, 0), q[:, :, 0, 0, 0].astype(np.int64))


@pytest.mark.parametrize("pad", [None, "edge", "reflect"])
def test_padded_crop_hand_checked(pad):
    B, T = 200, 120
    x = ramp_batch(B, T)
    lengths = np.full(B, T)
    crop = {"pad_ratio": 6} if pad is None else {"pad_ratio": 6, "pad": pad}
    recipe = make_recipe({"crop": crop}, window=T, frames=T)
    params = aug.sample(recipe, lengths, np.random.default_rng(1))
    (out,) = aug.apply(x, lengths, params)
    shifts = params.views[0].crop_shift
    assert shifts.min() >= -20 and shifts.max() <= 20 and len(set(shifts.tolist())) > 20
    if pad == "reflect":  # the window padded by 20 mirrored frames (edge repeated)
        padded = np.concatenate([np.arange(20)[::-1], np.arange(T), np.arange(T - 20, T)[::-1]])
    else:  # default "edge": 20 copies of the first / last frame
        padded = np.concatenate([np.zeros(20), np.arange(T), np.full(20, T - 1)])
    for b in range(B):  # then T frames from 20 + c
        c = shifts[b]
        np.testing.assert_array_equal(out[b, :, 0, 5, 1], padded[20 + c : 20 + c + T])


# Lengths around the 300-frame window of the pretraining recipes (synthetic sequences: 240-360 frames).
SHORT_AND_LONG = [60, 150, 200, 240, 260, 299, 300, 340, 360, 400] * 4


def time_ops_only(name: str, pad=None) -> aug.Recipe:
    """Built-in recipe `name` with only its time ops (crop, crop_resize, tempo), read from the YAML file
    itself; pad: the crops' pad setting (None: as in the file)."""
    import yaml

    from skelcl.augment.recipe import BUILTIN_PATH

    raw = yaml.safe_load(BUILTIN_PATH.read_text())[name]
    for view in raw["views"]:
        view["ops"] = {k: v for k, v in view["ops"].items() if k in ("crop", "crop_resize", "tempo")}
        if pad is not None and "crop" in view["ops"]:
            view["ops"]["crop"]["pad"] = pad
    return recipe_from_dict(name, raw)


def backwards_share(views, params) -> float:
    """From the outputs of a ramp batch (value = source frame): the share of valid output frames t >= 1
    whose value is below that of frame t - 1."""
    back = total = 0
    for v, out in enumerate(views):
        values = out[:, :, 0, 0, 0]
        pairs = np.arange(1, values.shape[1])[None, :] < params.views[v].out_len[:, None]
        back += int(((np.diff(values, axis=1) < 0) & pairs).sum())
        total += int(pairs.sum())
    return back / total


@pytest.mark.parametrize("name", ["skeletonclr", "rvtclr", "aimclr"])
def test_default_recipes_never_play_time_backwards(name):
    lengths = np.array(SHORT_AND_LONG)
    x = ramp_batch(len(lengths), int(lengths.max()))
    recipe = time_ops_only(name)  # the shipped time ops, spatial ops dropped so the ramp stays readable
    params = aug.sample(recipe, lengths, np.random.default_rng(3))
    for backend in ("numpy", "numba"):
        reversed_frames = backwards_share(aug.apply(x, lengths, params, backend=backend), params)
        assert reversed_frames == 0, backend
    assert aug.reversed_share(params) == 0
    assert aug.reversed_share(aug.sample(name, lengths, np.random.default_rng(4))) == 0  # full recipe


@pytest.mark.parametrize("name", ["skeletonclr", "rvtclr"])
def test_reflect_padding_plays_backwards_only_when_asked(name):
    lengths = np.array(SHORT_AND_LONG)
    x = ramp_batch(len(lengths), int(lengths.max()))
    params = aug.sample(time_ops_only(name, pad="reflect"), lengths, np.random.default_rng(3))
    ref = aug.apply(x, lengths, params, backend="numpy")
    share = backwards_share(ref, params)
    assert share > 0.01  # mirrored crop borders and mirrored ends of short sequences
    assert aug.reversed_share(params) == pytest.approx(share, abs=1e-12)
    check_close(aug.apply(x, lengths, params, backend="numba"), ref)
    short = lengths < 300  # only those reach past the sequence's end
    assert backwards_share([v[short] for v in ref], _rows(params, short)) > share
    # the same draws with edge padding: identical except where reflect mirrored
    edge = aug.sample(time_ops_only(name, pad="edge"), lengths, np.random.default_rng(3))
    assert [v.crop_shift.tolist() for v in edge.views] == [v.crop_shift.tolist() for v in params.views]
    assert backwards_share(aug.apply(x, lengths, edge), edge) == 0 == aug.reversed_share(edge)


def _rows(params, rows):
    """A stand-in for params restricted to samples `rows` (only out_len is read by backwards_share)."""
    from types import SimpleNamespace

    return SimpleNamespace(views=[SimpleNamespace(out_len=v.out_len[rows]) for v in params.views])


def test_crop_resize_of_linear_ramp_stays_linear():
    B, T = 32, 80
    x = ramp_batch(B, T) * np.float32(0.5) + np.float32(3.0)
    lengths = np.full(B, T)
    recipe = make_recipe({"crop_resize": {"ratio": [0.5, 1.0]}}, window=T, frames=T)
    params = aug.sample(recipe, lengths, np.random.default_rng(2))
    (out,) = aug.apply(x, lengths, params)
    vp = params.views[0]
    for b in range(B):
        y = out[b, :, 0, 3, 2].astype(np.float64)
        s0, n = vp.resize_start[b], vp.resize_len[b]
        assert n >= T // 2
        expected = 3.0 + 0.5 * np.linspace(
            s0, s0 + n - 1, T
        )  # first/last frames of the crop map onto the ends
        np.testing.assert_allclose(y, expected, atol=1e-4)
        np.testing.assert_allclose(np.diff(y, 2), 0, atol=1e-4)


def test_rotation_keeps_bone_lengths():
    x, lengths = make_batch(B=6, T=40, seed=5)
    recipe = recipe_from_dict(
        "rot", {"window": None, "views": [{"name": "r", "frames": None, "ops": {"rotate": {}}}]}
    )
    params = aug.sample(recipe, lengths, np.random.default_rng(9))
    (out,) = aug.apply(x, lengths, params)
    assert np.abs(params.views[0].rotation_deg).max() > 10
    np.testing.assert_allclose(
        bone_lengths(out.astype(np.float64)), bone_lengths(x.astype(np.float64)), atol=2e-5
    )
    assert not np.allclose(out, x, atol=1e-2)


def test_flip_twice_is_identity_and_mirrors():
    x, lengths = make_batch(B=5, T=30, seed=6)
    recipe = recipe_from_dict(
        "flip", {"window": None, "views": [{"name": "f", "frames": None, "ops": {"flip": {"p": 1.0}}}]}
    )
    params = aug.sample(recipe, lengths, np.random.default_rng(0))
    (once,) = aug.apply(x, lengths, params)
    (twice,) = aug.apply(once, lengths, params)
    np.testing.assert_array_equal(twice, x)
    # independent statement of the mirror: joint j takes FLIP_PERM[j]'s place with x negated
    assert once[0, 3, 0, 4, 0] == -x[0, 3, 0, 8, 0] and once[0, 3, 0, 4, 1] == x[0, 3, 0, 8, 1]
    assert once[0, 3, 0, 2, 2] == x[0, 3, 0, 2, 2]
    assert sorted(FLIP_PERM.tolist()) == list(range(25))


def test_shear_matrix_and_matrix_application():
    x, lengths = make_batch(B=4, T=20, seed=7)
    recipe = recipe_from_dict(
        "sh", {"window": None, "views": [{"name": "s", "frames": None, "ops": {"shear": {"r": 0.5}}}]}
    )
    params = aug.sample(recipe, lengths, np.random.default_rng(4))
    S = params.views[0].shear
    assert np.all(np.diagonal(S, axis1=1, axis2=2) == 1)
    off = S[:, ~np.eye(3, dtype=bool)]
    assert np.all(np.abs(off) <= 0.5) and np.abs(off).max() > 0.1
    (out,) = aug.apply(x, lengths, params)
    b, t, m, j = 2, 5, 1, 11
    expected = S[b] @ x[b, t, m, j].astype(np.float64)
    np.testing.assert_allclose(out[b, t, m, j], expected, rtol=1e-5, atol=1e-6)


def test_masks_zero_the_right_coordinates():
    x, lengths = make_batch(B=40, T=20, seed=8)
    x[x == 0] = 1.0  # no accidental zeros
    for op in ("axis_mask", "joint_mask", "part_mask"):
        recipe = recipe_from_dict(
            "m", {"window": None, "views": [{"name": "m", "frames": None, "ops": {op: OPS_P1[op]}}]}
        )
        params = aug.sample(recipe, lengths, np.random.default_rng(1))
        (out,) = aug.apply(x, lengths, params)
        vp = params.views[0]
        for b in range(40):
            zero = out[b, : lengths[b]] == 0  # (n, M, 25, 3)
            assert np.all(zero == zero[:1, :1])  # same pattern on every frame and body
            pattern = zero[0, 0]
            if op == "axis_mask":
                assert pattern.all(axis=0).tolist() == [a == vp.axis[b] for a in range(3)]
                assert pattern.sum() == 25
            elif op == "joint_mask":
                rows = np.flatnonzero(pattern.all(axis=1))
                assert 1 <= len(rows) <= 5 and pattern.sum() == 3 * len(rows)
            else:
                part = list(BODY_PARTS)[vp.part[b]]
                assert np.flatnonzero(pattern.all(axis=1)).tolist() == sorted(BODY_PARTS[part])


def test_blur_keeps_constants_and_ramps():
    B, T = 6, 60
    x = ramp_batch(B, T)
    lengths = np.full(B, T)
    recipe = make_recipe({"blur": OPS_P1["blur"]}, window=T, frames=T)
    params = aug.sample(recipe, lengths, np.random.default_rng(0))
    (out,) = aug.apply(x, lengths, params)
    # a symmetric normalized filter leaves a linear ramp unchanged away from the ends
    np.testing.assert_allclose(out[:, 7:-7, 0, 0, 0], x[:, 7:-7, 0, 0, 0], atol=1e-4)
    (const,) = aug.apply(np.ones_like(x), lengths, params)
    np.testing.assert_allclose(const, 1.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------- noise


def test_noise_table_is_normal_quantiles():
    table = noise_mod.normal_table().astype(np.float64)
    idx = np.array([0, 1, 1000, 32767, 32768, 60000, 65535])
    cdf = np.array([0.5 * (1 + math.erf(table[i] / math.sqrt(2))) for i in idx])
    np.testing.assert_allclose(cdf, (idx + 0.5) / 65536, rtol=1e-4, atol=1e-9)
    assert abs(table.mean()) < 1e-6 and abs(table.std() - 1) < 1e-3


def test_noise_numba_equals_numpy_and_looks_gaussian():
    seeds = np.array([0, 1, 2**63 + 5, 12345678901234567], dtype=np.uint64)
    vals = noise_values(seeds, 4003)
    for b, s in enumerate(seeds):
        np.testing.assert_array_equal(vals[b], noise_mod.gaussian(s, 4003))
    big = noise_mod.gaussian(np.uint64(99), 200_000).astype(np.float64)
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01
    assert abs(np.mean(big**4) - 3) < 0.1  # normal kurtosis
    assert abs(np.corrcoef(big[:-1], big[1:])[0, 1]) < 0.01
    assert not np.array_equal(vals[0], vals[1])


# ----------------------------------------------------------------------------------------- determinism


def test_determinism_per_seed():
    x, lengths = make_batch(B=10, T=320, seed=9)
    p1 = aug.sample("aimclr", lengths, np.random.default_rng(42))
    p2 = aug.sample("aimclr", lengths, np.random.default_rng(42))
    p3 = aug.sample("aimclr", lengths, np.random.default_rng(43))
    a = aug.apply(x, lengths, p1)
    b = aug.apply(x, lengths, p2)
    c = aug.apply(x, lengths, p3)
    again = aug.apply(x, lengths, p1)
    for u, v, w, z in zip(a, b, c, again):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(u, z)
        assert not np.array_equal(u, w)


# ----------------------------------------------------------------------------------- rules and errors


def test_short_and_one_frame_sequences_follow_the_rules():
    x, lengths = make_batch(B=4, T=50, seed=10)
    lengths[:] = [1, 2, 40, 50]
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    params = aug.sample("aimclr", lengths, np.random.default_rng(0))  # 300-frame window > every length
    ref = aug.apply(x, lengths, params, backend="numpy")
    out = aug.apply(x, lengths, params)
    check_close(out, ref)
    (q,) = aug.apply(
        x, lengths, aug.sample(make_recipe({}, window=300, frames=150), lengths, np.random.default_rng(0))
    )
    assert np.all(q[0] == x[0, 0])  # one-frame sequence: its frame repeated
    assert set(np.unique(q[1][:, 0, 0, 0])) == set(x[1, :2, 0, 0, 0].tolist())


def test_nan_in_valid_frame_is_an_error_naming_it():
    x, lengths = make_batch(B=3, T=30, seed=11)
    lengths[:] = [30, 20, 25]
    params = aug.sample("skeletonclr", lengths, np.random.default_rng(0))
    x[1, 25] = np.nan  # padding: never read
    aug.apply(x, lengths, params)
    x[2, 7, 1, 3, 2] = np.inf
    with pytest.raises(SkelclError, match="sequence 2 .* frame 7"):
        aug.apply(x, lengths, params)
    for backend in ("numpy", "dali"):
        with pytest.raises(SkelclError, match="NaN or infinite"):
            aug.apply(x, lengths, params, backend=backend)


def test_bad_lengths_and_batches():
    x, lengths = make_batch(B=3, T=30, seed=12)
    params = aug.sample("skeletonclr", lengths, np.random.default_rng(0))
    with pytest.raises(SkelclError, match="sequence 1 .* length 0"):
        aug.sample("skeletonclr", [5, 0, 3], np.random.default_rng(0))
    with pytest.raises(SkelclError, match="length 31, but the batch holds 30"):
        aug.apply(x, [31, 2, 3], aug.sample("skeletonclr", [31, 2, 3], np.random.default_rng(0)))
    with pytest.raises(SkelclError, match="float32"):
        aug.apply(x.astype(np.float64), lengths, params)
    with pytest.raises(SkelclError, match=r"shape \(B, T, M, 25, 3\)"):
        aug.apply(x[..., :2], lengths, params)
    with pytest.raises(SkelclError, match="other sequence lengths"):
        aug.apply(x, lengths, aug.sample("skeletonclr", lengths[::-1] + 0, np.random.default_rng(0)))
    with pytest.raises(SkelclError, match="unknown backend"):
        aug.apply(x, lengths, params, backend="torch")
    with pytest.raises(SkelclError, match="numpy Generator"):
        aug.sample("skeletonclr", lengths, 0)


def test_recipe_errors_name_the_field(tmp_path):
    with pytest.raises(SkelclError, match="unknown augment recipe 'simclr'"):
        aug.load_recipe("simclr")
    bad = {
        "crop_resize ratio": ({"crop_resize": {"ratio": [0.5, 1.5]}}, r"views\[0\].ops.crop_resize.ratio"),
        "unknown op": ({"cutout": {}}, "unknown op 'cutout'"),
        "unknown setting": ({"shear": {"radius": 1}}, "unknown setting 'radius'"),
        "even blur": ({"blur": {"size": 4}}, "odd number"),
        "probability": ({"flip": {"p": 2}}, r"flip.p: expected a number in \[0.0, 1.0\]"),
        "pad mode": ({"crop": {"pad": "wrap"}}, r"crop.pad: expected one of edge, reflect, got 'wrap'"),
        "align": ({"tempo": {"align": "nope"}}, r"tempo.align: no earlier view named 'nope'"),
    }
    for ops, pattern in bad.values():
        with pytest.raises(SkelclError, match=pattern):
            make_recipe(ops)
    with pytest.raises(SkelclError, match="need 239 window frames; window is 200"):
        make_recipe({"tempo": {"speeds": [1, 2]}}, window=200, frames=120)
    path = tmp_path / "mine.yaml"
    path.write_text(
        "window: 100\nviews:\n  - {name: a, frames: 50, ops: {tempo: {speeds: [2]}, shear: {r: 0.1}}}\n"
    )
    r = aug.load_recipe(path)
    assert r.window == 100 and r.views[0].op("shear").r == 0.1 and r.views[0].op("tempo").speeds == (2,)
    path.write_text("window: [1\n")
    with pytest.raises(SkelclError, match="invalid YAML"):
        aug.load_recipe(path)


def test_builtin_recipes_describe_the_paper_views():
    for name in ("skeletonclr", "aimclr"):
        r = aug.load_recipe(name)
        assert r.window == 300
        assert [v.name for v in r.views[:2]] == ["query", "key"]
        assert all(v.frames == 150 for v in r.views)
        assert r.views[0].op("crop").pad_ratio == 6 and r.views[0].op("shear").r == 0.5
    aim = aug.load_recipe("aimclr")
    assert aim.views[2].name == "extreme" and {"noise", "blur", "axis_mask", "flip", "rotate"} <= set(
        aim.views[2].ops
    )
    ft = aug.load_recipe("finetune")
    assert ft.window is None and len(ft.views) == 1


def test_output_buffers_are_reused_only_when_unreferenced():
    x, lengths = make_batch(B=4, T=320, seed=13)
    p1 = aug.sample("aimclr", lengths, np.random.default_rng(1))
    p2 = aug.sample("aimclr", lengths, np.random.default_rng(2))
    first = aug.apply(x, lengths, p1)
    kept = [v.copy() for v in first]
    second = aug.apply(x, lengths, p2)
    for a, b, k in zip(first, second, kept):
        assert not np.shares_memory(a, b)
        np.testing.assert_array_equal(a, k)  # the first result was not overwritten
    addr = first[0].__array_interface__["data"][0]
    del first, a, b
    third = aug.apply(x, lengths, p1)  # the first call's buffer is free again: reused, same values
    assert third[0].__array_interface__["data"][0] == addr
    for t, k in zip(third, kept):
        np.testing.assert_array_equal(t, k)
