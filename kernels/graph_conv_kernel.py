"""Triton kernels for the spatial graph convolution y = sum_k W_k X A_k (+ bias) (+ residual), ReLU.

Shapes: x (N, C_in, T, V), weight (K, C_out, C_in), adjacency (K, V, V), y (N, C_out, T, V). For one
(n, t) the input is a C_in x V matrix; y_nt = sum_k W_k X_nt A_k is one GEMM with inner dimension
K * C_in. Joints pad to VP = 32 (V = 25) inside; nothing of size K * C_in * V reaches memory.

Tiles: a program owns BO output channels and a "row tile" (n, BT consecutive frames). Two layouts of
the same data appear, and tl.reshape moves between them for free in the index arithmetic:
    wide  (channels, BT * VP)   column j = (t, v) with t = j // VP, v = j % VP
    tall  (channels * BT, VP)   row q = (c, t), column v
Kernels (no atomics between programs; every partial sum has its own slot):
- `_gc_kernel` (forward, and dX / dA in backward): for each k, U = W_k[o-block] @ X (wide, inner
  dimension C_in), then acc += tall(U) @ A_k (inner dimension VP), epilogue bias / residual / ReLU.
  Backward calls it with W^T and A^T on dY: dX = sum_k W_k^T dY A_k^T, and there U = H_k = W_k^T dY,
  which is also what dA needs: dA_k = sum_{n,t} X_nt^T H_k,nt = tall(X)^T @ tall(H_k), accumulated per
  program into a private fp32 slot and summed on the host.
- `_gc_dw_kernel`: dW_k = sum_{n,t} G_k,nt X_nt^T with G_k = dY A_k^T, i.e. wide(tall(dY) @ A_k^T) @
  wide(X)^T; the rows (n, t) are split over programs, each writes its own fp32 partial, summed on the host.

bf16 / fp16 tiles multiply with fp32 accumulation; the intermediate U (or G) is rounded to the input
dtype before its second product (as an eager conv-then-einsum under autocast rounds its conv output).
float32 uses tf32 dots when torch.backends.cudnn.allow_tf32 is set (PyTorch's default for convolutions,
which this op replaces) and exact fp32 dots otherwise; `PRECISION` overrides.

Floors (unit shape N 256, C 256, T 64, V 25, bf16, forward + dX + dW): 530 GFLOP useful, 700 GFLOP with
the joint padding, about 1.0 ms at the H100's measured 694 TFLOP/s; about 1.5 GB of activations moved,
0.5 ms at 3 TB/s: compute-bound. Known limit: an X tile row is 25 joints at an arbitrary offset, so
bf16 X tiles cannot travel by cp.async (4-byte minimum) and the compiler does not pipeline them (W
tiles and float32 tiles it does); PREFETCH issues the next X block's loads into registers before the
current block's product instead. dA is written per program (one row tile each), K x VP x VP floats
per program; the bf16 dA launch spills 72 bytes per thread on sm_90 (scripts/aot_check_graph_conv.py).
Next step if the GPU timings fall short:
keep (t, v) contiguous (5 frames = 125 of 128 columns), apply A_k as a 128 x 128 block-diagonal
matrix (more FLOPs for the A product, but whole-row loads that pipeline / use TMA when T*V*2 % 16 == 0).

Registered as torch custom ops (skelcl::graph_conv_fwd, skelcl::graph_conv_bwd_data,
skelcl::graph_conv_bwd_weight) with fake and autograd registrations, so torch.compile treats them as
opaque nodes. The kernels also run on CPU tensors under TRITON_INTERPRET=1 (the tests); the interpreter
cannot multiply bfloat16, so there bf16 tiles travel as float32 holding bf16 values and the rounding of
U is emulated bit-exactly (round to nearest even).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from skelcl.kernels._triton_compat import patch_interpreter

patch_interpreter()  # Triton 3.6's interpreter under numpy >= 2.4 (CPU tests only)

# Tile overrides for tuning runs (scripts/gpu_check.py): keys "fwd_BO", "fwd_BC", "fwd_BT",
# "fwd_num_warps", "fwd_num_stages", "fwd_prefetch", the same with "dw_", plus "dw_splits".
OVERRIDE: dict = {}
# None: follow torch.backends.cudnn.allow_tf32 for float32 inputs; else "ieee" or "tf32".
PRECISION: str | None = None

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------------------------- kernels
@triton.jit
def _operand(u, ref_ptr, ROUND: tl.constexpr):
    """An fp32 tile rounded to the dot operand dtype: 0 keep fp32, 1 cast to ref_ptr's dtype (GPU),
    2 bf16 round-to-nearest-even kept in fp32 (interpreter), 3 fp16 kept in fp32 (interpreter)."""
    if ROUND == 1:
        return u.to(ref_ptr.dtype.element_ty)
    elif ROUND == 2:
        b = u.to(tl.uint32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
        return b.to(tl.float32, bitcast=True)
    elif ROUND == 3:
        return u.to(tl.float16).to(tl.float32)
    else:
        return u


@triton.jit
def _gc_kernel(
    x_ptr, w_ptr, a_ptr, b_ptr, r_ptr, y_ptr, xa_ptr, da_ptr,
    C_in, C_out, T, V, n_tb,
    swk, swo, swc, sak, sav, saw,
    K: tl.constexpr, BO: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, VP: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr, STORE_Y: tl.constexpr,
    NEED_DA: tl.constexpr, PREC: tl.constexpr, ROUND: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """Grid (row tiles * output-channel blocks,), the blocks of one tile adjacent (they share its X tiles
    in L2); x, y, residual, xa contiguous (N, C, T, V).

    y[n, o, t, w] = sum_k sum_v (sum_c w[k, o, c] x[n, c, t, v]) a[k, v, w] (+ b[o]) (+ r) (ReLU).
    With NEED_DA: da[program, k] = sum_{o, t} xa[n, o, t, :]^T (sum_c w[k, o, c] x[n, c, t, :]).
    One row tile per program (a loop over several tiles would hold more state in registers).
    """
    pid = tl.program_id(0)
    n_ob = tl.cdiv(C_out, BO)
    tile = pid // n_ob
    pid_o = pid % n_ob
    n = (tile // n_tb).to(tl.int64)
    t0 = (tile % n_tb) * BT
    TV = T * V
    j = tl.arange(0, BT * VP)  # wide columns (t, v)
    jt = j // VP
    jv = j % VP
    col_ok = (t0 + jt < T) & (jv < V)
    col_off = (t0 + jt) * V + jv
    q = tl.arange(0, BO * BT)  # tall rows (o, t)
    qo = pid_o * BO + q // BT
    qt = q % BT
    row_ok = (qo < C_out) & (t0 + qt < T)
    row_off = qo * TV + (t0 + qt) * V
    o = pid_o * BO + tl.arange(0, BO)
    vv = tl.arange(0, VP)
    v_ok = vv < V
    x_base = x_ptr + n * C_in * TV
    acc = tl.zeros((BO * BT, VP), dtype=tl.float32)
    for k in tl.static_range(K):
        u = tl.zeros((BO, BT * VP), dtype=tl.float32)
        if PREFETCH:
            # X rows are 25 joints at arbitrary offsets: no cp.async, so the compiler cannot pipeline
            # them; load the next channel block into registers before this block's product instead.
            c = tl.arange(0, BC)
            xt = tl.load(
                x_base + c[:, None] * TV + col_off[None, :],
                mask=(c[:, None] < C_in) & col_ok[None, :],
                other=0.0,
            )
        for c0 in range(0, C_in, BC):
            c = c0 + tl.arange(0, BC)
            wt = tl.load(
                w_ptr + k * swk + o[:, None] * swo + c[None, :] * swc,
                mask=(o[:, None] < C_out) & (c[None, :] < C_in),
                other=0.0,
            )
            if PREFETCH:
                cn = c + BC
                xn = tl.load(
                    x_base + cn[:, None] * TV + col_off[None, :],
                    mask=(cn[:, None] < C_in) & col_ok[None, :],
                    other=0.0,
                )
                u = tl.dot(wt, xt, u, input_precision=PREC)
                xt = xn
            else:
                xt = tl.load(
                    x_base + c[:, None] * TV + col_off[None, :],
                    mask=(c[:, None] < C_in) & col_ok[None, :],
                    other=0.0,
                )
                u = tl.dot(wt, xt, u, input_precision=PREC)
        ur = tl.reshape(_operand(u, x_ptr, ROUND), (BO * BT, VP))
        ak = tl.load(
            a_ptr + k * sak + vv[:, None] * sav + vv[None, :] * saw,
            mask=v_ok[:, None] & v_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(ur, ak, acc, input_precision=PREC)
        if NEED_DA:
            xr = tl.load(
                xa_ptr + n * C_out * TV + row_off[:, None] + vv[None, :],
                mask=row_ok[:, None] & v_ok[None, :],
                other=0.0,
            )
            part = tl.dot(tl.trans(xr), ur, input_precision=PREC)
            slot = (pid * K + k).to(tl.int64) * VP * VP
            tl.store(da_ptr + slot + vv[:, None] * VP + vv[None, :], part)
    if STORE_Y:
        y_off = n * C_out * TV + row_off[:, None] + vv[None, :]
        y_mask = row_ok[:, None] & v_ok[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + qo, mask=qo < C_out, other=0.0).to(tl.float32)[:, None]
        if HAS_RES:
            acc += tl.load(r_ptr + y_off, mask=y_mask, other=0.0).to(tl.float32)
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _dw_tile(g_ptr, x_ptr, tile, C_in, C_out, T, V, n_tb, num_tiles, qo, qt, jt, jv, c, vv, BT: tl.constexpr):
    """Row tile `tile` = (n, BT frames) of g as tall (o, t) x v and of x as wide c x (t, v); zeros past the
    last tile and outside the tensors. The last tile of a split may belong to the next split: only
    prefetched, never used."""
    n = (tile // n_tb).to(tl.int64)
    t0 = (tile % n_tb) * BT
    t_end = tl.where(tile < num_tiles, T, 0)
    TV = T * V
    row_ok = (qo < C_out) & (t0 + qt < t_end)
    gr = tl.load(
        g_ptr + n * C_out * TV + qo[:, None] * TV + (t0 + qt)[:, None] * V + vv[None, :],
        mask=row_ok[:, None] & (vv < V)[None, :],
        other=0.0,
    )
    col_ok = (t0 + jt < t_end) & (jv < V)
    xt = tl.load(
        x_ptr + n * C_in * TV + c[:, None] * TV + ((t0 + jt) * V + jv)[None, :],
        mask=(c[:, None] < C_in) & col_ok[None, :],
        other=0.0,
    )
    return gr, xt


@triton.jit
def _gc_dw_kernel(
    g_ptr, x_ptr, a_ptr, dw_ptr,
    K, C_in, C_out, T, V, n_tb, num_tiles, tiles_per_prog,
    sak, sav, saw,
    BO: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, VP: tl.constexpr,
    PREC: tl.constexpr, ROUND: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """Grid (K * out blocks * in blocks, splits); g (N, C_out, T, V), x (N, C_in, T, V) contiguous.

    dw[split, k, o, c] = sum over the split's (n, t) of sum_v (sum_w g[n, o, t, w] a[k, v, w]) x[n, c, t, v].
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n_ob = tl.cdiv(C_out, BO)
    n_cb = tl.cdiv(C_in, BC)
    k = pid // (n_ob * n_cb)
    rem = pid % (n_ob * n_cb)
    po = rem // n_cb
    pc = rem % n_cb
    j = tl.arange(0, BT * VP)
    jt = j // VP
    jv = j % VP
    q = tl.arange(0, BO * BT)
    qo = po * BO + q // BT
    qt = q % BT
    o = po * BO + tl.arange(0, BO)
    c = pc * BC + tl.arange(0, BC)
    vv = tl.arange(0, VP)
    v_ok = vv < V
    # a_t[w, v] = a[k, v, w]
    a_t = tl.load(
        a_ptr + k * sak + vv[None, :] * sav + vv[:, None] * saw, mask=v_ok[:, None] & v_ok[None, :], other=0.0
    )
    acc = tl.zeros((BO, BC), dtype=tl.float32)
    tile0 = split * tiles_per_prog
    if PREFETCH:  # as in _gc_kernel: the next tile's loads are issued before this tile's products
        gr, xt = _dw_tile(g_ptr, x_ptr, tile0, C_in, C_out, T, V, n_tb, num_tiles, qo, qt, jt, jv, c, vv, BT)
    for i in range(tiles_per_prog):
        if PREFETCH:
            gn, xn = _dw_tile(
                g_ptr, x_ptr, tile0 + i + 1, C_in, C_out, T, V, n_tb, num_tiles, qo, qt, jt, jv, c, vv, BT
            )
        else:
            gr, xt = _dw_tile(
                g_ptr, x_ptr, tile0 + i, C_in, C_out, T, V, n_tb, num_tiles, qo, qt, jt, jv, c, vv, BT
            )
        h = tl.dot(gr, a_t, input_precision=PREC)  # tall (o, t) x v
        hw = tl.reshape(_operand(h, g_ptr, ROUND), (BO, BT * VP))
        acc = tl.dot(hw, tl.trans(xt), acc, input_precision=PREC)
        if PREFETCH:
            gr = gn
            xt = xn
    k_off = (split * K + k).to(tl.int64) * C_out * C_in
    tl.store(
        dw_ptr + k_off + o[:, None] * C_in + c[None, :], acc, mask=(o[:, None] < C_out) & (c[None, :] < C_in)
    )


