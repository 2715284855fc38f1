#!/usr/bin/env python
"""One GPU check of the Triton kernels (InfoNCE, fused graph convolution): correctness first, then timings,
everything important within 7 minutes from process start on an H100 or H200.

    python scripts/gpu_check.py --out $OUT/gpu_check.json          # on the GPU machine (repository root)
    python scripts/gpu_check.py --plan                             # sections and estimated GPU seconds
    python scripts/gpu_check.py --small --out /tmp/gpu_small.json  # CPU dry run (TRITON_INTERPRET=1)

Sections, in this order (a section that raises is recorded with its traceback and the next one runs):
  setup            versions, card, commit
  ceilings     (a) one large bf16 GEMM and one device-to-device copy: every later time is also reported as
                   an H100-equivalent (anchors: H100 694 TFLOP/s bf16, 3.0 TB/s copy counting read + write)
  check_infonce (b) fresh random inputs, NaN-poisoned outputs: in-batch 65,536^2 bf16 (loss and dq of 256
                   sampled rows in float64, dk of 256 sampled keys), 4,096 x (4,096 + 1,048,576) bf16
                   (loss, dq of sampled rows), a ragged case with positives, groups and queue groups
  check_graph_conv (b) the unit shape N 256, C 256, T 64 in bf16 against float64 (values and all five
                   gradients) and the bf16 backbone against the plain float32 path
  headline     (c) Triton rows: InfoNCE in-batch / keys locked / long queue (bf16), the GCN unit and the
                   backbone (bf16), and the backbone with graph_conv replaced by a no-op of the same output
                   shape (the share of the backbone the fused op can win)
  eager        (d) PyTorch eager on the same card for the same rows; speed-ups over eager
  sweeps       (e) graph conv dW tiles (the 4-warp variant without spills first), its forward tiles, then
                   InfoNCE forward / dk tiles and key splits
  fp32             float32 rows (tf32 dots, and torch's default "highest" for InfoNCE)
  compile          torch.compile rows (eager InfoNCE, the GCN unit, the backbone last)
  extra_shapes     InfoNCE 16,384^2, 4,096 x (4,096 + 65,536), 262,144^2; GCN unit N 64 C 64
  peers            Inf-CL 1.2.1 and memeff 0.3.1 from wheels in .whl/ (absent wheels: recorded, skipped)

Every record is a dict with name, unit, value (plus section, t_s and fields of its own) in one JSON list,
rewritten after each record, so a run cut short still leaves its results. The hard budget (--budget-s,
default 400 s from process start) is checked between steps and enforced by SIGALRM inside long ones; a
short table is printed last. Targets are H100 figures and are compared with the H100-equivalent times.
`main(argv)` runs it as a library (skelcl bench reuses it).
"""

from __future__ import annotations

import time

T_START = time.time()  # the budget counts from here (before torch is imported)

import argparse  # noqa: E402
import copy  # noqa: E402
import glob  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu_common import Bench, BudgetExceeded, rel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H100 = dict(bf16_TFLOPs=694.0, copy_TBps=3.0)  # measured on one H100 80GB HBM3 (torch 2.11)
TAU = 0.07
D = 128
BUDGET_S = 400.0

# (section, estimated GPU seconds, what it does): --plan prints these; they must sum to <= 420.
PLAN = [
    ("setup", 15, "imports, CUDA init, versions"),
    ("ceilings", 5, "(a) bf16 GEMM 8192^3, 4 GiB device copy"),
    ("check_infonce", 40, "(b) 65,536^2 bf16 sampled float64 rows; long queue; ragged groups"),
    ("check_graph_conv", 45, "(b) unit shape bf16 vs float64; bf16 backbone vs plain fp32"),
    ("headline", 30, "(c) Triton rows: InfoNCE x3, GCN unit, backbone, no-op backbone"),
    ("eager", 25, "(d) eager rows on the same card, speed-ups"),
    ("sweeps", 70, "(e) graph conv dW / fwd tiles, InfoNCE tiles and splits"),
    ("fp32", 45, "float32 rows (tf32; 3xtf32 InfoNCE)"),
    ("compile", 60, "torch.compile rows (backbone last)"),
    ("extra_shapes", 25, "InfoNCE 16,384^2, 4,096 + 65,536, 262,144^2; unit N 64 C 64"),
    ("peers", 40, "Inf-CL, memeff from .whl/"),
]
TARGETS = {  # H100 targets, compared with H100-equivalent times
    ("infonce", "inbatch_65536", "bf16"): dict(ms=14.0, extra_MiB=128.0),
    ("infonce", "inbatch_65536", "fp32"): dict(ms=55.0),
    ("infonce", "locked_65536", "bf16"): dict(ms=7.0),
    ("infonce", "queue_4096+1048576", "bf16"): dict(ms=6.0, extra_MiB=1024.0),
    ("graph_conv", "unit_N256_C256_T64", "bf16"): dict(ms=3.5),
    ("backbone", "backbone_N256_T64", "bf16"): dict(samples_per_s=8400.0),
}
# Graph conv dW tiles (BO, BC, BT, warps, stages, prefetch) at the unit shape (C 256, bf16). First: the
# 4-warp variant that compiles without spills for sm_90 (aot_check_graph_conv.py --sweep-only, Triton 3.9:
# STACK 0; the 4-warp BT 4 variant spilled 544 bytes). Second: the default (8 warps, STACK 0).
DW_SWEEP = [
    (64, 64, 2, 4, 3, True),
    (64, 64, 4, 8, 3, False),
    (64, 64, 4, 8, 3, True),
    (64, 128, 4, 8, 3, False),
    (128, 64, 4, 8, 3, False),
    (64, 64, 2, 4, 3, False),
]
FWD_SWEEP = [  # the first is the default
    (64, 64, 4, 8, 3, True),
    (64, 64, 4, 8, 3, False),
    (64, 64, 4, 8, 4, True),
    (128, 64, 2, 8, 3, True),
    (64, 64, 2, 4, 3, True),
]

