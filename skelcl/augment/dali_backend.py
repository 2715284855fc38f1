"""The DALI backend: a DALI pipeline fed by external sources applies the same Params as the other backends.

Per view, the pipeline runs these DALI operators (on the GPU when one is given, else on the CPU):
  time map   fn.sequence_rearrange gathers frames i0 of the time table; with crop_resize (the only op
             that lands between frames) also frames i1, and a + w * (b - a) in DALI arithmetic;
  flip       fn.transpose to joints-first, fn.sequence_rearrange by the joint permutation, transpose back;
  flip mirror, shear, rotation: the per-sample matrix A = R S F, by fn.coord_transform on the GPU and
             by DALI arithmetic on the three coordinate planes on the CPU (coord_transform's CPU
             kernel measured 3x slower there);
  noise      + the noise tensor;
  blur       fn.gaussian_blur along time (window `size`, per-sample sigma; DALI mirrors at the ends
             without repeating the edge frame, as the other backends do);
  masks      * the per-sample keep mask (25, 3), broadcast over frames and bodies.
Computed on the host from Params (cheap, per sample): the time table (params.time_table: which source
frames and weights; B x T_out numbers), the 3x3 matrix, the keep mask, and the noise values (the shared
counter hash of skelcl.augment.noise, filled by the numba helper): DALI has no per-sample seeded
generator that could reproduce them. Known difference: for a view shorter than the blur radius DALI's
border handling may differ from the others (never the case for fixed-length pretraining views).

One pipeline is built per (recipe structure, batch size, device) and reused.
"""

from __future__ import annotations

import numpy as np

from skelcl.augment.params import (
    Params,
    joint_permutation,
    keep_mask,
    output_frames,
    spatial_matrix,
    time_table,
)
from skelcl.errors import SkelclError

_PIPELINES: dict = {}


def _import_dali():
    try:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SkelclError(
            f"augment backend 'dali' needs NVIDIA DALI (pip install skelcl[dali]): {e}"
        ) from None
    return fn, types, pipeline_def


def gpu_count() -> int:
    """Number of CUDA devices DALI sees (0 without a GPU or driver)."""
    try:
        from nvidia.dali import backend

        return int(backend.GetCUDADeviceCount())
    except Exception:  # pragma: no cover - no driver
        return 0


def _structure(params: Params) -> tuple:
    """What the pipeline graph depends on: per view, which optional stages it has, and the blur window."""
    out = []
    for view in params.recipe.views:
        ops = view.ops
        blur = ops.get("blur")
        out.append(
            (
                "crop_resize" in ops,
                "flip" in ops,
                "noise" in ops,
                int(blur.size) if blur is not None else 0,
                any(k in ops for k in ("axis_mask", "joint_mask", "part_mask")),
            )
        )
    return tuple(out)


def _build(structure: tuple, num_bodies: int, batch_size: int, device_id, num_threads: int):
    fn, types, pipeline_def = _import_dali()
    device = "gpu" if device_id is not None else "cpu"

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        exec_dynamic=True,
        prefetch_queue_depth=1,
    )
    def pipe():
        x = fn.external_source(name="x", dtype=types.FLOAT, layout="FHWC", device=device)
        outs = []
        for v, (interp, flip, noise, blur_size, mask) in enumerate(structure):
            i0 = fn.external_source(name=f"i0_{v}", dtype=types.INT32)
            A = fn.external_source(name=f"A_{v}", dtype=types.FLOAT)
            y = fn.sequence_rearrange(x, new_order=i0)
            if interp:  # without crop_resize every output frame is a whole source frame (w = 0)
                i1 = fn.external_source(name=f"i1_{v}", dtype=types.INT32)
                w = fn.external_source(name=f"w_{v}", dtype=types.FLOAT, device=device)
                y = y + w * (fn.sequence_rearrange(x, new_order=i1) - y)
            if flip:
                perm = fn.external_source(name=f"perm_{v}", dtype=types.INT32)
                y = fn.transpose(y, perm=[2, 0, 1, 3], output_layout="FHWC")
                y = fn.sequence_rearrange(y, new_order=perm)
                y = fn.transpose(y, perm=[1, 2, 0, 3], output_layout="FHWC")
            if device == "gpu":
                y = fn.coord_transform(y, M=A)
            else:  # DALI's CPU coord_transform is slow here; the same product in DALI arithmetic
                xyz = [y[:, :, :, k] for k in range(3)]
                rows = [A[3 * c] * xyz[0] + A[3 * c + 1] * xyz[1] + A[3 * c + 2] * xyz[2] for c in range(3)]
                y = fn.stack(*rows, axis=3)
            if noise:
                y = y + fn.external_source(name=f"noise_{v}", dtype=types.FLOAT, device=device)
            if blur_size:
                sigma = fn.external_source(name=f"sigma_{v}", dtype=types.FLOAT)
                flat = fn.reshape(y, shape=[-1, num_bodies * 75], layout="HW")  # time x frame values
                flat = fn.gaussian_blur(flat, sigma=sigma, window_size=[blur_size, 1])
                y = fn.reshape(flat, shape=[-1, num_bodies, 25, 3], layout="FHWC")
            if mask:
                y = y * fn.external_source(name=f"keep_{v}", dtype=types.FLOAT, device=device)
            outs.append(y)
        return tuple(outs)

    p = pipe()
    p.build()
    return p