# ------------------------------------------------------------------------------------------ configs
def _pow2(n, lo, hi):
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


# GPU defaults were chosen by compiling for sm_90 without a GPU (scripts/aot_check_graph_conv.py:
# triton.compile + cuobjdump -res-usage). What it prints with Triton 3.9 (2026-12-02) at the backbone
# shapes: no STACK (spills) for the forward, dX and dW launches, except at layer 1 (C_in 3) in bf16 (dX
# 72 bytes, a launch the ST-GCN input never needs; dW 24 bytes); the dA launch (AGCN only) spills 72
# bytes in bf16 at every shape, and 24 bytes in float32 at layer 1 (without wgmma there). Among the
# sweep candidates at C 256 in bf16, dW with BO 128 spills 296 bytes and dW with BT 4 at 4 warps 544.
# Timings on a GPU come from the sweep in scripts/gpu_check.py.
def fwd_config(c_in, c_out, dtype, device, need_da=False):
    """Tiles of `_gc_kernel`: dict(BO, BC, BT, num_warps, num_stages)."""
    if device.type != "cuda":
        cfg = dict(BO=_pow2(c_out, 16, 32), BC=_pow2(c_in, 16, 32), BT=2, num_warps=1, num_stages=1)
        cfg["prefetch"] = True
    elif dtype == torch.float32:  # 4-byte X elements: the compiler pipelines them (cp.async) itself
        bo = _pow2(c_out, 16, 64)
        cfg = dict(BO=bo, BC=_pow2(c_in, 16, 32), BT=2 if need_da else 4, num_warps=8 if bo >= 64 else 4)
        cfg.update(num_stages=2, prefetch=False)
    else:
        bo = _pow2(c_out, 16, 64)
        cfg = dict(BO=bo, BC=_pow2(c_in, 16, 64), BT=4, num_warps=8 if bo >= 64 else 4, num_stages=3)
        cfg["prefetch"] = True
    return {**cfg, **{k[4:]: v for k, v in OVERRIDE.items() if k.startswith("fwd_")}}