C = SimpleNamespace()  # the run: args, bench, device, modules, card scale factors


# --------------------------------------------------------------------------------------------- setup
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="JSON file to write (default: gpu_check.json in $OUT or .)")
    p.add_argument("--small", action="store_true", help="CPU dry run: TRITON_INTERPRET=1, tiny shapes")
    p.add_argument("--plan", action="store_true", help="print the sections and estimated GPU seconds")
    p.add_argument("--budget-s", type=float, default=None, help=f"hard budget (default {BUDGET_S:.0f})")
    p.add_argument("--sections", default=None, help="comma-separated subset of the sections (in order)")
    p.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder holding the peer wheels")
    p.add_argument("--site", default="/tmp/gpu_check_peers", help="where the peer wheels are installed")
    return p.parse_args(argv)


def print_plan():
    total = 0
    print(f"{'section':18s} {'est. GPU s':>10s}  what")
    for name, est, what in PLAN:
        total += est
        print(f"{name:18s} {est:>10d}  {what}")
    print(f"{'total':18s} {total:>10d}  (hard budget {BUDGET_S:.0f} s from process start; 7 min = 420 s)")
    return total


def import_skelcl():
    """skelcl (and skelcl.kernels) from this working tree: kernels/ is installed as skelcl.kernels, and on
    the GPU machine nothing is installed, so map it by hand when the import fails."""
    sys.path.insert(0, str(ROOT))
    try:
        import skelcl.kernels  # noqa: F401
    except ImportError:
        import skelcl

        kernels = ROOT / "kernels"
        spec = importlib.util.spec_from_file_location(
            "skelcl.kernels", kernels / "__init__.py", submodule_search_locations=[str(kernels)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["skelcl.kernels"] = package
        skelcl.kernels = package
        spec.loader.exec_module(package)
    import skelcl.kernels.graph_conv_kernel as gck
    import skelcl.kernels.infonce as infonce
    import skelcl.kernels.infonce_triton as it

    return infonce, it, gck


def emit(name, unit, value, **kw):
    return C.bench.emit(name, unit, value, **kw)


def tag_of(dtype):
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def sec_setup():
    import numpy
    import torch
    import triton

    info = dict(torch=torch.__version__, triton=triton.__version__, numpy=numpy.__version__, small=C.small)
    info["f32_matmul_precision"] = torch.get_float32_matmul_precision()
    if C.dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(sms=props.multi_processor_count, mem_GiB=round(props.total_memory / 2**30, 1))
        card = torch.cuda.get_device_name()
    else:
        card = "cpu (--small dry run: no figure here is a measurement)"
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        info["commit"] = None
    emit("env", "card", card, **info)


# ------------------------------------------------------------------------------------------ ceilings
def sec_ceilings():
    import torch

    n = 256 if C.small else 8192
    a = torch.randn(n, n, device=C.dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=C.dev, dtype=torch.bfloat16)
    ms = C.bench.bench_ms(lambda: a @ b, 100)
    tflops = 2 * n**3 / ms / 1e9
    C.scale["compute"] = tflops / H100["bf16_TFLOPs"]
    emit("ceiling/bf16_gemm", "TFLOP/s", tflops, n=n, ms=ms, h100=H100["bf16_TFLOPs"],
         ratio=C.scale["compute"])  # fmt: skip
    nbytes = (1 << 20) if C.small else (4 << 30)
    x = torch.empty(nbytes // 2, device=C.dev, dtype=torch.bfloat16).normal_()
    y = torch.empty_like(x)
    ms = C.bench.bench_ms(lambda: y.copy_(x), 100)
    tbps = 2 * nbytes / ms / 1e9
    C.scale["memory"] = tbps / H100["copy_TBps"]
    emit("ceiling/d2d_copy", "TB/s", tbps, bytes=nbytes, counted="read + write", ms=ms,
         h100=H100["copy_TBps"], ratio=C.scale["memory"])  # fmt: skip


# ----------------------------------------------------------------------------------------- timing
def time_row(family, case, dtype, impl, step, *, bound="compute", zero=None, fwd=None, rep_ms=200,
             flops=None, samples=None, **extra):  # fmt: skip
    """Time one forward + backward `step` (median ms), peak extra memory, the H100-equivalent and the
    target verdicts; one record. `zero` clears gradients before the memory measurement."""
    C.bench.check_budget(5)
    name = f"{family}/{case}/{dtype}/{impl}"
    rec = dict(family=family, case=case, dtype=dtype, impl=impl, bound=bound, **extra)
    ms = None
    try:
        t = time.perf_counter()
        step()
        C.bench.sync()
        first_s = time.perf_counter() - t
        rec["first_call_s"] = round(first_s, 3)
        # --small: the first call is the timing (a dry run of the code path, not a figure)
        ms = first_s * 1e3 if C.small else C.bench.bench_ms(step, rep_ms)
        if zero is not None:
            zero()
        rec["peak_extra_MiB"] = C.bench.peak_extra_mib(step)
        if fwd is not None:
            rec["fwd_ms"] = C.bench.bench_ms(fwd, rep_ms)
        scale = C.scale.get(bound)
        rec["h100_equiv_ms"] = None if scale is None else ms * scale
        if flops:
            rec["TFLOPs"] = flops / ms / 1e9
        if samples:
            rec["samples_per_s"] = samples / ms * 1e3
            if scale:
                rec["h100_equiv_samples_per_s"] = samples / (ms * scale) * 1e3
        target = TARGETS.get((family, case, dtype))
        if target and impl == "triton":
            rec["target"] = target
            if "ms" in target and rec["h100_equiv_ms"] is not None:
                rec["meets_time_target"] = rec["h100_equiv_ms"] <= target["ms"]
            if "samples_per_s" in target and "h100_equiv_samples_per_s" in rec:
                rec["meets_time_target"] = rec["h100_equiv_samples_per_s"] >= target["samples_per_s"]
            if "extra_MiB" in target:
                peak = rec["peak_extra_MiB"]
                rec["meets_memory_target"] = None if peak is None else peak <= target["extra_MiB"]
    except BudgetExceeded:
        raise
    except Exception as e:  # noqa: BLE001
        oom = "OutOfMemory" in repr(e)
        rec["error"] = repr(e)[-300:] if oom else traceback.format_exc()[-1200:]
    C.bench.free()
    return emit(name, "ms", ms, **rec)


def derive_speedups():
    """speedup_vs_eager on every timed row that has an eager row of the same family, case and dtype."""
    eager = {}
    for r in C.bench.records:
        if r.get("unit") == "ms" and r.get("impl") == "eager" and r.get("value"):
            eager[(r["family"], r["case"], r["dtype"])] = r["value"]
    for r in C.bench.records:
        key = (r.get("family"), r.get("case"), r.get("dtype"))
        if r.get("unit") == "ms" and r.get("value") and key in eager:
            r["speedup_vs_eager"] = eager[key] / r["value"]
    C.bench.save()


# ------------------------------------------------------------------------------------------ InfoNCE
def unit_rows(rows, dtype, d=D):
    import torch
    import torch.nn.functional as F

    return F.normalize(torch.randn(rows, d, device=C.dev), dim=1).to(dtype)


def infonce_shapes():
    """Headline (case, M, N, Q, keys need grad) at full size, tiny under --small."""
    if C.small:
        return dict(inbatch=("inbatch_65536", 64, 64, 0, True), locked=("locked_65536", 64, 64, 0, False),
                    queue=("queue_4096+1048576", 32, 32, 256, True))  # fmt: skip
    return dict(inbatch=("inbatch_65536", 65536, 65536, 0, True),
                locked=("locked_65536", 65536, 65536, 0, False),
                queue=("queue_4096+1048576", 4096, 4096, 1048576, True))  # fmt: skip


class Poisoned:
    """Kernel outputs start as NaN inside the block (an unwritten element shows); overrides restored."""

    def __init__(self, module, **override):
        self.module, self.override = module, override

    def __enter__(self):
        import torch

        self.saved = (self.module._empty, dict(self.module.OVERRIDE))
        self.module._empty = lambda shape, **kw: torch.full(shape, float("nan"), **kw)
        self.module.OVERRIDE.update(self.override)

    def __exit__(self, *exc):
        self.module._empty = self.saved[0]
        self.module.OVERRIDE.clear()
        self.module.OVERRIDE.update(self.saved[1])


def sampled_check(name, q, k, queue, rows, check_dk):
    """info_nce_triton (mean) against float64 on sampled rows: loss_i, dq_i and (check_dk) dk_j of sampled
    keys j, the latter with lse over all queries from a chunked float32 pass (full-precision dots)."""
    import torch

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
    import torch

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
    import torch

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


def sec_check_infonce():
    import torch

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


def infonce_step(impl, q, k, queue):
    """(step, zero): one forward + backward of the loss with positives on the diagonal."""
    import torch
    import torch.nn.functional as F

    labels = torch.arange(q.shape[0], device=C.dev)

    def zero():
        q.grad = None
        k.grad = None

    if impl == "triton":

        def step():
            zero()
            C.infonce.info_nce_triton(q, k, queue, temperature=TAU).backward()

    elif impl in ("eager", "eager_compiled"):

        def loss_fn(q, k, queue):
            keys = k if queue is None else torch.cat([k, queue])
            return F.cross_entropy((q @ keys.t()).float() / TAU, labels)

        fn = torch.compile(loss_fn, backend=C.compile_backend) if impl == "eager_compiled" else loss_fn

        def step():
            zero()
            fn(q, k, queue).backward()

    elif impl == "inf_cl":
        flash = C.peers["inf_cl"]

        def step():
            zero()
            keys = k if queue is None else torch.cat([k, queue])  # no queue mode: the queue gets a gradient
            flash(q, keys, labels, scale=1 / TAU, head_dim=q.shape[1]).mean().backward()

    elif impl in ("memeff", "memeff_lit"):
        lossf = C.peers[impl]

        def step():
            zero()
            lossf(q, k).backward()

    else:
        raise ValueError(impl)
    return step, zero


def infonce_row(case, m, n, nq, kgrad, dtype, impl, rep_ms=200):
    import torch

    q = unit_rows(m, dtype).requires_grad_()
    k = unit_rows(n, dtype).requires_grad_(kgrad or impl == "memeff_lit")
    queue = unit_rows(nq, dtype) if nq else None
    step, zero = infonce_step(impl, q, k, queue)
    fwd = None
    extra = dict(M=m, N=n, Q=nq, d=q.shape[1], kgrad=kgrad)
    if dtype == torch.float32:
        extra["f32_matmul_precision"] = torch.get_float32_matmul_precision()
    if impl == "triton":
        extra["kernel_variant"] = C.it.dot_mode(dtype, q.device)

        def fwd():
            with torch.no_grad():
                C.infonce.info_nce_triton(q, k, queue, temperature=TAU)

    bound = "memory" if impl.startswith("eager") else "compute"  # eager writes the M x (N + Q) logits
    flops = 4 * m * (n + nq) * q.shape[1] + (4 * m * n * q.shape[1] if kgrad else 0)
    return time_row("infonce", case, tag_of(dtype), impl, step, bound=bound, zero=zero, fwd=fwd,
                    rep_ms=rep_ms, flops=flops, **extra)  # fmt: skip


# --------------------------------------------------------------------------------------- graph conv
def graph(v=25, k=3, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    a = torch.rand(k, v, v, generator=g) * (torch.rand(k, v, v, generator=g) < 0.15) + torch.eye(v)
    return (a / a.sum(1, keepdim=True)).to(C.dev)


def unit_shape(name="main"):
    if C.small:
        return ("unit_N256_C256_T64", 1, 16, 4) if name == "main" else ("unit_N64_C64_T64", 1, 16, 2)
    return ("unit_N256_C256_T64", 256, 256, 64) if name == "main" else ("unit_N64_C64_T64", 64, 64, 64)


def gc_dense64(x, w, a, b, r, relu_mask):
    import torch

    y = torch.einsum("koc,nctv,kvw->notw", w.double(), x.double(), a.double())
    y = y + b.double()[None, :, None, None] + r.double()
    return torch.where(relu_mask, y, torch.zeros_like(y))


def gc_unit_check():
    """graph_conv_triton at the unit shape, bf16, bias + residual + ReLU, against float64 (values and the
    gradients of x, weight, adjacency, bias, residual); outputs poisoned."""
    import torch

    case, n, c, t = unit_shape()
    dt = torch.bfloat16
    x = torch.randn(n, c, t, 25, device=C.dev)
    w = torch.randn(3, c, c, device=C.dev) / (3 * c) ** 0.5
    a = graph() + 0.01 * torch.rand(3, 25, 25, device=C.dev)
    b, r = torch.randn(c, device=C.dev), torch.randn(n, c, t, 25, device=C.dev)
    gy = torch.randn(n, c, t, 25, device=C.dev).to(dt)
    leaves = [p.to(dt).requires_grad_() for p in (x, w, a, b, r)]
    with Poisoned(C.gck):
        y = C.graph_conv_triton(*leaves[:4], residual=leaves[4], activation="relu")
        grads = torch.autograd.grad(y, leaves, gy)
        C.bench.sync()
    l64 = [p.detach().double().requires_grad_() for p in leaves]
    y64 = gc_dense64(*l64, y > 0)  # ReLU pattern of the kernel's output (bf16 rounding near 0)
    refs = torch.autograd.grad(y64, l64, gy.double())
    errs = {"y": rel(y, y64)}
    for nm, got, ref in zip(("dx", "dw", "da", "db", "dres"), grads, refs):
        errs[nm] = rel(got, ref)
    finite = bool(torch.isfinite(y).all()) and all(bool(torch.isfinite(g).all()) for g in grads)
    ok = finite and max(errs.values()) < 1e-2
    emit(f"check/graph_conv/{case}", "max_rel_err", max(errs.values()), ok=ok, finite=finite, rel_err=errs,
         tol=1e-2, dtype="bf16", shape=[n, c, c, t, 3])  # fmt: skip


def backbone_module():
    from skelcl.models import backbone as bbmod

    if not hasattr(bbmod, "graph_conv"):
        raise RuntimeError("skelcl.models.backbone has no module-level graph_conv to switch")
    return bbmod


class _NoOpGraphConv:
    """graph_conv replaced by a no-op of the same output shape: zeros forward, zero gradients backward
    (the layers before it still run their backward)."""

    fn = None

    @classmethod
    def get(cls):
        if cls.fn is None:
            import torch

            class NoOp(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x, weight, adjacency, bias):
                    ctx.save_for_backward(x, weight, adjacency, bias)
                    dev = x.device.type
                    dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
                    n, _, t, v = x.shape
                    return x.new_zeros((n, weight.shape[1], t, v), dtype=dt)

                @staticmethod
                def backward(ctx, g):
                    x, w, a, b = ctx.saved_tensors
                    zb = None if b is None else torch.zeros_like(b)
                    return torch.zeros_like(x), torch.zeros_like(w), torch.zeros_like(a), zb

            def noop(x, weight, adjacency, bias=None, *, residual=None, activation=None):
                return NoOp.apply(x, weight, adjacency, bias)

            cls.fn = noop
        return cls.fn


def set_backbone_impl(bbmod, impl):
    from skelcl.kernels import graph_conv

    fns = dict(reference=C.graph_conv_reference, triton=C.graph_conv_triton, default=graph_conv)
    bbmod.graph_conv = _NoOpGraphConv.get() if impl == "noop" else fns[impl]


def backbone_check():
    """bf16 backbone on the kernel vs the plain float32 path (outputs, every parameter gradient); the
    kernel's error must stay within twice the plain bf16 path's error (+1e-3)."""
    import torch

    bbmod = backbone_module()
    b, t, width = (1, 4, 0.125) if C.small else (8, 64, 1.0)
    torch.manual_seed(0)
    model = bbmod.Backbone(kind="stgcn", width=width, strides=(5, 8)).to(C.dev)
    x = torch.randn(b, t, 1 if C.small else 2, 25, 3, device=C.dev)

    def run(impl, bf16):
        m = copy.deepcopy(model)
        set_backbone_impl(bbmod, impl)
        try:
            with Poisoned(C.gck), torch.autocast(C.dev, dtype=torch.bfloat16, enabled=bf16):
                y, _ = m(x)
            y.float().square().mean().backward()
        finally:
            set_backbone_impl(bbmod, "default")
        return y.float(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}

    def gerr(g, g0):
        num = sum(float((g[n] - g0[n]).norm()) ** 2 for n in g0) ** 0.5
        return num / sum(float(v.norm()) ** 2 for v in g0.values()) ** 0.5

    cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        y0, g0 = run("reference", False)
        y1, g1 = run("triton", True)
        yp, gp = run("reference", True)
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
    errs = dict(y=rel(y1, y0), grads=gerr(g1, g0), plain_bf16_y=rel(yp, y0), plain_bf16_grads=gerr(gp, g0))
    ok = set(g0) == set(g1) and errs["y"] < 2 * errs["plain_bf16_y"] + 1e-3
    ok = ok and errs["grads"] < 2 * errs["plain_bf16_grads"] + 1e-3
    emit("check/backbone/stgcn_bf16_vs_plain_fp32", "rel_err", errs["y"], ok=ok, rel_err=errs, B=b, T=t)


def sec_check_graph_conv():
    gc_unit_check()
    C.bench.free()
    C.bench.check_budget(10)
    backbone_check()
    C.bench.free()


def unit_modules():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class UnitEager(nn.Module):
        """1x1 conv to K*C (with bias), einsum over the graph, BN, + x, ReLU (the anchors' unit)."""

        def __init__(self, c, a):
            super().__init__()
            self.register_buffer("A", a)
            self.k, self.c = a.shape[0], c
            self.conv = nn.Conv2d(c, c * self.k, 1)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            n, _, t, v = x.shape
            y = self.conv(x).view(n, self.k, self.c, t, v)
            y = torch.einsum("nkctv,kvw->nctw", y, self.A)
            return F.relu(self.bn(y) + x)

    class UnitKernel(nn.Module):
        """The same unit on the fused kernel: graph_conv(x, W, A, bias), BN, + x, ReLU."""

        def __init__(self, c, a):
            super().__init__()
            self.register_buffer("A", a)
            k = a.shape[0]
            self.weight = nn.Parameter(torch.randn(k, c, c) / (k * c) ** 0.5)
            self.bias = nn.Parameter(torch.zeros(c))
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(self.bn(C.graph_conv_triton(x, self.weight, self.A, self.bias)) + x)

    return UnitEager, UnitKernel


def unit_row(which, tag, impl):
    import torch

    case, n, c, t = unit_shape(which)
    eager_cls, kernel_cls = unit_modules()
    m = (kernel_cls if impl.startswith("triton") else eager_cls)(c, graph()).to(C.dev)
    x = torch.randn(n, c, t, 25, device=C.dev, requires_grad=True)
    fn = torch.compile(m, backend=C.compile_backend) if impl.endswith("compiled") else m
    bf16 = tag == "bf16"

    def step():
        x.grad = None
        with torch.autocast(C.dev, dtype=torch.bfloat16, enabled=bf16):
            y = fn(x)
        y.float().square().mean().backward()

    flops = 2 * n * t * 25 * 3 * c * c * 3  # useful forward + dX + dW matmul work of the graph conv
    return time_row("graph_conv", case, tag, impl, step, flops=flops, N=n, C=c, T=t)


def backbone_row(tag, impl, rep_ms=600):
    """The 10-layer ST-GCN backbone (base width 64, strides at layers 5 and 8), N 256, T 64, one body."""
    import torch

    bbmod = backbone_module()
    case = "backbone_N256_T64"
    n, t = (1, 4) if C.small else (256, 64)
    torch.manual_seed(0)
    m = bbmod.Backbone(kind="stgcn", width=0.125 if C.small else 1.0, strides=(5, 8)).to(C.dev)
    x = torch.randn(n, t, 1, 25, 3, device=C.dev)
    base = impl.replace("_compiled", "")
    set_backbone_impl(bbmod, {"eager": "reference", "triton": "triton", "noop": "noop"}[base])
    fn = torch.compile(m, backend=C.compile_backend) if impl.endswith("compiled") else m
    bf16 = tag == "bf16"

    def step():
        m.zero_grad(set_to_none=True)
        with torch.autocast(C.dev, dtype=torch.bfloat16, enabled=bf16):
            y, _ = fn(x)
        y.float().square().mean().backward()

    try:
        return time_row("backbone", case, tag, impl, step, rep_ms=rep_ms, samples=n, N=n, T=t,
                        zero=lambda: m.zero_grad(set_to_none=True))  # fmt: skip
    finally:
        set_backbone_impl(bbmod, "default")


# ------------------------------------------------------------------------------------------ sections
def sec_headline():
    import torch

    torch.set_float32_matmul_precision("high")
    for key in ("inbatch", "locked", "queue"):
        case, m, n, nq, kgrad = infonce_shapes()[key]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "triton")
    unit_row("main", "bf16", "triton")
    backbone_row("bf16", "triton")
    backbone_row("bf16", "noop")


def sec_eager():
    import torch

    for key in ("inbatch", "queue"):
        case, m, n, nq, kgrad = infonce_shapes()[key]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "eager")
    unit_row("main", "bf16", "eager")
    backbone_row("bf16", "eager")
    derive_speedups()
    share_of_graph_conv()


def share_of_graph_conv():
    """Share of the bf16 backbone step that the graph convolution takes: 1 - noop / eager (and / triton)."""
    rows = {r["impl"]: r["value"] for r in C.bench.records
            if r.get("family") == "backbone" and r.get("dtype") == "bf16" and r.get("value")}  # fmt: skip
    if "noop" in rows and "eager" in rows:
        share = 1 - rows["noop"] / rows["eager"]
        emit("derived/backbone_bf16/graph_conv_share_of_eager_step", "fraction", share,
             noop_ms=rows["noop"], eager_ms=rows["eager"], triton_ms=rows.get("triton"))  # fmt: skip


def sweep_graph_conv():
    import torch

    case, n, c, t = unit_shape()
    dt = torch.bfloat16
    x = torch.randn(n, c, t, 25, device=C.dev, dtype=dt)
    g = torch.randn(n, c, t, 25, device=C.dev, dtype=dt)
    w = (torch.randn(3, c, c, device=C.dev) / (3 * c) ** 0.5).to(dt)
    a = graph().to(dt)
    small_cfg = [(16, 16, 2, 1, 1, True)]
    for kind, cfgs in (("dw", DW_SWEEP), ("fwd", FWD_SWEEP)):
        for bo, bc, bt, nw, ns, pf in small_cfg if C.small else cfgs:
            C.bench.check_budget(15)
            pre = "dw_" if kind == "dw" else "fwd_"
            names = ("BO", "BC", "BT", "num_warps", "num_stages", "prefetch")
            ov = {pre + key: v for key, v in zip(names, (bo, bc, bt, nw, ns, pf))}
            rec = dict(kind=kind, cfg=[bo, bc, bt, nw, ns, pf], cfg_names="BO BC BT warps stages prefetch")
            ms = None
            try:
                C.gck.OVERRIDE.clear()
                C.gck.OVERRIDE.update(ov)
                if kind == "fwd":
                    fn = lambda: C.gck._launch_gc(x, w, a, None, None, False, None, True, False)  # noqa: E731
                else:
                    fn = lambda: C.gck._launch_dw(g, x, a)  # noqa: E731
                fn()
                C.bench.sync()
                ms = C.bench.bench_ms(fn, 100)
                rec["TFLOPs_padded"] = 2 * n * t * 32 * 3 * c * (c + 32) / ms / 1e9
            except BudgetExceeded:
                raise
            except Exception:  # noqa: BLE001
                rec["error"] = traceback.format_exc()[-400:]
            finally:
                C.gck.OVERRIDE.clear()
            emit(f"sweep/graph_conv/{case}/bf16/{kind}/" + "_".join(map(str, rec["cfg"])), "ms", ms, **rec)
    C.bench.free()


def sweep_infonce():
    import torch

    m = 64 if C.small else 65536
    for tag, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        torch.set_float32_matmul_precision("high")
        q, k = unit_rows(m, dtype), unit_rows(m, dtype)
        lse, _ = C.it._fwd(q, k, None, None, None, None, None, TAU, False)
        g = torch.full((m,), 1.0 / m, device=C.dev)
        runs = dict(
            fwd=lambda q=q, k=k: C.it._fwd(q, k, None, None, None, None, None, TAU, True),
            dk=lambda q=q, k=k, lse=lse, g=g: C.it._dk(q, k, lse, g, None, None, None, TAU),
        )
        for kind, cfgs in (("fwd", C.it.SWEEP_FWD[tag]), ("dk", C.it.SWEEP_DK[tag])):
            for cfg in [(16, 16, 1, 1)] if C.small else cfgs:
                C.bench.check_budget(15)
                C.it.OVERRIDE.clear()
                names = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
                C.it.OVERRIDE.update(zip([f"{kind}_{n}" for n in names], cfg))
                rec = dict(kind=kind, cfg=list(cfg), cfg_names="BLOCK_M BLOCK_N warps stages", M=m, N=m)
                ms = None
                try:
                    runs[kind]()
                    ms = C.bench.bench_ms(runs[kind], 100)
                    rec["TFLOPs"] = 4 * m * m * D / ms / 1e9
                except BudgetExceeded:
                    raise
                except Exception as e:  # noqa: BLE001
                    rec["error"] = repr(e)[-400:]
                finally:
                    C.it.OVERRIDE.clear()
                emit(f"sweep/infonce/inbatch_{m}/{tag}/{kind}/" + "_".join(map(str, cfg)), "ms", ms, **rec)
        del q, k, lse
        C.bench.free()
    m, nq = (32, 300) if C.small else (4096, 1052672)
    q, keys = unit_rows(m, torch.bfloat16), unit_rows(nq, torch.bfloat16)
    for splits in (1, 2) if C.small else (1, 8, 16, 33, 66, 132):
        C.bench.check_budget(10)
        C.it.OVERRIDE.clear()
        C.it.OVERRIDE["splits"] = splits
        ms, rec = None, dict(kind="fwd_splits", splits=splits, M=m, N=nq)
        try:
            C.it._fwd(q, keys, None, None, None, None, None, TAU, True)
            ms = C.bench.bench_ms(lambda: C.it._fwd(q, keys, None, None, None, None, None, TAU, True), 100)
        except BudgetExceeded:
            raise
        except Exception as e:  # noqa: BLE001
            rec["error"] = repr(e)[-400:]
        finally:
            C.it.OVERRIDE.clear()
        emit(f"sweep/infonce/queue_{m}+{nq}/bf16/splits_{splits}", "ms", ms, **rec)
    C.bench.free()


def sec_sweeps():
    sweep_graph_conv()
    sweep_infonce()


def sec_fp32():
    import torch

    torch.set_float32_matmul_precision("high")  # tf32 dots (the kernel and eager alike)
    case, m, n, nq, kgrad = infonce_shapes()["inbatch"]
    infonce_row(case, m, n, nq, kgrad, torch.float32, "triton")
    infonce_row(case, m, n, nq, kgrad, torch.float32, "eager")
    torch.set_float32_matmul_precision("highest")  # torch's default: the kernel's 3xtf32 variant
    mm = 64 if C.small else 16384
    infonce_row(f"inbatch_{mm}_highest", mm, mm, 0, True, torch.float32, "triton")
    torch.set_float32_matmul_precision("high")
    unit_row("main", "fp32", "triton")
    unit_row("main", "fp32", "eager")
    if C.small:  # the interpreter is slow; the bf16 backbone row already runs this code path
        emit("backbone/backbone_N256_T64/fp32/triton", "ms", None, skipped="--small")
    else:
        backbone_row("fp32", "triton")
    backbone_row("fp32", "eager")
    derive_speedups()


def sec_compile():
    import torch

    mm = 64 if C.small else 16384
    infonce_row(f"inbatch_{mm}", mm, mm, 0, True, torch.bfloat16, "eager_compiled")
    unit_row("main", "bf16", "eager_compiled")
    unit_row("main", "bf16", "triton_compiled")
    if C.small:
        emit("compile/backbone", "ms", None, skipped="--small: the backbone is compiled on the GPU only")
        return
    C.bench.check_budget(80)  # about 53 s to compile on an H100
    backbone_row("bf16", "eager_compiled")


def sec_extra_shapes():
    import torch

    mm = 64 if C.small else 16384
    for impl in ("triton", "eager"):
        infonce_row(f"inbatch_{mm}", mm, mm, 0, True, torch.bfloat16, impl)
    m, nq = (32, 128) if C.small else (4096, 65536)
    for impl in ("triton", "eager"):
        infonce_row(f"queue_{m}+{nq}", m, m, nq, True, torch.bfloat16, impl)
    for impl in ("triton", "eager"):
        unit_row("small", "bf16", impl)
    big = 80 if C.small else 262144
    infonce_row(f"inbatch_{big}", big, big, 0, True, torch.bfloat16, "triton", rep_ms=500)
    derive_speedups()


def sec_peers():
    import torch

    if C.dev != "cuda":
        emit("peers", "installed", None, skipped="needs CUDA")
        return
    wheels = sorted(glob.glob(os.path.join(C.args.wheels, "*.whl")))
    if not wheels:
        emit("peers", "installed", None, skipped=f"no wheels in {C.args.wheels}")
        return
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", C.args.site]
    r = subprocess.run(pip + wheels, capture_output=True, text=True, timeout=60)
    how = "pip"
    if r.returncode != 0:  # pure-Python wheels: unpacking them is the whole installation
        how = f"unzip (pip failed: {r.stderr.strip()[-200:]})"
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(C.args.site)
    emit("peers", "installed", len(wheels), wheels=[os.path.basename(w) for w in wheels], how=how)
    if C.args.site not in sys.path:
        sys.path.append(C.args.site)
    try:
        from inf_cl import cal_flash_loss

        C.peers["inf_cl"] = cal_flash_loss
    except Exception as e:  # noqa: BLE001
        emit("peer/inf_cl", "import", None, error=repr(e)[:300])
    try:
        from memeff import MemoryEfficientLiTQwen3Loss, MemoryEfficientQwen3Loss

        kw = dict(temperature=TAU, margin=2.0, normalized_inputs=True, stable=False)
        C.peers["memeff"] = MemoryEfficientQwen3Loss(**kw)
        C.peers["memeff_lit"] = MemoryEfficientLiTQwen3Loss(**kw)
    except Exception as e:  # noqa: BLE001
        emit("peer/memeff", "import", None, error=repr(e)[:300])
    case, m, n, nq, kgrad = infonce_shapes()["inbatch"]
    for impl in ("memeff", "inf_cl"):
        if impl in C.peers:
            infonce_row(case, m, n, nq, kgrad, torch.bfloat16, impl)
    if "memeff_lit" in C.peers:
        case, m, n, nq, kgrad = infonce_shapes()["locked"]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "memeff_lit")
    if "inf_cl" in C.peers:
        case, m, n, nq, kgrad = infonce_shapes()["queue"]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "inf_cl")
    derive_speedups()


