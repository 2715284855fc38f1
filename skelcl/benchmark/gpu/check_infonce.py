"""Section check_infonce: the InfoNCE kernel against float64 with fresh random inputs and NaN-poisoned
outputs: in-batch 65,536^2 bf16 (loss and dq of 256 sampled rows, dk of 256 sampled keys), 4,096 x (4,096 +
1,048,576) bf16 (loss, dq of sampled rows), and a ragged case with positives, groups and queue groups."""

from __future__ import annotations

import time

import torch

from skelcl.benchmark.gpu.common import TAU, C, D, Poisoned, emit, rel, tag_of, unit_rows
from skelcl.benchmark.gpu.rows import infonce_shapes


def sampled_check(name, q, k, queue, rows, check_dk):
    """info_nce_triton (mean) against float64 on sampled rows: loss_i, dq_i and (check_dk) dk_j of sampled
    keys j, the latter with lse over all queries from a chunked float32 pass (full-precision dots)."""

    m, n = q.shape[0], k.shape[0]
    keys = k if queue is None else torch.cat([k, queue])
    with Poisoned(C.it):
        qt, kt = q.clone().requires_grad_(), k.clone().requires_grad_()
        C.infonce.info_nce_triton(qt, kt, queue, temperature=TAU).backward()
        with torch.no_grad():
            per_row = C.infonce.info_nce_triton(q, k, queue, temperature=TAU, reduction="none")
        C.bench.sync()
    finite = all(bool(torch.isfinite(t).all()) for t in (per_row, qt.grad, kt.grad))
    s = q[rows].double() @ keys.double().t() / TAU  # (R, N + Q)
    lse = torch.logsumexp(s, 1)
    loss_ref = lse - s[torch.arange(len(rows), device=q.device), rows]
    p = torch.exp(s - lse[:, None])
    dq_ref = (p @ keys.double() - k[rows].double()) / (TAU * m)
    errs = dict(loss=rel(per_row[rows], loss_ref), dq=rel(qt.grad[rows], dq_ref))
    if check_dk:
        prec = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        lse_all = torch.empty(m, dtype=torch.float64, device=q.device)
        step = max(1, (1 << 28) // max(1, keys.shape[0]))
        for a in range(0, m, step):
            logits = q[a : a + step].float() @ keys.float().t() / TAU
            lse_all[a : a + step] = torch.logsumexp(logits, 1).double()
        torch.set_float32_matmul_precision(prec)
        cols = rows[rows < n]
        sc = q.double() @ k[cols].double().t() / TAU  # (M, R)
        w = torch.exp(sc - lse_all[:, None])
        w[cols, torch.arange(len(cols), device=q.device)] -= 1.0
        dk_ref = w.t() @ q.double() / (TAU * m)
        errs["dk"] = rel(kt.grad[cols], dk_ref)
    tol = dict(loss=2e-3, dq=2e-2, dk=2e-2)
    ok = finite and all(errs[key] < tol[key] for key in errs)
    emit(f"check/infonce/{name}", "max_rel_err", max(errs.values()), ok=ok, finite=finite, rel_err=errs,
         tol=tol, shape=[m, n, 0 if queue is None else queue.shape[0], q.shape[1]], dtype=tag_of(q.dtype),
         sampled_rows=len(rows))  # fmt: skip


def dense64(q, k, queue, positive, qg, kg, queue_g, tau):
    """Per-row loss from the full float64 logit matrix (small shapes)."""
    m, n = q.shape[0], k.shape[0]
    keys = k.double() if queue is None else torch.cat([k.double(), queue.double()])
    s = q.double() @ keys.t() / tau
    pos = torch.zeros_like(s, dtype=torch.bool)
    rows = torch.arange(m, device=q.device)
    ok = positive >= 0
    pos[rows[:, None].expand_as(positive)[ok], positive[ok]] = True
    keep = torch.ones_like(pos)
    keep[:, :n] = (qg[:, None] != kg[None, :]) | pos[:, :n]
    keep[:, n:] = (qg[:, None] != queue_g[None, :]) | pos[:, n:]
    inf = float("-inf")
    return torch.logsumexp(s.masked_fill(~keep, inf), 1) - torch.logsumexp(s.masked_fill(~pos, inf), 1)


def ragged_check():
    """Positives table, groups and queue groups, key splits, ragged sizes, bf16: values and gradients."""
    m, n, nq = (40, 45, 70) if C.small else (1000, 1100, 3000)
    q, k, queue = unit_rows(m, torch.bfloat16), unit_rows(n, torch.bfloat16), unit_rows(nq, torch.bfloat16)
    positive = torch.randint(0, n + nq, (m, 3), device=C.dev)
    positive[torch.rand(m, 3, device=C.dev) < 0.4] = -1
    positive[:, 0] = torch.randint(0, n, (m,), device=C.dev)
    qg, kg = torch.randint(0, 5, (m,), device=C.dev), torch.randint(0, 5, (n,), device=C.dev)
    queue_g = torch.randint(0, 5, (nq,), device=C.dev)
    kw = dict(positive=positive, q_group=qg, k_group=kg, queue_group=queue_g, temperature=0.1)
    with Poisoned(C.it, splits=3):
        qt, kt = q.clone().requires_grad_(), k.clone().requires_grad_()
        out = C.infonce.info_nce_triton(qt, kt, queue, reduction="none", **kw)
        w = torch.rand(m, device=C.dev) + 0.5
        (out * w).sum().backward()
        C.bench.sync()
    qd, kd = q.double().requires_grad_(), k.double().requires_grad_()
    ref = dense64(qd, kd, queue, positive, qg, kg, queue_g, 0.1)
    gq, gk = torch.autograd.grad((ref * w.double()).sum(), [qd, kd])
    errs = dict(loss=rel(out, ref), dq=rel(qt.grad, gq), dk=rel(kt.grad, gk))
    finite = all(bool(torch.isfinite(t).all()) for t in (out, qt.grad, kt.grad))
    ok = finite and errs["loss"] < 2e-3 and errs["dq"] < 2e-2 and errs["dk"] < 2e-2
    emit("check/infonce/ragged_positives_groups_queue_groups", "max_rel_err", max(errs.values()), ok=ok,
         finite=finite, rel_err=errs, shape=[m, n, nq, D], dtype="bf16")  # fmt: skip


def run():
    seed = int(time.time() * 1000) % 2**31  # fresh inputs every run; recorded for a rerun
    torch.manual_seed(seed)
    emit("check/infonce/seed", "seed", seed)
    sh = infonce_shapes()
    r = 16 if C.small else 256
    _, m, n, _, _ = sh["inbatch"]
    q, k = unit_rows(m, torch.bfloat16), unit_rows(n, torch.bfloat16)
    rows = torch.randperm(m, device=C.dev)[:r]
    sampled_check(sh["inbatch"][0], q, k, None, rows, check_dk=True)
    del q, k
    C.bench.free()
    C.bench.check_budget(10)
    _, m, n, nq, _ = sh["queue"]
    q, k, queue = unit_rows(m, torch.bfloat16), unit_rows(n, torch.bfloat16), unit_rows(nq, torch.bfloat16)
    rows = torch.randperm(m, device=C.dev)[:r]
    sampled_check(sh["queue"][0], q, k, queue, rows, check_dk=False)
    del q, k, queue
    C.bench.free()
    C.bench.check_budget(10)
    ragged_check()