def dw_config(c_in, c_out, dtype, device):
    """Tiles of `_gc_dw_kernel`: dict(BO, BC, BT, num_warps, num_stages)."""
    if device.type != "cuda":
        cfg = dict(BO=_pow2(c_out, 16, 32), BC=_pow2(c_in, 16, 32), BT=2, num_warps=1, num_stages=1)
        cfg["prefetch"] = True
    else:
        bo, bc = _pow2(c_out, 16, 64), _pow2(c_in, 16, 64)
        stages = 2 if dtype == torch.float32 else 3
        cfg = dict(BO=bo, BC=bc, BT=4, num_warps=8 if bo * bc >= 64 * 64 else 4, num_stages=stages)
        cfg["prefetch"] = False  # bf16 with prefetch spills 120 bytes (sm_90, C 256); the sweep times both
    return {**cfg, **{k[3:]: v for k, v in OVERRIDE.items() if k.startswith("dw_")}}


def _num_sms(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def _vp(v):
    return max(16, triton.next_power_of_2(v))


def _precision(dtype):
    if dtype != torch.float32:
        return "tf32"  # ignored for 16-bit operands
    if PRECISION is not None:
        return PRECISION
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def _round_mode(x):
    if x.dtype == torch.float32:
        return 0
    if x.device.type == "cuda":
        return 1
    return 2 if x.dtype == torch.bfloat16 else 3


def _kernel_view(t):
    """The interpreter cannot multiply 16-bit floats: CPU tiles travel as float32 holding their values."""
    if t is not None and t.device.type != "cuda" and t.dtype != torch.float32:
        return t.float()
    return t


def _empty(shape, **kw):
    """Output allocation (the tests swap in a NaN-filled one to catch unwritten elements)."""
    return torch.empty(shape, **kw)


# --------------------------------------------------------------------------------------- launchers
def _launch_gc(x, w, a, bias, residual, relu, xa, need_y, need_da):
    """y = sum_k w_k x a_k (+ bias)(+ residual)(ReLU) and/or dA partials; w (K, C_out, C_in), a (K, V, V)
    any strides (passed to the kernel); x, bias, residual, xa are made contiguous (the kernel assumes it).
    Returns (y or None, da (K, V, V) float32 or None)."""
    x = x.contiguous()
    bias = None if bias is None else bias.contiguous()
    residual = None if residual is None else residual.contiguous()
    xa = None if xa is None else xa.contiguous()
    N, C_in, T, V = x.shape
    K, C_out = w.shape[0], w.shape[1]
    cfg = fwd_config(C_in, C_out, x.dtype, x.device, need_da)
    bo, bt, vp = cfg["BO"], cfg["BT"], _vp(V)
    n_tb = triton.cdiv(T, bt)
    num_tiles = N * n_tb
    n_ob = triton.cdiv(C_out, bo)
    round_mode = _round_mode(x)
    out_dtype = x.dtype
    xk, wk, ak = _kernel_view(x), _kernel_view(w), _kernel_view(a)
    rk, xak, bk = _kernel_view(residual), _kernel_view(xa), _kernel_view(bias)
    y = _empty((N, C_out, T, V), dtype=xk.dtype, device=x.device) if need_y else None
    # dA: one fp32 K x VP x VP partial per program (deterministic), summed below.
    da = _empty((num_tiles * n_ob, K, vp, vp), dtype=torch.float32, device=x.device) if need_da else None
    _gc_kernel[(num_tiles * n_ob,)](
        xk, wk, ak, bk if bk is not None else xk, rk if rk is not None else xk,
        y if y is not None else xk, xak if xak is not None else xk, da if da is not None else xk,
        C_in, C_out, T, V, n_tb,
        wk.stride(0), wk.stride(1), wk.stride(2), ak.stride(0), ak.stride(1), ak.stride(2),
        K=K, BO=bo, BC=cfg["BC"], BT=bt, VP=vp,
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, RELU=relu, STORE_Y=need_y, NEED_DA=need_da,
        PREC=_precision(x.dtype), ROUND=round_mode, PREFETCH=cfg["prefetch"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    if y is not None and y.dtype != out_dtype:
        y = y.to(out_dtype)
    if da is not None:
        da = da.sum(0)[:, :V, :V]
    return y, da


def _launch_dw(g, x, a):
    """dW (K, C_out, C_in) float32 = sum_{n,t} (g_nt a_k^T) x_nt^T for g (N, C_out, T, V); a any strides."""
    g, x = g.contiguous(), x.contiguous()
    N, C_in, T, V = x.shape
    C_out = g.shape[1]
    K = a.shape[0]
    cfg = dw_config(C_in, C_out, x.dtype, x.device)
    bo, bc, bt, vp = cfg["BO"], cfg["BC"], cfg["BT"], _vp(V)
    n_tb = triton.cdiv(T, bt)
    num_tiles = N * n_tb
    blocks = K * triton.cdiv(C_out, bo) * triton.cdiv(C_in, bc)
    splits = OVERRIDE.get("dw_splits") or triton.cdiv(4 * _num_sms(x.device), blocks)
    splits = max(1, min(splits, num_tiles))
    tiles = triton.cdiv(num_tiles, splits)
    splits = triton.cdiv(num_tiles, tiles)
    gk, xk, ak = _kernel_view(g), _kernel_view(x), _kernel_view(a)
    dw = _empty((splits, K, C_out, C_in), dtype=torch.float32, device=x.device)
    _gc_dw_kernel[(blocks, splits)](
        gk, xk, ak, dw, K, C_in, C_out, T, V, n_tb, num_tiles, tiles,
        ak.stride(0), ak.stride(1), ak.stride(2),
        BO=bo, BC=bc, BT=bt, VP=vp, PREC=_precision(x.dtype), ROUND=_round_mode(x), PREFETCH=cfg["prefetch"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return dw[0] if splits == 1 else dw.sum(0)


# -------------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("skelcl::graph_conv_fwd", mutates_args=())
def graph_conv_fwd_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    adjacency: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    relu: bool,
) -> torch.Tensor:
    """y (N, C_out, T, V) in x.dtype; x, weight, adjacency, residual one dtype; x, residual contiguous."""
    y, _ = _launch_gc(x, weight, adjacency, bias, residual, relu, None, True, False)
    return y


@graph_conv_fwd_op.register_fake
def _(x, weight, adjacency, bias, residual, relu):
    return x.new_empty((x.shape[0], weight.shape[1], x.shape[2], x.shape[3]))


@torch.library.custom_op("skelcl::graph_conv_bwd_data", mutates_args=())
def graph_conv_bwd_data_op(
    g: torch.Tensor,
    weight: torch.Tensor,
    adjacency: torch.Tensor,
    x: torch.Tensor,
    need_dx: bool,
    need_da: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx (N, C_in, T, V) in g.dtype or (0,), da (K, V, V) float32 or (0,)) for the gradient g of y."""
    dx, da = _launch_gc(
        g, weight.transpose(1, 2), adjacency.transpose(1, 2), None, None, False, x, need_dx, need_da
    )
    empty = g.new_empty((0,))
    return (dx if need_dx else empty), (da if need_da else empty.float())


@graph_conv_bwd_data_op.register_fake
def _(g, weight, adjacency, x, need_dx, need_da):
    dx = g.new_empty(x.shape if need_dx else (0,))
    da = g.new_empty(adjacency.shape if need_da else (0,), dtype=torch.float32)
    return dx, da


@torch.library.custom_op("skelcl::graph_conv_bwd_weight", mutates_args=())
def graph_conv_bwd_weight_op(g: torch.Tensor, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """dW (K, C_out, C_in) float32 for the gradient g (N, C_out, T, V) of y."""
    return _launch_dw(g, x, adjacency)


@graph_conv_bwd_weight_op.register_fake
def _(g, x, adjacency):
    return g.new_empty((adjacency.shape[0], g.shape[1], x.shape[1]), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, weight, adjacency, bias, residual, relu = inputs
    ctx.save_for_backward(x, weight, adjacency, output if relu else None)
    ctx.relu = relu
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, gy):
    x, weight, adjacency, y = ctx.saved_tensors
    need_x, need_w, need_a, need_b, need_r = ctx.needs_input_grad[:5]
    g = gy.to(x.dtype)
    if ctx.relu:
        g = torch.where(y > 0, g, torch.zeros((), dtype=g.dtype, device=g.device))
    g = g.contiguous()
    dx = dw = da = db = None
    if need_x or need_a:
        dx, da = graph_conv_bwd_data_op(g, weight, adjacency, x, need_x, need_a)
        dx = dx if need_x else None
        da = da.to(adjacency.dtype) if need_a else None
    if need_w:
        dw = graph_conv_bwd_weight_op(g, x, adjacency).to(weight.dtype)
    if need_b:
        db = g.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
    return dx, dw, da, db, (g if need_r else None), None


graph_conv_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def graph_conv_fused(x, weight, adjacency, bias, residual, relu):
    """Entry point for `graph_conv_triton`: inputs already one dtype (float32, bfloat16 or float16), any
    strides (weight and adjacency are read through their strides, the others made contiguous)."""
    return graph_conv_fwd_op(
        x.contiguous(),
        weight,
        adjacency,
        None if bias is None else bias.contiguous(),
        None if residual is None else residual.contiguous(),
        relu,
    )
