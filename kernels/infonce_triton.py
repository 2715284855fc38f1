"""Triton kernels for the dense part of InfoNCE: lse_i = log sum_{j kept} exp(<q_i, key_j> / tau).

Key set [k; queue], k (N, d) with gradient, queue (Q, d) without. Two kernels, no atomics:

- `_fwd_kernel`, grid (query blocks, splits): one program streams the key tiles of its split with an
  online log-sum-exp (base 2) and, when q needs a gradient, the softmax-weighted key average
  E_i = sum_j softmax_ij key_j (FlashAttention forward with V = K). Then dq_i = g_i / tau * E_i needs no
  second pass. Splitting the key range (flash-decoding) keeps the chip full when M is small and the
  queue long; the splits are merged on the host from per-split (lse, E).
- `_dk_kernel`, grid (key blocks of k): recomputes P^T tiles from the saved lse and accumulates
  dk_j = 1 / tau * sum_i g_i P_ij q_i over all query tiles. Queue keys get no gradient.

Saved for backward: lse (M,) and E (M, d) in float32; never an (M, N + Q) buffer. Both kernels run
under TRITON_INTERPRET=1 on CPU tensors (the tests). Registered as torch custom ops
(`skelcl::infonce_lse_fwd`, `skelcl::infonce_lse_dk`) with fake and autograd registrations, so
torch.compile treats them as opaque nodes.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from skelcl.kernels._triton_compat import patch_interpreter

patch_interpreter()  # Triton 3.6's interpreter under numpy >= 2.4 (CPU tests only)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

# Tile overrides for tuning runs (scripts/gpu_check.py) and tests: keys of the configs below,
# plus "splits" (number of key splits in the forward). Empty means: use the heuristics.
OVERRIDE: dict = {}
# Backward: dq = E * g / tau is written in row chunks of at most this many elements.
_DQ_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------- kernels
@triton.jit
def _fwd_tiles(
    acc,
    m_i,
    l_i,
    q,
    key_ptr,
    n_keys,
    t_lo,
    t_hi,
    d,
    scale2,
    offs_m,
    qg,
    kg_ptr,
    pos_ptr,
    M,
    col_off,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MASK_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    GROUPS: tl.constexpr,
    POS_TABLE: tl.constexpr,
    P: tl.constexpr,
    NEED_E: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Online log-sum-exp (and E accumulator) over key tiles t_lo..t_hi-1 of one key tensor, whose row c
    is key col_off + c of [k; queue] (kg_ptr: that tensor's group ids)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    for t in range(t_lo, t_hi):
        cols = t * BLOCK_N + offs_n
        ptrs = key_ptr + cols[:, None] * d + offs_d[None, :]
        if MASK_N:
            if EVEN_D:
                kt = tl.load(ptrs, mask=cols[:, None] < n_keys, other=0.0)
            else:
                kt = tl.load(ptrs, mask=(cols[:, None] < n_keys) & (offs_d[None, :] < d), other=0.0)
        else:
            if EVEN_D:
                kt = tl.load(ptrs)
            else:
                kt = tl.load(ptrs, mask=offs_d[None, :] < d, other=0.0)
        p_dt = kt.dtype
        if UPCAST:
            kt = kt.to(tl.float32)
        s = tl.dot(q, tl.trans(kt), input_precision=PREC)  # (BLOCK_M, BLOCK_N); base-2 logits: s * scale2
        if MASK_N:
            s = tl.where((cols < n_keys)[None, :], s, float("-inf"))
        if GROUPS:
            kg = tl.load(kg_ptr + cols, mask=cols < n_keys, other=0)
            left = qg[:, None] == kg[None, :]
            if POS_TABLE:
                for p in tl.static_range(P):
                    pp = tl.load(pos_ptr + offs_m * P + p, mask=offs_m < M, other=-1)
                    left = left & (pp[:, None] != (cols + col_off)[None, :])
            else:
                left = left & (offs_m[:, None] != (cols + col_off)[None, :])
            s = tl.where(left, float("-inf"), s)
        m_new = tl.maximum(m_i, tl.max(s, 1) * scale2)
        alpha = tl.exp2(m_i - m_new)
        p_ij = tl.exp2(s * scale2 - m_new[:, None])  # one FMA per logit before the exp2
        l_i = l_i * alpha + tl.sum(p_ij, 1)
        if NEED_E:
            acc = acc * alpha[:, None]
            acc = tl.dot(p_ij.to(p_dt).to(kt.dtype), kt, acc, input_precision=PREC)
        m_i = m_new
    return acc, m_i, l_i


# Sizes are not specialized (no recompile per ragged size, no constexpr 1); d keeps its
# divisibility-by-16 specialization, which the row addressing needs for wide loads.
@triton.jit(do_not_specialize=["M", "N", "NQ", "tiles_per_split"])
def _fwd_kernel(
    q_ptr,
    k_ptr,
    queue_ptr,
    pos_ptr,
    qg_ptr,
    kg_ptr,
    queue_g_ptr,
    lse_ptr,
    e_ptr,
    M,
    N,
    NQ,
    d,
    tiles_per_split,
    scale2,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr,
    GROUPS: tl.constexpr,
    QUEUE_GROUPS: tl.constexpr,
    POS_TABLE: tl.constexpr,
    P: tl.constexpr,
    NEED_E: tl.constexpr,
    HAS_QUEUE: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Per (query block, split): lse_s (base e) into lse_ptr[s, M], E_s into e_ptr[s, M, d]."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < M
    q_mask = row_ok[:, None] & (offs_d[None, :] < d)
    q = tl.load(q_ptr + offs_m[:, None] * d + offs_d[None, :], mask=q_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    if GROUPS or QUEUE_GROUPS:
        qg = tl.load(qg_ptr + offs_m, mask=row_ok, other=0)
    else:
        qg = offs_m

    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), -1.0e30, dtype=tl.float32)  # finite: fully masked tiles stay NaN-free
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)

    tiles_k = tl.cdiv(N, BLOCK_N)
    tiles_q = tl.cdiv(NQ, BLOCK_N)
    lo = pid_s * tiles_per_split
    hi = tl.minimum(lo + tiles_per_split, tiles_k + tiles_q)
    # k tiles: full ones without column masks, then the ragged last one.
    k_hi = tl.minimum(hi, tiles_k)
    k_full = tl.minimum(k_hi, N // BLOCK_N)
    acc, m_i, l_i = _fwd_tiles(
        acc, m_i, l_i, q, k_ptr, N, lo, k_full, d, scale2, offs_m, qg, kg_ptr, pos_ptr, M, 0,
        BLOCK_N, BLOCK_D, False, EVEN_D, GROUPS, POS_TABLE, P, NEED_E, PREC, UPCAST,
    )  # fmt: skip
    acc, m_i, l_i = _fwd_tiles(
        acc, m_i, l_i, q, k_ptr, N, tl.maximum(lo, k_full), k_hi, d, scale2, offs_m, qg, kg_ptr, pos_ptr, M,
        0, BLOCK_N, BLOCK_D, True, EVEN_D, GROUPS, POS_TABLE, P, NEED_E, PREC, UPCAST,
    )  # fmt: skip
    if HAS_QUEUE:  # queue row c is key N + c; left out by group only with QUEUE_GROUPS
        q_lo = tl.maximum(lo - tiles_k, 0)
        q_hi = tl.maximum(hi - tiles_k, 0)
        q_full = tl.minimum(q_hi, NQ // BLOCK_N)
        acc, m_i, l_i = _fwd_tiles(
            acc, m_i, l_i, q, queue_ptr, NQ, q_lo, q_full, d, scale2, offs_m, qg, queue_g_ptr, pos_ptr, M, N,
            BLOCK_N, BLOCK_D, False, EVEN_D, QUEUE_GROUPS, POS_TABLE, P, NEED_E, PREC, UPCAST,
        )  # fmt: skip
        acc, m_i, l_i = _fwd_tiles(
            acc, m_i, l_i, q, queue_ptr, NQ, tl.maximum(q_lo, q_full), q_hi, d, scale2, offs_m, qg,
            queue_g_ptr, pos_ptr, M, N, BLOCK_N, BLOCK_D, True, EVEN_D, QUEUE_GROUPS, POS_TABLE, P, NEED_E,
            PREC, UPCAST,
        )  # fmt: skip

    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # -inf where nothing was kept
    tl.store(lse_ptr + pid_s * M + offs_m, lse, mask=row_ok)
    if NEED_E:
        e = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(e_ptr + (pid_s * M + offs_m[:, None]) * d + offs_d[None, :], e, mask=q_mask)


@triton.jit(do_not_specialize=["M", "N"])
def _dk_kernel(
    q_ptr,
    k_ptr,
    lse_ptr,
    g_ptr,
    gmax_ptr,
    pos_ptr,
    qg_ptr,
    kg_ptr,
    dk_ptr,
    M,
    N,
    d,
    scale2,
    inv_tau,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUPS: tl.constexpr,
    POS_TABLE: tl.constexpr,
    P: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """dk[j] = gmax / tau * sum_i (g_i / gmax) exp(s_ij - lse_i) q_i for the BLOCK_N keys of this program."""
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_b = tl.arange(0, BLOCK_M)
    d_ok = offs_d[None, :] < d
    k_mask = (offs_n[:, None] < N) & d_ok
    kt = tl.load(k_ptr + offs_n[:, None] * d + offs_d[None, :], mask=k_mask, other=0.0)
    p_dt = kt.dtype
    if UPCAST:
        kt = kt.to(tl.float32)
    if GROUPS:
        kg = tl.load(kg_ptr + offs_n, mask=offs_n < N, other=0)
    else:
        kg = offs_n
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for t in range(0, tl.cdiv(M, BLOCK_M)):
        offs_m = t * BLOCK_M + offs_b
        row_ok = offs_m < M
        qt = tl.load(q_ptr + offs_m[:, None] * d + offs_d[None, :], mask=row_ok[:, None] & d_ok, other=0.0)
        if UPCAST:
            qt = qt.to(tl.float32)
        lse2 = tl.load(lse_ptr + offs_m, mask=row_ok, other=float("inf")) * 1.4426950408889634
        lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2)  # a row with no kept key: weight 0
        g = tl.load(g_ptr + offs_m, mask=row_ok, other=0.0)
        s = tl.dot(kt, tl.trans(qt), input_precision=PREC)  # (BLOCK_N, BLOCK_M)
        p_t = tl.exp2(s * scale2 - lse2[None, :])
        if GROUPS:
            qg = tl.load(qg_ptr + offs_m, mask=row_ok, other=0)
            left = kg[:, None] == qg[None, :]
            if POS_TABLE:
                for p in tl.static_range(P):
                    pp = tl.load(pos_ptr + offs_m * P + p, mask=row_ok, other=-1)
                    left = left & (offs_n[:, None] != pp[None, :])
            else:
                left = left & (offs_n[:, None] != offs_m[None, :])
            p_t = tl.where(left, 0.0, p_t)
        p_t = p_t * g[None, :]
        acc = tl.dot(p_t.to(p_dt).to(qt.dtype), qt, acc, input_precision=PREC)
    acc = acc * (tl.load(gmax_ptr) * inv_tau)
    tl.store(dk_ptr + offs_n[:, None] * d + offs_d[None, :], acc.to(dk_ptr.dtype.element_ty), mask=k_mask)


# ------------------------------------------------------------------------------------------ configs
def _block_d(d):
    return max(16, triton.next_power_of_2(d))


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per (dot mode, padded d, groups); dot modes: 16-bit inputs,
# float32 as tf32, float32 as 3xtf32 (torch's "highest" matmul precision). Picked for sm_90 from the
# compiler's output, without a GPU: scripts/infonce_sm90_static.py (registers, local-memory spills as
# LDL/STL counts, HGMMA tiles). The counts below are what it prints with Triton 3.9 (2026-12-02); the GPU
# machine's Triton 3.6 may differ (it was reported to spill more in the 3xtf32 forward). Every entry not
# marked compiles without LDL/STL. Not yet timed (scripts/gpu_check.py sweeps candidates). The groups
# variants (key and queue groups) hold more mask tiles, hence their own entries.
_FWD_TILES = {
    ("16bit", 64, False): (128, 128, 8, 3),
    ("16bit", 64, True): (128, 64, 8, 3),  # (128, 128) spills 26 LDL/STL with groups
    ("16bit", 128, False): (128, 128, 8, 3),
    ("16bit", 128, True): (128, 64, 8, 3),
    ("16bit", 256, False): (64, 64, 4, 2),
    ("16bit", 256, True): (64, 32, 4, 2),
    ("tf32", 64, False): (128, 64, 8, 3),
    ("tf32", 128, False): (128, 64, 8, 2),
    ("tf32", 128, True): (128, 32, 8, 2),
    ("tf32", 256, False): (64, 16, 8, 2),  # spills: 27 LDL/STL (101 with groups)
    ("tf32x3", 64, False): (128, 32, 8, 2),
    ("tf32x3", 128, False): (128, 16, 8, 2),  # spills: 30 LDL/STL (hi/lo copies of each operand)
    ("tf32x3", 256, False): (64, 16, 4, 1),  # spills heavily: 2,061 LDL/STL
}
_DK_TILES = {  # BLOCK_N keys held per program, BLOCK_M queries per step
    ("16bit", 64, False): (64, 128, 8, 3),
    ("16bit", 128, False): (64, 128, 8, 3),
    ("16bit", 128, True): (32, 128, 8, 3),
    ("16bit", 256, False): (32, 64, 4, 2),
    ("tf32", 64, False): (64, 64, 4, 2),
    ("tf32", 128, False): (64, 64, 4, 2),
    ("tf32", 128, True): (64, 64, 8, 2),
    ("tf32", 256, False): (16, 64, 8, 2),
    ("tf32", 256, True): (16, 32, 8, 2),
    ("tf32x3", 64, False): (16, 64, 4, 2),
    ("tf32x3", 128, False): (16, 64, 8, 2),  # spills: 46 LDL/STL (72 with groups)
    ("tf32x3", 256, False): (16, 64, 4, 1),  # spills heavily: 856 LDL/STL
}
_TILE_NAMES = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
SWEEP_FWD = {  # candidates timed by scripts/gpu_check.py (d = 128); the first is the default
    "bf16": [
        (128, 128, 8, 3),
        (128, 128, 8, 2),
        (128, 64, 8, 3),
        (128, 64, 8, 4),
        (64, 128, 4, 3),
        (64, 64, 4, 4),
    ],
    "fp32": [(128, 64, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3)],
}
SWEEP_DK = {
    "bf16": [
        (64, 128, 8, 3),
        (64, 128, 8, 2),
        (64, 128, 8, 4),
        (32, 128, 8, 3),
        (64, 64, 4, 3),
        (32, 64, 4, 4),
    ],
    "fp32": [(64, 64, 4, 2), (32, 64, 4, 3), (64, 128, 8, 2), (32, 128, 8, 2)],
}


def _tiles(table, prefix, d, dtype, device, groups):
    if device.type != "cuda":
        cfg = dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
    else:
        mode = "16bit" if dtype != torch.float32 else _precision(dtype, device)
        bd = min(max(_block_d(d), 64), 256)
        cfg = dict(zip(_TILE_NAMES, table.get((mode, bd, groups)) or table[(mode, bd, False)]))
    return {**cfg, **{k[len(prefix) :]: v for k, v in OVERRIDE.items() if k.startswith(prefix)}}


def fwd_config(d, dtype, device, groups=False):
    """Tiles of the forward kernel: dict(BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    return _tiles(_FWD_TILES, "fwd_", d, dtype, device, groups)


def dk_config(d, dtype, device, groups=False):
    """Tiles of the dk kernel: BLOCK_N keys held per program, BLOCK_M queries per loop step."""
    return _tiles(_DK_TILES, "dk_", d, dtype, device, groups)


def _num_sms(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def choose_splits(query_blocks, key_tiles, sms, min_tiles=8):
    """Number of key splits: the fewest that fill whole waves (>= 90%) of a one-program-per-SM launch,
    keeping >= min_tiles key tiles per split."""
    best, best_util = 1, 0.0
    max_splits = max(1, key_tiles // min_tiles)
    for s in range(1, min(max_splits, 256) + 1):
        progs = query_blocks * s
        util = progs / (math.ceil(progs / sms) * sms)
        if progs >= sms and util >= 0.9:
            return s
        if util > best_util + 1e-9:
            best, best_util = s, util
    return best


def _upcast(q):
    """The interpreter (CPU) keeps bfloat16 as raw 16-bit integers and cannot multiply them: it gets
    float32 tiles holding bfloat16 values instead (softmax weights are still rounded to bfloat16)."""
    return q.device.type != "cuda" and q.dtype == torch.bfloat16


def dot_mode(dtype, device):
    """Which kernel variant (tile table entry) inputs of this dtype select: "16bit" (bfloat16, float16),
    or for float32 "tf32" / "tf32x3" (GPU) / "ieee" (interpreter), from torch's float32 matmul
    precision. Under autocast info_nce casts to the 16-bit autocast dtype first, so "16bit"."""
    if dtype != torch.float32:
        return "16bit"
    return _precision(dtype, device)


def _precision(dtype, device):
    """Dot input precision: float32 follows torch.get_float32_matmul_precision(): "highest" gives
    3xtf32 on the GPU (near-float32 accuracy on the tensor cores; plain "ieee" dots have no tensor-core
    path and spill) and exact dots in the interpreter; otherwise tf32. 16-bit inputs ignore it."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3" if device.type == "cuda" else "ieee"
    return "tf32"


# --------------------------------------------------------------------------------------- launchers
def _empty(shape, **kw):
    """Output allocation (the tests swap in a NaN-filled one to catch unwritten elements)."""
    return torch.empty(shape, **kw)


def _fwd(q, k, queue, pos, q_group, k_group, queue_group, temperature, need_e):
    m, d = q.shape
    n = k.shape[0]
    nq = 0 if queue is None else queue.shape[0]
    cfg = fwd_config(d, q.dtype, q.device, q_group is not None)  # queue_group: same tiles as groups
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    key_tiles = triton.cdiv(n, bn) + triton.cdiv(nq, bn)
    query_blocks = triton.cdiv(m, bm)
    splits = OVERRIDE.get("splits") or choose_splits(query_blocks, key_tiles, _num_sms(q.device))
    per_split = triton.cdiv(key_tiles, min(splits, key_tiles))
    splits = triton.cdiv(key_tiles, per_split)
    if max(q.numel(), k.numel(), 0 if queue is None else queue.numel(), splits * m * d) >= 2**31:
        raise ValueError("info_nce_triton: a tensor has 2**31 or more elements (32-bit addressing)")
    f32 = dict(dtype=torch.float32, device=q.device)
    lse = _empty((splits, m), **f32)
    e = _empty((splits, m, d) if need_e else (1,), **f32)
    _fwd_kernel[(query_blocks, splits)](
        q, k, k if queue is None else queue, q if pos is None else pos,
        q if q_group is None else q_group, q if k_group is None else k_group,
        q if queue_group is None else queue_group,
        lse, e, m, n, nq, d, per_split, LOG2E / temperature,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=_block_d(d), EVEN_D=_block_d(d) == d,
        GROUPS=q_group is not None, QUEUE_GROUPS=queue_group is not None and nq > 0,
        POS_TABLE=pos is not None, P=1 if pos is None else pos.shape[1],
        NEED_E=need_e, HAS_QUEUE=nq > 0, PREC=_precision(q.dtype, q.device), UPCAST=_upcast(q),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    if splits == 1:
        return lse[0], (e[0] if need_e else q.new_empty((0, d), dtype=torch.float32))
    total = torch.logsumexp(lse, 0)
    if not need_e:
        return total, q.new_empty((0, d), dtype=torch.float32)
    # A row with no kept key in any split has total = -inf; exp(-inf - (-inf)) would be NaN.
    safe = torch.where(torch.isinf(total), torch.zeros((), dtype=total.dtype, device=total.device), total)
    w = torch.exp(lse - safe)  # (splits, M), 0 for empty splits
    return total, torch.einsum("sm,smd->md", w, e)


def _dk(q, k, lse, g, pos, q_group, k_group, temperature):
    m, d = q.shape
    n = k.shape[0]
    cfg = dk_config(d, q.dtype, q.device, q_group is not None)
    g = g.float().contiguous()
    gmax = g.abs().amax().clamp_min(1e-30).reshape(1)  # keeps g / gmax in range for float16 tiles
    dk = _empty(k.shape, dtype=k.dtype, device=k.device)
    _dk_kernel[(triton.cdiv(n, cfg["BLOCK_N"]),)](
        q, k, lse, g / gmax, gmax, q if pos is None else pos,
        q if q_group is None else q_group, q if k_group is None else k_group, dk,
        m, n, d, LOG2E / temperature, 1.0 / temperature,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=_block_d(d),
        GROUPS=q_group is not None, POS_TABLE=pos is not None, P=1 if pos is None else pos.shape[1],
        PREC=_precision(q.dtype, q.device), UPCAST=_upcast(q),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return dk


# -------------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("skelcl::infonce_lse_fwd", mutates_args=())
def lse_fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor | None,
    pos: torch.Tensor | None,
    q_group: torch.Tensor | None,
    k_group: torch.Tensor | None,
    queue_group: torch.Tensor | None,
    temperature: float,
    need_e: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lse (M,) float32, E (M, d) float32 or (0, d)) for contiguous q, k, queue of one dtype and
    contiguous int64 group ids."""
    return _fwd(q, k, queue, pos, q_group, k_group, queue_group, temperature, need_e)


@lse_fwd_op.register_fake
def _(q, k, queue, pos, q_group, k_group, queue_group, temperature, need_e):
    m, d = q.shape
    return q.new_empty((m,), dtype=torch.float32), q.new_empty((m if need_e else 0, d), dtype=torch.float32)


@torch.library.custom_op("skelcl::infonce_lse_dk", mutates_args=())
def lse_dk_op(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    g: torch.Tensor,
    pos: torch.Tensor | None,
    q_group: torch.Tensor | None,
    k_group: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """dk (N, d) in k.dtype: gradient of sum_i g_i lse_i with respect to k."""
    return _dk(q, k, lse, g, pos, q_group, k_group, temperature)


@lse_dk_op.register_fake
def _(q, k, lse, g, pos, q_group, k_group, temperature):
    return torch.empty_like(k)


def _setup_context(ctx, inputs, output):
    q, k, queue, pos, q_group, k_group, queue_group, temperature, need_e = inputs
    lse, e = output
    ctx.save_for_backward(q, k, queue, pos, q_group, k_group, queue_group, lse, e)
    ctx.temperature = temperature
    ctx.need_e = need_e
    ctx.mark_non_differentiable(e)


def _backward(ctx, g_lse, g_e):
    q, k, queue, pos, q_group, k_group, queue_group, lse, e = ctx.saved_tensors
    tau = ctx.temperature
    dq = dk = None
    if ctx.needs_input_grad[0]:
        if not ctx.need_e:  # q was not marked as needing a gradient at call time: recompute E
            _, e = lse_fwd_op(q, k, queue, pos, q_group, k_group, queue_group, tau, True)
        scale = g_lse.float() / tau
        dq = torch.empty_like(q)  # filled chunk by chunk: no float32 (M, d) temporary
        step = max(1, _DQ_CHUNK // q.shape[1])
        for a in range(0, q.shape[0], step):
            dq[a : a + step] = (e[a : a + step] * scale[a : a + step, None]).to(q.dtype)
    if ctx.needs_input_grad[1]:
        dk = lse_dk_op(q, k, lse, g_lse, pos, q_group, k_group, tau)
    return dq, dk, None, None, None, None, None, None, None


lse_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def dense_lse(q, k, queue, pos, q_group, k_group, queue_group, temperature):
    """lse (M,) float32 of the kept keys; q, k, queue one dtype; pos None or (M, P) int64; groups None or
    int64 of shapes (M,), (N,), (Q,)."""
    need_e = torch.is_grad_enabled() and q.requires_grad
    lse, _ = lse_fwd_op(
        q.contiguous(),
        k.contiguous(),
        None if queue is None else queue.contiguous(),
        None if pos is None else pos.contiguous(),
        None if q_group is None else q_group.contiguous(),
        None if k_group is None else k_group.contiguous(),
        None if queue_group is None else queue_group.contiguous(),
        temperature,
        need_e,
    )
    return lse