SECTIONS = dict(
    setup=sec_setup,
    ceilings=sec_ceilings,
    check_infonce=sec_check_infonce,
    check_graph_conv=sec_check_graph_conv,
    headline=sec_headline,
    eager=sec_eager,
    sweeps=sec_sweeps,
    fp32=sec_fp32,
    compile=sec_compile,
    extra_shapes=sec_extra_shapes,
    peers=sec_peers,
)
assert list(SECTIONS) == [name for name, _, _ in PLAN]


# ---------------------------------------------------------------------------------------------- table
def print_table():
    recs = C.bench.records
    checks = [r for r in recs if r["name"].startswith("check/") and "ok" in r]
    verdict = {True: "ok", False: "FAIL", None: "-"}
    print("\nchecks: " + ", ".join(f"{r['name'][6:]}={verdict[r.get('ok')]}" for r in checks))
    for r in recs:
        if r.get("error") and r.get("unit") == "section":
            print(f"section {r['value']}: {r['error'].strip().splitlines()[-1][:150]}")
    ceil = [r for r in recs if r["name"].startswith("ceiling/")]
    if ceil:
        parts = [f"{r['name'][8:]} {r['value']:.3g} {r['unit']} (x{r['ratio']:.2f} H100)" for r in ceil]
        print("ceilings: " + ", ".join(parts))
    head = ("family/case", "dtype", "impl", "ms", "H100-eq ms", "vs eager", "extra MiB", "verdict")
    print("\n{:36s} {:5s} {:15s} {:>9s} {:>10s} {:>8s} {:>9s}  {}".format(*head))
    for r in recs:
        if r.get("unit") != "ms" or "family" not in r:
            continue
        if r.get("error"):
            note = r["error"].strip().splitlines()[-1][:60]
        else:
            notes = []
            if "meets_time_target" in r:
                notes.append(f"time {'met' if r['meets_time_target'] else 'MISSED'}")
            if "meets_memory_target" in r:
                mem = {True: "met", False: "MISSED", None: "not measured"}[r["meets_memory_target"]]
                notes.append(f"memory {mem}")
            note = ", ".join(notes)

        cells = [
            format(r[key], fmt) if r.get(key) is not None else "-"
            for key, fmt in (("value", ".3f"), ("h100_equiv_ms", ".3f"), ("speedup_vs_eager", ".2f"),
                             ("peak_extra_MiB", ".0f"))
        ]  # fmt: skip
        label = r["family"] + "/" + r["case"]
        print(
            "{:36s} {:5s} {:15s} {:>9s} {:>10s} {:>8s} {:>9s}  {}".format(
                label, r["dtype"], r["impl"], *cells, note
            )
        )
    done = [r for r in recs if r["name"] == "done"]
    if done:
        print(f"\nwall {done[-1]['value']:.0f} s from process start; JSON: {C.bench.out}")