def _get_pipeline(params: Params, num_bodies: int, batch_size: int, device_id, num_threads: int):
    """A built pipeline for this structure; one built for a larger batch also serves smaller batches."""
    key = (_structure(params), num_bodies, device_id, num_threads)
    built = _PIPELINES.get(key)
    if built is None or built[1] < batch_size:
        pipe = _build(key[0], num_bodies, batch_size, device_id, num_threads)
        _PIPELINES[key] = built = (pipe, batch_size)
    return built[0]


def _samples(arr: np.ndarray, n: np.ndarray):
    """Per-sample first n[b] rows of arr (B, N, ...): the whole array when every n[b] == N (fast path)."""
    if np.all(n == arr.shape[1]):
        return np.ascontiguousarray(arr)
    return [np.ascontiguousarray(arr[b, : n[b]]) for b in range(len(n))]


def _noise(vp, n_out: np.ndarray, E: int) -> list:
    from skelcl.augment.numba_backend import noise_values

    T_out = int(n_out.max())
    vals = noise_values(vp.noise_seed, T_out * E) * vp.noise_std[:, None]
    return _samples(vals.reshape(len(n_out), T_out, -1, 25, 3), n_out)


def apply_dali(
    batch: np.ndarray, lengths: np.ndarray, params: Params, device_id="auto", num_threads: int = 2
) -> list:
    """All views of a checked batch with a DALI pipeline: list of float32 (B, T_out, M, 25, 3).

    device_id: "auto" (GPU 0 if DALI sees one, else CPU), None (CPU operators) or a GPU index.
    """
    if device_id == "auto":
        device_id = 0 if gpu_count() > 0 else None
    B, T, M = batch.shape[:3]
    E = M * 25 * 3
    pipe = _get_pipeline(params, M, B, device_id, num_threads)
    structure = _structure(params)
    pipe.feed_input("x", _samples(batch, lengths))
    shapes = []
    for v, vp in enumerate(params.views):
        interp, flip, noise, blur_size, mask = structure[v]
        i0, i1, w, valid = time_table(params, v, T)
        n = vp.out_len
        shapes.append(output_frames(params, v, T))
        pipe.feed_input(f"i0_{v}", _samples(i0.astype(np.int32), n))
        if interp:
            pipe.feed_input(f"i1_{v}", _samples(i1.astype(np.int32), n))
            pipe.feed_input(f"w_{v}", _samples(w[:, :, None, None, None], n))
        else:
            assert not w.any(), "whole-frame time map expected without crop_resize"
        A = spatial_matrix(vp).astype(np.float32)
        pipe.feed_input(f"A_{v}", A if device_id is not None else A.reshape(B, 9))
        if flip:
            pipe.feed_input(f"perm_{v}", joint_permutation(vp).astype(np.int32))
        if noise:
            pipe.feed_input(f"noise_{v}", _noise(vp, n, E))
        if blur_size:
            # sigma 0 (no blur) becomes a tiny sigma: the window collapses to a unit impulse.
            sig = np.where(vp.blur_sigma > 0, vp.blur_sigma, 1e-3).astype(np.float32)
            pipe.feed_input(f"sigma_{v}", np.stack([sig, np.ones_like(sig)], axis=1))
        if mask:
            pipe.feed_input(f"keep_{v}", keep_mask(vp))
    outs = pipe.run()
    views = []
    for v, vp in enumerate(params.views):
        tl = outs[v]
        if device_id is not None:
            tl = tl.as_cpu()
        if np.all(vp.out_len == shapes[v]):
            views.append(np.asarray(tl.as_array(), dtype=np.float32))
            continue
        out = np.zeros((B, shapes[v], M, 25, 3), dtype=np.float32)
        for b in range(B):
            out[b, : vp.out_len[b]] = np.asarray(tl[b])
        views.append(out)
    return views
