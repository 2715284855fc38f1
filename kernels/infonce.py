"""InfoNCE over a key set [k; queue] that never holds the full query x key matrix.

Shapes: q (M, d) and k (N, d) receive gradients, queue (Q, d) or None receives none; the key set is
[k; queue] (N + Q rows). With s_ij = <q_i, key_j> / tau:

    loss_i = lse_i - plse_i
    lse_i  = log sum_{j kept} exp(s_ij)          (dense part: streamed over key chunks/tiles)
    plse_i = log sum_{p in pos(i)} exp(s_ip)     (sparse part: M x P gathered dot products)

Groups (e.g. video ids): key j < N is left out of row i when k_group[j] == q_group[i] and j is not one
of i's positives; with queue_group (Q,), queue row j (key index N + j) is left out of row i when
queue_group[j] == q_group[i] and N + j is not one of i's positives (the same rule). Without queue_group
no queue row is left out. positive is None (key i for query i, needs N >= M), (M,) or (M, P) long with
-1 padding. Positives are a set (a repeated index counts once); a row whose positives are all -1 has
loss +inf.

Gradient of the dense part: d lse_i / d s_ij = softmax_ij over the kept keys, so
    dq_i = g_i / tau * sum_j softmax_ij key_j,     dk_j = 1 / tau * sum_i g_i softmax_ij q_i,
recomputed chunk by chunk in backward. A row with no kept key gets softmax weight 0 (its loss is NaN,
its gradient 0, never NaN). The sparse part saves only its inputs and works on row chunks of (rows, P, d)
gathers; its gradients are written chunk by chunk in the input dtypes.

`info_nce_reference` is the chunked PyTorch path (float64 for gradcheck; the CPU path before
info_nce_cpu, SKELCL_INFONCE=reference); `info_nce_cpu` the CPU fast path (the whole logit matrix held
once, see its docstring); `info_nce_triton` the Triton path (CUDA, or CPU under TRITON_INTERPRET=1);
`info_nce` dispatches on the device. The loss is float32 (float64 for float64 inputs) whatever the input
dtype.

Precision: under autocast (CUDA or CPU, bfloat16 / float16) q, k and queue are cast to the autocast
dtype on entry (as a matmul would be), so mixed-precision training runs the 16-bit kernel whatever
F.normalize or the queue buffers return; accumulation is float32 either way. Outside autocast, float32
inputs follow torch.get_float32_matmul_precision() on the GPU: "highest" (PyTorch's default) runs the
3xtf32 variant (near-float32 accuracy, slower, its tiles spill), "high" / "medium" run tf32.
All tensor arguments may be non-contiguous views.
"""

from __future__ import annotations

import logging
import os

import torch

_REDUCTIONS = ("none", "mean", "sum")
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_D = 256
# Reference: at most this many logits per chunk (16 MiB in float32).
_CHUNK_ELEMENTS = 1 << 22
# Positive term: at most this many gathered (row, positive, feature) elements per chunk (4 MiB in float32).
_POS_CHUNK = 1 << 20
# CPU fast path: the largest logit matrix M x (N + Q) it holds (bytes; SKELCL_INFONCE_DENSE_MB overrides),
# in key blocks of at most _DENSE_BLOCK logits (16 MiB in float32: in L3, and below glibc's 32 MiB mmap cap).
_DENSE_BYTES = 512 << 20
_DENSE_BLOCK = 1 << 22
# CPU fast path: exp without the row maximum subtracted while |s_ij| <= this bound (exp(60) * 2^40 keys
# stays far below the float32 maximum, exp(-60) far above its smallest normal number).
_EXP_BOUND = 60.0
_log = logging.getLogger("skelcl.kernels")