# ----------------------------------------------------------------------------------------------- main
def main(argv=None):
    """Run the check (see the module docstring); returns the exit code (0 unless a check failed)."""
    args = parse_args(argv)
    if args.plan:
        print_plan()
        return 0
    if args.small:
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton
    out = args.out or os.path.join(os.environ.get("OUT", "."), "gpu_check.json")
    budget = args.budget_s if args.budget_s is not None else BUDGET_S
    import torch

    C.args, C.small = args, args.small
    C.dev = "cpu" if args.small else "cuda"
    if C.dev == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (use --small for the CPU dry run)", file=sys.stderr)
        return 2
    C.bench = Bench(out, C.dev, budget, T_START if argv is None else time.time(), small=args.small)
    C.scale, C.peers = {}, {}
    C.compile_backend = "aot_eager" if args.small else "inductor"
    C.infonce, C.it, C.gck = import_skelcl()
    from skelcl.kernels import graph_conv_reference, graph_conv_triton

    C.graph_conv_reference, C.graph_conv_triton = graph_conv_reference, graph_conv_triton
    wanted = None if args.sections is None else {s.strip() for s in args.sections.split(",")}
    C.bench.arm()
    stopped = False
    try:
        for name, fn in SECTIONS.items():
            if wanted is not None and name not in wanted and name != "setup":
                continue
            C.bench.section = name
            if stopped or C.bench.time_left() < 5:
                emit(f"section/{name}", "section", name, error="skipped: time budget")
                continue
            t = time.time()
            try:
                fn()
                emit(f"section/{name}", "s", round(time.time() - t, 1))
            except BudgetExceeded as e:
                stopped = True
                emit(f"section/{name}", "section", name, error=f"stopped: {e}")
            except Exception:  # noqa: BLE001
                emit(f"section/{name}", "section", name, error=traceback.format_exc()[-1500:])
    finally:
        C.bench.disarm()
        C.bench.section = None
        try:
            derive_speedups()
        except Exception:  # noqa: BLE001
            pass
        emit("done", "s", round(time.time() - C.bench.t0, 1))
    print_table()
    failed = [r for r in C.bench.records if r["name"].startswith("check/") and r.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