def _check_inputs(
    name, q, k, queue, positive, q_group, k_group, temperature, reduction, dtypes, queue_group=None
):
    """Raise ValueError naming the argument at fault; returns nothing."""
    for arg, t in (("q", q), ("k", k), ("queue", queue)):
        if t is None and arg == "queue":
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: {arg} must be a tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name}: {arg} must be 2-D (rows, d), got shape {tuple(t.shape)}")
        if t.dtype not in dtypes:
            names = ", ".join(str(x).replace("torch.", "") for x in dtypes)
            got = str(t.dtype).replace("torch.", "")
            raise ValueError(f"{name}: {arg} has dtype {got}; expected one of {names}")
        if t.device != q.device:
            raise ValueError(f"{name}: {arg} is on {t.device} but q is on {q.device}")
    m, d = q.shape
    n = k.shape[0]
    if m == 0 or n == 0:
        raise ValueError(f"{name}: q and k need at least one row, got M={m}, N={n}")
    if not 1 <= d <= _MAX_D:
        raise ValueError(f"{name}: feature size d={d} is outside 1..{_MAX_D}")
    if k.shape[1] != d:
        raise ValueError(f"{name}: k has d={k.shape[1]} but q has d={d}")
    if queue is not None and queue.shape[1] != d:
        raise ValueError(f"{name}: queue has d={queue.shape[1]} but q has d={d}")
    if positive is None:
        if n < m:
            raise ValueError(
                f"{name}: positive=None pairs query i with key i, needs N >= M; got M={m}, N={n}"
            )
    else:
        if not isinstance(positive, torch.Tensor) or positive.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name}: positive must be an int64 (or int32) tensor of key indices")
        if positive.dim() not in (1, 2) or positive.shape[0] != m or positive.numel() == 0:
            shape = tuple(positive.shape)
            raise ValueError(f"{name}: positive must have shape (M,) or (M, P) with M={m}, got {shape}")
        if positive.device != q.device:
            raise ValueError(f"{name}: positive is on {positive.device} but q is on {q.device}")
        if positive.device.type == "cpu" and not torch.compiler.is_compiling():
            total = n + (0 if queue is None else queue.shape[0])
            lo, hi = int(positive.min()), int(positive.max())
            if lo < -1 or hi >= total:
                bad = lo if lo < -1 else hi
                raise ValueError(f"{name}: positive holds {bad}; valid are -1 (padding) and 0..{total - 1}")
    if (q_group is None) != (k_group is None):
        raise ValueError(f"{name}: give both q_group and k_group, or neither")
    if q_group is not None:
        for arg, t, rows in (("q_group", q_group, m), ("k_group", k_group, n)):
            if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"{name}: {arg} must be an int64 (or int32) tensor")
            if tuple(t.shape) != (rows,):
                raise ValueError(f"{name}: {arg} must have shape ({rows},), got {tuple(t.shape)}")
            if t.device != q.device:
                raise ValueError(f"{name}: {arg} is on {t.device} but q is on {q.device}")
    if queue_group is not None:
        if q_group is None:
            raise ValueError(f"{name}: queue_group needs q_group and k_group (groups of queries, keys)")
        if queue is None:
            raise ValueError(f"{name}: queue_group given without a queue")
        t = queue_group
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name}: queue_group must be an int64 (or int32) tensor")
        if tuple(t.shape) != (queue.shape[0],):
            raise ValueError(f"{name}: queue_group must have shape ({queue.shape[0]},), got {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{name}: queue_group is on {t.device} but q is on {q.device}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"{name}: temperature must be a positive number, got {temperature!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _positive_table(positive, m, device):
    """(M, P) int64 table with -1 padding, or None for the diagonal (key i for query i)."""
    if positive is None:
        return None
    positive = positive.to(device=device, dtype=torch.int64)
    return positive[:, None] if positive.dim() == 1 else positive


def _no_autocast(device):
    """Autocast off for the kernels' own arithmetic (inputs are cast once, on entry)."""
    return torch.autocast(device.type, enabled=False)


def _autocast_dtype(device):
    """The autocast dtype when autocast is on for this device type (16-bit only), else None."""
    dev = device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        if dtype in (torch.bfloat16, torch.float16):
            return dtype
    return None


def _positive_rows(k, queue, pos, a, b, dtype):
    """Keys [k; queue][pos[a:b]] as (b - a, P, d) in dtype; -1 padding reads key 0 (masked later)."""
    n = k.shape[0]
    idx = pos[a:b]
    rows = k[idx.clamp(0, n - 1)].to(dtype)
    if queue is not None:
        qrows = queue[(idx - n).clamp(0, queue.shape[0] - 1)].to(dtype)
        rows = torch.where((idx >= n)[..., None], qrows, rows)
    return rows


class _PositiveLogits(torch.autograd.Function):
    """s_ip = <q_i, key_{pos_ip}> / tau, (M, P) in compute_dtype (P = 1 for the diagonal pos=None).

    Row chunks of at most _POS_CHUNK gathered elements; saves only its inputs (no compute-dtype copies
    of q or the keys); backward writes dq (and dk for the diagonal) chunk by chunk into tensors of the
    input dtypes. Queue keys get no gradient.
    """

    @staticmethod
    def forward(ctx, q, k, queue, pos, temperature, compute_dtype):
        m, d = q.shape
        npos = 1 if pos is None else pos.shape[1]
        step = max(1, _POS_CHUNK // (npos * d))
        s = torch.empty((m, npos), dtype=compute_dtype, device=q.device)
        for a in range(0, m, step):
            b = min(a + step, m)
            qa = q[a:b].to(compute_dtype)
            if pos is None:
                s[a:b, 0] = (qa * k[a:b].to(compute_dtype)).sum(-1)
            else:
                s[a:b] = torch.einsum("rd,rpd->rp", qa, _positive_rows(k, queue, pos, a, b, compute_dtype))
        ctx.save_for_backward(q, k, queue, pos)
        ctx.temperature, ctx.compute_dtype, ctx.step = temperature, compute_dtype, step
        return s.div_(temperature)

    @staticmethod
    def backward(ctx, gs):
        q, k, queue, pos = ctx.saved_tensors
        cdt, step = ctx.compute_dtype, ctx.step
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        m, n = q.shape[0], k.shape[0]
        gs = gs.to(cdt) / ctx.temperature
        dq = torch.empty_like(q) if need_q else None
        dk = None
        if need_k:  # the diagonal touches key i once: write it directly; a table may repeat keys
            dk = torch.zeros_like(k) if pos is None else torch.zeros(k.shape, dtype=cdt, device=k.device)
        with _no_autocast(q.device):
            for a in range(0, m, step):
                b = min(a + step, m)
                if need_q:
                    if pos is None:
                        dq[a:b] = (gs[a:b] * k[a:b].to(cdt)).to(q.dtype)
                    else:
                        rows = _positive_rows(k, queue, pos, a, b, cdt)
                        dq[a:b] = torch.einsum("rp,rpd->rd", gs[a:b], rows).to(q.dtype)
                if need_k:
                    qa = q[a:b].to(cdt)
                    if pos is None:
                        dk[a:b] = (gs[a:b] * qa).to(k.dtype)
                    else:
                        idx = pos[a:b]
                        in_k = (idx >= 0) & (idx < n)
                        w = torch.where(in_k, gs[a:b], torch.zeros((), dtype=cdt, device=gs.device))
                        contrib = (w[:, :, None] * qa[:, None, :]).reshape(-1, qa.shape[1])
                        dk.index_add_(0, idx.clamp(0, n - 1).reshape(-1), contrib)
        if dk is not None and pos is not None:
            dk = dk.to(k.dtype)
        return dq, dk, None, None, None, None


def positive_logsumexp(q, k, queue, pos, temperature, compute_dtype):
    """plse_i = log sum_p exp(<q_i, key_p> / tau), (M,) in compute_dtype, differentiable in q and k.

    pos is None (diagonal) or an (M, P) table with -1 padding; a repeated index counts once. Memory: the
    (M, P) logits plus one row chunk of (rows, P, d) gathers.
    """
    queue = None if queue is None else queue.detach()
    s = _PositiveLogits.apply(q, k, queue, pos, temperature, compute_dtype)
    if pos is None:
        return s[:, 0]
    valid = pos >= 0
    if pos.shape[1] > 1:  # a repeated index counts once: positives are a set of keys
        npos = pos.shape[1]
        earlier = torch.ones(npos, npos, dtype=torch.bool, device=pos.device).tril(-1)
        valid = valid & ~((pos[:, :, None] == pos[:, None, :]) & earlier).any(2)
    return torch.logsumexp(s.masked_fill(~valid, float("-inf")), 1)


def _left_out(q_group, col_group, pos, rows, cols):
    """Boolean (len(rows), len(cols)) mask of keys cols (indices into [k; queue], groups col_group) left
    out of the denominators of queries rows."""
    same = q_group[rows][:, None] == col_group[None, :]
    if pos is None:
        is_pos = rows[:, None] == cols[None, :]
    else:
        is_pos = (pos[rows][:, :, None] == cols[None, None, :]).any(1)
    return same & ~is_pos


def _key_chunks(n, total, chunk):
    """(start, stop, from_k) over the key set, chunks never straddling the k / queue boundary."""
    for a in range(0, n, chunk):
        yield a, min(a + chunk, n), True
    for a in range(n, total, chunk):
        yield a, min(a + chunk, total), False


def _mask_chunk(s, q_group, k_group, queue_group, pos, rows, a, b, n):
    """Logits s of key chunk [a, b) of [k; queue] with the left-out keys set to -inf."""
    if q_group is None:
        return s
    if b <= n:
        col_group = k_group[a:b]
    elif queue_group is not None:
        col_group = queue_group[a - n : b - n]
    else:
        return s
    cols = torch.arange(a, b, device=s.device)
    return s.masked_fill(_left_out(q_group, col_group, pos, rows, cols), float("-inf"))


class _ChunkedLSE(torch.autograd.Function):
    """lse_i = log sum_{j kept} exp(<q_i, key_j> / tau), streamed over key chunks in both passes."""

    @staticmethod
    def forward(ctx, q, k, queue, pos, q_group, k_group, queue_group, temperature, compute_dtype):
        m, n = q.shape[0], k.shape[0]
        total = n + (0 if queue is None else queue.shape[0])
        chunk = max(16, _CHUNK_ELEMENTS // (m * (1 if pos is None else pos.shape[1] + 1)))
        qc = q.to(compute_dtype)
        rows = torch.arange(m, device=q.device)
        lse = torch.full((m,), float("-inf"), dtype=compute_dtype, device=q.device)
        for a, b, from_k in _key_chunks(n, total, chunk):
            keys = k[a:b] if from_k else queue[a - n : b - n]
            s = qc @ keys.to(compute_dtype).t() / temperature
            s = _mask_chunk(s, q_group, k_group, queue_group, pos, rows, a, b, n)
            lse = torch.logaddexp(lse, torch.logsumexp(s, 1))
        ctx.save_for_backward(q, k, queue, pos, q_group, k_group, queue_group, lse)
        ctx.temperature, ctx.compute_dtype, ctx.chunk = temperature, compute_dtype, chunk
        return lse

    @staticmethod
    def backward(ctx, g):
        q, k, queue, pos, q_group, k_group, queue_group, lse = ctx.saved_tensors
        tau, cdt = ctx.temperature, ctx.compute_dtype
        m, n = q.shape[0], k.shape[0]
        total = n + (0 if queue is None else queue.shape[0])
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        qc = q.to(cdt)
        g = g.to(cdt)
        rows = torch.arange(m, device=q.device)
        # A row with no kept key has lse = -inf and softmax 0 / 0: give it weight 0, not NaN.
        lse_safe = torch.where(torch.isinf(lse), torch.zeros((), dtype=lse.dtype, device=lse.device), lse)
        dq = torch.zeros_like(qc) if need_q else None
        dk = torch.zeros(k.shape, dtype=cdt, device=k.device) if need_k else None
        for a, b, from_k in _key_chunks(n, total, ctx.chunk):
            if not (need_q or (need_k and from_k)):
                continue
            keys = (k[a:b] if from_k else queue[a - n : b - n]).to(cdt)
            s = _mask_chunk(qc @ keys.t() / tau, q_group, k_group, queue_group, pos, rows, a, b, n)
            w = torch.exp(s - lse_safe[:, None]) * g[:, None]  # g_i * softmax_ij
            if need_q:
                dq += w @ keys
            if need_k and from_k:
                dk[a:b] += w.t() @ qc
        dq = None if dq is None else (dq / tau).to(q.dtype)
        dk = None if dk is None else (dk / tau).to(k.dtype)
        return dq, dk, None, None, None, None, None, None, None


def _queue_left_out(q_group, queue_group, pos, n):
    """(rows, cols): the (query, queue row) pairs left out of the denominators, queue_group[col] ==
    q_group[row] and n + col not one of row's positives, found through the sorted queue groups: the cost
    grows with the number of such pairs, not with M x Q."""
    vals, order = torch.sort(queue_group)
    lo = torch.searchsorted(vals, q_group)
    counts = torch.searchsorted(vals, q_group, right=True) - lo
    rows = torch.repeat_interleave(torch.arange(q_group.shape[0], device=q_group.device), counts)
    start = (torch.cumsum(counts, 0) - counts)[rows]
    cols = order[lo[rows] + torch.arange(rows.shape[0], device=rows.device) - start]
    if pos is not None and rows.numel():
        kept = ~(pos[rows] == (cols + n)[:, None]).any(1)
        rows, cols = rows[kept], cols[kept]
    return rows, cols


class _DenseLSE(torch.autograd.Function):
    """lse_i = log sum_{j kept} exp(s_ij), s = (q / tau) [k; queue]^T held whole, computed once, in key
    blocks of at most _DENSE_BLOCK logits (one block fits the L3 cache, and glibc serves it from the heap
    the allocator setting keeps mapped, not from fresh pages):

        forward:  s_b = (q / tau) @ keys_b^T; left-out entries -inf (blocks of k by a dense mask, blocks of
                  the queue by the sparse pairs of _queue_left_out); p_b = exp(s_b - c) in place,
                  c = 0 while |s| <= _EXP_BOUND (bound: max |q_i| max |key_j| / tau), else the row max;
                  l = sum_b p_b.sum(1), lse = log(l) + c
        backward: w_b = p_b * g / l (softmax times g), dq = sum_b w_b @ keys_b / tau,
                  dk = w_k^T @ q / tau over the blocks of k; the queue gets no gradient.
    """

    @staticmethod
    def forward(ctx, q, k, queue, pos, q_group, k_group, queue_group, temperature, compute_dtype):
        m, n = q.shape[0], k.shape[0]
        cdt = compute_dtype
        total = n + (0 if queue is None else queue.shape[0])
        qs = q.to(cdt) * (1.0 / temperature)
        kc = k.to(cdt)
        qu = None if queue is None else queue.to(cdt)
        norm = max(float(torch.linalg.vector_norm(x, dim=1).amax()) for x in (kc, qu) if x is not None)
        bounded = float(torch.linalg.vector_norm(qs, dim=1).amax()) * norm <= _EXP_BOUND
        pairs = None
        if q_group is not None and queue_group is not None:
            pairs = _queue_left_out(q_group, queue_group, pos, n)
        rows = torch.arange(m, device=q.device)
        blocks = list(_key_chunks(n, total, max(1, _DENSE_BLOCK // m)))
        s, l = [], torch.zeros(m, dtype=cdt, device=q.device)
        for a, b, from_k in blocks:
            sb = torch.mm(qs, (kc[a:b] if from_k else qu[a - n : b - n]).t())
            if q_group is not None and from_k:
                cols = torch.arange(a, b, device=q.device)
                sb.masked_fill_(_left_out(q_group, k_group[a:b], pos, rows, cols), float("-inf"))
            elif pairs is not None:
                r, c = pairs
                sel = (c >= a - n) & (c < b - n)
                sb[r[sel], c[sel] - (a - n)] = float("-inf")
            if bounded:
                l += sb.exp_().sum(1)
            s.append(sb)
        shift = None
        if not bounded:
            shift = torch.stack([sb.amax(1) for sb in s]).amax(0)
            shift = torch.where(torch.isinf(shift), torch.zeros((), dtype=cdt, device=q.device), shift)
            for sb in s:
                l += sb.sub_(shift[:, None]).exp_().sum(1)
        lse = l.log()
        if shift is not None:
            lse = lse + shift
        ctx.save_for_backward(q, k, queue, l, *s)
        ctx.temperature, ctx.compute_dtype, ctx.blocks = temperature, cdt, blocks
        return lse

    @staticmethod
    def backward(ctx, g):
        q, k, queue, l, *p = ctx.saved_tensors
        cdt, inv_tau = ctx.compute_dtype, 1.0 / ctx.temperature
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = k.shape[0]
        zero = torch.zeros((), dtype=cdt, device=g.device)
        w = torch.where(l > 0, g.to(cdt) / l, zero)[:, None]  # rows with no kept key: weight 0
        dq = torch.zeros(q.shape, dtype=cdt, device=q.device) if need_q else None
        dk = torch.empty(k.shape, dtype=cdt, device=k.device) if need_k else None
        qc = q.to(cdt) if need_k else None
        for (a, b, from_k), pb in zip(ctx.blocks, p):
            if not (need_q or (need_k and from_k)):
                continue
            wb = pb * w
            if need_q:
                dq.addmm_(wb, (k[a:b] if from_k else queue[a - n : b - n]).to(cdt))
            if need_k and from_k:
                torch.mm(wb.t(), qc, out=dk[a:b])
        dq = None if dq is None else dq.mul_(inv_tau).to(q.dtype)
        dk = None if dk is None else dk.mul_(inv_tau).to(k.dtype)
        return dq, dk, None, None, None, None, None, None, None


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _autocast_inputs(q, k, queue):
    """Under autocast (CUDA or CPU, 16-bit dtype) q, k and queue are cast to the autocast dtype, as a
    matmul would be; float64 stays float64. Accumulation stays float32 either way."""
    dtype = _autocast_dtype(q.device)
    if dtype is None:
        return q, k, queue
    cast = [t if t is None or t.dtype == torch.float64 else t.to(dtype) for t in (q, k, queue)]
    return tuple(cast)


def _groups(q_group, k_group, queue_group):
    """Group ids as contiguous int64 (views of any strides are accepted)."""
    return tuple(None if t is None else t.long().contiguous() for t in (q_group, k_group, queue_group))


_ALL_DTYPES = _TRITON_DTYPES + (torch.float64,)  # what the reference and CPU paths accept


def _prepare(name, dtypes, q, k, queue, positive, q_group, k_group, queue_group, temperature, reduction):
    """What every entry point does first: check the inputs (errors name `name`), cast under autocast, build
    the (M, P) positive table and the int64 groups. Returns (q, k, queue, pos, (qg, kg, queue_g), tau)."""
    _check_inputs(name, q, k, queue, positive, q_group, k_group, temperature, reduction, dtypes, queue_group)
    q, k, queue = _autocast_inputs(q, k, queue)
    pos = _positive_table(positive, q.shape[0], q.device)
    return q, k, queue, pos, _groups(q_group, k_group, queue_group), float(temperature)


def info_nce_reference(
    q,
    k,
    queue=None,
    *,
    positive=None,
    q_group=None,
    k_group=None,
    queue_group=None,
    temperature=0.07,
    reduction="mean",
):
    """Chunked PyTorch InfoNCE (see module docstring); memory O(M * chunk + (M * P + N) * d).

    Accepts float32, bfloat16, float16 and float64; computes in float32 (float64 for float64 inputs).
    """
    args = (q, k, queue, positive, q_group, k_group, queue_group, temperature, reduction)
    q, k, queue, pos, (qg, kg, queue_g), temperature = _prepare("info_nce_reference", _ALL_DTYPES, *args)
    cdt = torch.float64 if torch.float64 in (q.dtype, k.dtype) else torch.float32
    qd = None if queue is None else queue.detach()
    with _no_autocast(q.device):
        lse = _ChunkedLSE.apply(q, k, qd, pos, qg, kg, queue_g, temperature, cdt)
        loss = lse - positive_logsumexp(q, k, qd, pos, temperature, cdt)
        return _reduce(loss, reduction)


def _dense_budget() -> int:
    """Bytes the CPU fast path may hold for the logit matrix (SKELCL_INFONCE_DENSE_MB, default 512)."""
    mb = os.environ.get("SKELCL_INFONCE_DENSE_MB")
    return _DENSE_BYTES if mb is None else int(float(mb) * (1 << 20))


_logged = set()


def _log_once(message):
    if message not in _logged:
        _logged.add(message)
        _log.info(message)


def info_nce_cpu(
    q,
    k,
    queue=None,
    *,
    positive=None,
    q_group=None,
    k_group=None,
    queue_group=None,
    temperature=0.07,
    reduction="mean",
):
    """CPU fast path of InfoNCE; the contract of info_nce_reference (same dtypes, float32 loss, float64 for
    float64 inputs). It holds the whole logit matrix once (_DenseLSE): one (M, d) x (d, N + Q) product
    forward and one per gradient backward, the temperature folded into q, exp without a max pass while
    the logits are bounded, the groups of the queue left out through sparse index pairs. When the
    M x (N + Q) logits need more than the budget (SKELCL_INFONCE_DENSE_MB, default 512 MiB) it logs one
    line and runs info_nce_reference (chunked, same result)."""
    args = (q, k, queue, positive, q_group, k_group, queue_group, temperature, reduction)
    q, k, queue, pos, (qg, kg, queue_g), temperature = _prepare("info_nce_cpu", _ALL_DTYPES, *args)
    cdt = torch.float64 if torch.float64 in (q.dtype, k.dtype) else torch.float32
    total = k.shape[0] + (0 if queue is None else queue.shape[0])
    need = q.shape[0] * total * torch.empty((), dtype=cdt).element_size()
    if need > _dense_budget():
        _log_once(
            f"info_nce_cpu: {q.shape[0]} x {total} logits need {need >> 20} MiB, over the "
            f"{_dense_budget() >> 20} MiB budget (SKELCL_INFONCE_DENSE_MB): chunked info_nce_reference"
        )
        return info_nce_reference(
            q, k, queue, positive=positive, q_group=q_group, k_group=k_group, queue_group=queue_group,
            temperature=temperature, reduction=reduction,
        )  # fmt: skip
    qd = None if queue is None else queue.detach()
    with _no_autocast(q.device):
        lse = _DenseLSE.apply(q, k, qd, pos, qg, kg, queue_g, temperature, cdt)
        loss = lse - positive_logsumexp(q, k, qd, pos, temperature, cdt)
        return _reduce(loss, reduction)


def info_nce_triton(
    q,
    k,
    queue=None,
    *,
    positive=None,
    q_group=None,
    k_group=None,
    queue_group=None,
    temperature=0.07,
    reduction="mean",
):
    """Triton InfoNCE (CUDA, or CPU under TRITON_INTERPRET=1); same contract as info_nce_reference.

    Inputs float32 (tf32 dots when torch.get_float32_matmul_precision() is not "highest"), bfloat16 or
    float16; mixed dtypes are promoted. Accumulates in float32; returns a float32 loss.
    """
    args = (q, k, queue, positive, q_group, k_group, queue_group, temperature, reduction)
    q, k, queue, pos, (qg, kg, queue_g), temperature = _prepare("info_nce_triton", _TRITON_DTYPES, *args)
    from skelcl.kernels import infonce_triton  # imports triton (TRITON_INTERPRET is read at import)

    cdt = q.dtype
    for t in (k, queue):
        if t is not None:
            cdt = torch.promote_types(cdt, t.dtype)
    q, k = q.to(cdt), k.to(cdt)
    qd = None if queue is None else queue.detach().to(cdt)
    with _no_autocast(q.device):
        lse = infonce_triton.dense_lse(q, k, qd, pos, qg, kg, queue_g, temperature)
        loss = lse - positive_logsumexp(q, k, qd, pos, temperature, torch.float32)
        return _reduce(loss, reduction)


def info_nce(
    q,
    k,
    queue=None,
    *,
    positive=None,
    q_group=None,
    k_group=None,
    queue_group=None,
    temperature=0.07,
    reduction="mean",
):
    """Dispatcher: info_nce_triton on CUDA tensors (16-bit / float32), info_nce_cpu on CPU tensors,
    info_nce_reference otherwise (float64 on CUDA).

    SKELCL_INFONCE=reference in the environment forces the chunked reference (the CPU path before
    info_nce_cpu), SKELCL_INFONCE=triton the Triton path (on CPU tensors that needs TRITON_INTERPRET=1 set
    before the first import of Triton)."""
    choice = os.environ.get("SKELCL_INFONCE", "auto")
    fast = all(t is None or t.dtype in _TRITON_DTYPES for t in (q, k, queue))
    fast = fast and (q.is_cuda or choice == "triton") and choice != "reference"
    cpu = not fast and choice != "reference" and q.device.type == "cpu"
    fn = info_nce_triton if fast else info_nce_cpu if cpu else info_nce_reference
    return fn(
        q,
        k,
        queue,
        positive=positive,
        q_group=q_group,
        k_group=k_group,
        queue_group=queue_group,
        temperature=temperature,
        reduction=reduction,
    )
