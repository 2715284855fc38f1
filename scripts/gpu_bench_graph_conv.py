#!/usr/bin/env python
"""Check and time the fused graph convolution kernel on one GPU: a GCN unit and the 10-layer backbone.

On the GPU machine (repository root as working directory):

    python scripts/gpu_bench_graph_conv.py --out $OUT/graph_conv_h100.json

Sections, in order; each record is appended to the JSON file as soon as it is measured, so a run cut short
(--budget-s, default 540 s) still leaves its numbers:
1. environment;
2. correctness on the GPU: graph_conv_triton against a float64 einsum, values and all gradients (x,
   weight, adjacency, bias, residual), ragged shapes, K = 1 / 3, fp32 (ieee and tf32 dots) and bf16,
   the unit shape itself, forced multi-tile dA programs and dW splits; outputs poisoned with NaN first;
   the backbone with the kernel against the plain path (outputs and every parameter gradient);
3. one GCN unit (1x1 conv to K*C with bias, graph aggregation, BatchNorm in training mode, + x, ReLU),
   forward + backward, N 256 / C 256 / T 64 / V 25 and N 64 / C 64: PyTorch eager, torch.compile,
   the kernel (BN and the rest in eager PyTorch) and the kernel inside torch.compile; fp32 and bf16
   (autocast); plus the graph convolution alone, and inference (BN folded, residual + ReLU fused);
4. the backbone (skelcl.models.Backbone, ST-GCN, base width 64, strides at layers 5 and 8 as in the
   anchor model), N 256 / T 64 (and N 64), forward + backward: plain path (eager reference) vs kernel,
   fp32 and bf16, and torch.compile of both in bf16 (fp32 too with --compile-fp32);
5. a sweep of tile configurations of the three launches at the unit shape in bf16, then the unit again
   with the best tiles.
A short table comes last on stdout.

    python scripts/gpu_bench_graph_conv.py --small --out /tmp/graph_conv_small.json

runs the same script on a CPU under TRITON_INTERPRET=1 with tiny shapes (torch.compile rows use the
aot_eager backend there).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback
from pathlib import Path

from _gpu_common import Bench, kernels_from_tree, rel

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {  # (row, dtype) -> target: issue 6, H100
    ("unit_N256_C256_T64", "bf16"): dict(ms=3.5),
    ("backbone_N256_T64", "bf16"): dict(samples_per_s=8400.0),
}
ANCHORS_H100 = {  # plain PyTorch, measured on one H100 80GB HBM3, torch 2.11 (eager / torch.compile)
    ("unit_N256_C256_T64", "fp32"): "eager 14.2 ms, compile 13.8 ms",
    ("unit_N256_C256_T64", "bf16"): "eager 12.3 ms, compile 9.8 ms",
    ("unit_N64_C64_T64", "fp32"): "eager 1.08 ms, compile 1.54 ms",
    ("backbone_N256_T64", "fp32"): "eager 73.3 ms (3,495/s)",
    ("backbone_N256_T64", "bf16"): "eager 61.1 ms (4,192/s)",
    ("backbone_N64_T64", "fp32"): "eager 19.9 ms, compile 16.1 ms",
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument(
        "--small", action="store_true", help="CPU check of the script: TRITON_INTERPRET=1, tiny shapes"
    )
    p.add_argument(
        "--budget-s", type=float, default=540.0, help="skip remaining work after this many seconds"
    )
    p.add_argument(
        "--sections",
        default="check,unit,backbone,sweep",
        help="comma-separated subset of check,unit,backbone,sweep (run in that order)",
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the tile sweep")
    p.add_argument("--no-compile", action="store_true", help="skip every torch.compile row")
    p.add_argument(
        "--compile-fp32", action="store_true", help="also compile the backbone in fp32 (~1 min each)"
    )
    return p.parse_args()


ARGS = parse_args()
if ARGS.small:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

RUN = Bench(ARGS.out, "cpu" if ARGS.small else "cuda", ARGS.budget_s, small=ARGS.small)
DEV = RUN.device
emit, time_left, sync, bench_ms = RUN.emit, RUN.time_left, RUN.sync, RUN.bench_ms
peak_extra_mib, free = RUN.peak_extra_mib, RUN.free


def import_kernels():
    """skelcl.kernels, installed or straight from the working tree (kernels/ maps to skelcl.kernels)."""
    try:
        import skelcl.kernels as kernels

        return kernels
    except ImportError:
        return kernels_from_tree(ROOT)


import_kernels()
import skelcl.kernels.graph_conv_kernel as gck  # noqa: E402
from skelcl.kernels import fold_batchnorm, graph_conv_reference, graph_conv_triton  # noqa: E402


def compile_fn(m):
    return torch.compile(m, backend="aot_eager" if ARGS.small else "inductor")


class Poison:
    """Kernel outputs start as NaN inside the block; tile overrides restored after it."""

    def __init__(self, **override):
        self.override = override

    def __enter__(self):
        self.saved = (gck._empty, dict(gck.OVERRIDE), gck.PRECISION)
        gck._empty = lambda shape, **kw: torch.full(shape, float("nan"), **kw)
        gck.OVERRIDE.update(self.override)

    def __exit__(self, *exc):
        gck._empty = self.saved[0]
        gck.OVERRIDE.clear()
        gck.OVERRIDE.update(self.saved[1])
        gck.PRECISION = self.saved[2]


# ------------------------------------------------------------------------------------------------ env
def section_env():
    rec = dict(what="env", torch=torch.__version__, device=DEV)
    import triton

    rec["triton"] = triton.__version__
    if DEV == "cuda":
        p = torch.cuda.get_device_properties(0)
        rec.update(gpu=p.name, sms=p.multi_processor_count, mem_GiB=round(p.total_memory / 2**30, 1))
    rec["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    rec["matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    emit(**rec)


# ---------------------------------------------------------------------------------------- correctness
def dense64(x, w, a, b=None, r=None, relu_mask=None):
    y = torch.einsum("koc,nctv,kvw->notw", w.double(), x.double(), a.double())
    if b is not None:
        y = y + b.double()[None, :, None, None]
    if r is not None:
        y = y + r.double()
    if relu_mask is not None:
        y = torch.where(relu_mask, y, torch.zeros_like(y))
    return y


def check_case(name, n, ci, co, t, k, bias, res, relu, dtype, prec, tol, override=None, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    v = 25

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, device=DEV) * scale

    x = rnd(n, ci, t, v)
    w = rnd(k, co, ci, scale=(k * ci) ** -0.5)
    a = torch.rand(k, v, v, generator=g, device=DEV) / 5
    b = rnd(co) if bias else None
    r = rnd(n, co, t, v) if res else None
    leaves = [p.to(dtype).requires_grad_() for p in (x, w, a, b, r) if p is not None]
    gy = rnd(n, co, t, v).to(dtype)
    rec = dict(
        what="check", case=name, dtype=str(dtype).replace("torch.", ""), prec=prec, shape=[n, ci, co, t, k]
    )
    try:
        with Poison(**(override or {})):
            gck.PRECISION = prec
            it = iter(leaves)
            xx, ww, aa = next(it), next(it), next(it)
            bb = next(it) if bias else None
            rr = next(it) if res else None
            y = graph_conv_triton(xx, ww, aa, bb, residual=rr, activation="relu" if relu else None)
            grads = torch.autograd.grad(y, leaves, gy)
            sync()
        l64 = [p.detach().double().requires_grad_() for p in leaves]
        it = iter(l64)
        x64, w64, a64 = next(it), next(it), next(it)
        b64 = next(it) if bias else None
        r64 = next(it) if res else None
        y64 = dense64(x64, w64, a64, b64, r64, (y > 0) if relu else None)
        refs = torch.autograd.grad(y64, l64, gy.double())
        errs = {"y": rel(y, y64)}
        names = ["dx", "dw", "da"] + (["db"] if bias else []) + (["dres"] if res else [])
        for nm, got, ref in zip(names, grads, refs):
            errs[nm] = rel(got, ref)
        finite = bool(torch.isfinite(y).all()) and all(bool(torch.isfinite(gr).all()) for gr in grads)
        rec.update(errs={k_: float(f"{v_:.3g}") for k_, v_ in errs.items()}, tol=tol, finite=finite)
        rec["ok"] = finite and max(errs.values()) < tol
    except Exception:  # noqa: BLE001
        rec.update(ok=False, error=traceback.format_exc()[-1200:])
    emit(**rec)
    free()


def backbone_grads(model, bbmod, impl, x, bf16):
    """(output float32, {name: grad}) of one forward + backward on a copy of model."""
    m = copy.deepcopy(model)
    set_backbone_impl(bbmod, impl)
    try:
        with Poison(), torch.autocast(DEV, dtype=torch.bfloat16, enabled=bf16):
            gck.PRECISION = "ieee"
            y, _ = m(x)
            y.float().square().mean().backward()
    finally:
        set_backbone_impl(bbmod, "default")
    return y.float(), {n_: p.grad for n_, p in m.named_parameters() if p.grad is not None}


def grad_errors(g, g0):
    """Error of all gradients together, and the worst relative error of a parameter whose gradient is
    not negligible (biases right before a training-mode BN get rounding noise as gradient)."""
    num = sum(float((g[n_] - g0[n_]).norm()) ** 2 for n_ in g0) ** 0.5
    den = sum(float(g0[n_].norm()) ** 2 for n_ in g0) ** 0.5
    top = max(float(v.norm()) for v in g0.values())
    per = max(rel(g[n_], g0[n_]) for n_ in g0 if float(g0[n_].norm()) > 1e-3 * top)
    return num / den, per


def check_backbone(kind, dtype):
    """Backbone with the kernel vs the plain path: outputs and every parameter gradient (exact fp32
    dots everywhere). bf16: both bf16 paths against the fp32 plain path; the kernel's error must stay
    within twice the plain bf16 path's error."""
    from skelcl.models import backbone as bbmod

    B, T = (1, 8) if ARGS.small else (8, 64)
    torch.manual_seed(0)
    model = bbmod.Backbone(kind=kind, width=0.25 if ARGS.small else 1.0, strides=(5, 8)).to(DEV)
    if kind == "agcn":  # non-zero learned offsets so dA matters
        with torch.no_grad():
            for layer in model.layers:
                layer.offset.normal_(0, 0.02)
    x = torch.randn(B, T, 2, 25, 3, device=DEV)
    bf16 = dtype == torch.bfloat16
    rec = dict(what="check", case=f"backbone_{kind}", dtype="bf16" if bf16 else "fp32")
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        y0, g0 = backbone_grads(model, bbmod, "reference", x, False)
        y1, g1 = backbone_grads(model, bbmod, "triton", x, bf16)
        all_err, per_err = grad_errors(g1, g0)
        rec.update(y_err=rel(y1, y0), grad_err_all=all_err, grad_err_worst_param=per_err, n_params=len(g0))
        same = set(g0) == set(g1)
        if not bf16:
            rec["ok"] = same and rec["y_err"] < 1e-4 and all_err < 1e-4 and per_err < 1e-3
        else:
            yp, gp = backbone_grads(model, bbmod, "reference", x, True)
            p_all, p_per = grad_errors(gp, g0)
            rec.update(plain_bf16_y_err=rel(yp, y0), plain_bf16_grad_err_all=p_all, plain_bf16_worst=p_per)
            rec["ok"] = (
                same and rec["y_err"] < 2 * rec["plain_bf16_y_err"] + 1e-3 and all_err < 2 * p_all + 1e-3
            )
    except Exception:  # noqa: BLE001
        rec.update(ok=False, error=traceback.format_exc()[-1200:])
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    emit(**rec)
    free()


def section_correctness():
    f32, bf = torch.float32, torch.bfloat16
    cases = [
        ("ragged_relu_res", 3, 37, 19, 17, 3, True, True, True, f32, "ieee", 1e-5, None),
        ("k1_oddT", 4, 20, 33, 9, 1, False, False, False, f32, "ieee", 1e-5, None),
        ("cin3_layer1", 4, 3, 64, 32, 3, True, False, False, f32, "ieee", 1e-5, None),
        ("loops_tail", 3, 70, 50, 13, 3, True, True, True, f32, "ieee", 1e-5, dict(dw_splits=3)),
        ("tf32_c128_256", 4, 128, 256, 16, 3, True, False, True, f32, "tf32", 5e-3, None),
        ("bf16_ragged", 3, 96, 80, 9, 3, True, True, True, bf, "tf32", 1e-2, None),
        ("bf16_c256", 4, 256, 256, 32, 3, True, True, True, bf, "tf32", 1e-2, None),
    ]
    if ARGS.small:
        cases = [c[:1] + (2, c[2] % 24 + 3, c[3] % 24 + 3, 5) + c[5:] for c in cases]
    else:
        cases.append(("bf16_unit_shape", 256, 256, 256, 64, 3, True, True, True, bf, "tf32", 1e-2, None))
    for name, n, ci, co, t, k, bias, res, relu, dtype, prec, tol, ov in cases:
        check_case(name, n, ci, co, t, k, bias, res, relu, dtype, prec, tol, ov)
    for kind in ("stgcn", "agcn"):
        check_backbone(kind, torch.float32)
    check_backbone("stgcn", torch.bfloat16)


# ------------------------------------------------------------------------------------------ GCN unit
class UnitEager(nn.Module):
    """The anchor's unit: 1x1 conv to K*C (with bias), einsum over the graph, BN, + x, ReLU."""

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
    """The same unit on the fused kernel: graph_conv(x, W, A, bias), BN, + x, ReLU (BN stays outside)."""

    def __init__(self, c, a):
        super().__init__()
        self.register_buffer("A", a)
        k = a.shape[0]
        self.weight = nn.Parameter(torch.randn(k, c, c) / (k * c) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(c))
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn(graph_conv_triton(x, self.weight, self.A, self.bias)) + x)


def graph(v=25, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(k, v, v, generator=g) * (torch.rand(k, v, v, generator=g) < 0.15) + torch.eye(v)
    return (a / a.sum(1, keepdim=True)).to(DEV)


def unit_shapes():
    if ARGS.small:
        return [("unit_N2_C16_T8", 2, 16, 8)]
    return [("unit_N256_C256_T64", 256, 256, 64), ("unit_N64_C64_T64", 64, 64, 64)]


def time_row(rec, step, rep_ms=200, samples=None):
    try:
        step()
        if not ARGS.small:
            step()
        sync()
        ms = bench_ms(step, rep_ms)
        rec["ms"] = ms
        if samples:
            rec["samples_per_s"] = samples / ms * 1e3
        rec["peak_extra_MiB"] = peak_extra_mib(step)
        tgt = TARGETS.get((rec["case"], rec["dtype"]))
        if tgt and rec["impl"].startswith("triton"):
            rec["target"] = tgt
            rec["meets_target"] = (
                ms <= tgt["ms"] if "ms" in tgt else rec["samples_per_s"] >= tgt["samples_per_s"]
            )
        anchor = ANCHORS_H100.get((rec["case"], rec["dtype"]))
        if anchor:
            rec["anchor_h100"] = anchor
    except Exception:  # noqa: BLE001
        rec["error"] = traceback.format_exc()[-1200:]
    emit(**rec)
    free()


def unit_rows(case, n, c, t, tag, impls):
    a = graph()
    x = torch.randn(n, c, t, 25, device=DEV, requires_grad=True)
    bf16 = tag == "bf16"
    for impl in impls:
        if time_left() < 15:
            emit(what="time", case=case, dtype=tag, impl=impl, error="skipped: time budget")
            continue
        if impl.startswith("triton"):
            m = UnitKernel(c, a).to(DEV)
        else:
            m = UnitEager(c, a).to(DEV)
        rec = dict(what="time", case=case, dtype=tag, impl=impl, N=n, C=c, T=t)
        fn = m
        if impl.endswith("compiled"):
            t_c = time.time()
            fn = compile_fn(m)

        def step(fn=fn):
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=bf16):
                y = fn(x)
            y.square().mean().backward()

        if impl.endswith("compiled"):
            try:
                step()
                sync()
                rec["compile_s"] = round(time.time() - t_c, 1)
            except Exception:  # noqa: BLE001
                rec["error"] = traceback.format_exc()[-1200:]
                emit(**rec)
                continue
        if tag == "fp32":
            rec["kernel_dots"] = gck._precision(torch.float32)
        time_row(rec, step)
        del m, fn


def op_rows(case, n, c, t, tag):
    """The graph convolution alone (no BN / residual), forward + backward and forward only."""
    a = graph()
    dt = torch.bfloat16 if tag == "bf16" else torch.float32
    x = torch.randn(n, c, t, 25, device=DEV, dtype=dt, requires_grad=True)
    conv = nn.Conv2d(c, 3 * c, 1).to(DEV, dt)
    w = (torch.randn(3, c, c, device=DEV) / (3 * c) ** 0.5).to(dt).requires_grad_()
    b = torch.zeros(c, device=DEV, dtype=dt, requires_grad=True)
    ad = a.to(dt)

    def eager():
        y = conv(x).view(n, 3, c, t, 25)
        return torch.einsum("nkctv,kvw->nctw", y, ad)

    def kernel():
        return graph_conv_triton(x, w, ad, b)

    for impl, f in (("eager_op", eager), ("triton_op", kernel)):
        rec = dict(what="time", case=case + "_op", dtype=tag, impl=impl, N=n, C=c, T=t)
        try:
            with torch.no_grad():
                f()
                rec["fwd_ms"] = bench_ms(f)
        except Exception:  # noqa: BLE001
            rec["error"] = traceback.format_exc()[-600:]
        time_row(rec, lambda f=f: f().square().mean().backward())


def inference_rows(case, n, c, t, tag):
    """Eval-mode unit: eager (conv, einsum, BN, + x, ReLU) vs BN folded + fused residual and ReLU."""
    a = graph()
    dt = torch.bfloat16 if tag == "bf16" else torch.float32
    m = UnitEager(c, a).to(DEV).eval()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(n, c, t, 25, device=DEV)
    k = a.shape[0]
    w = m.conv.weight.view(k, c, c)
    # conv bias b_k[o] passes through the graph as sum_k b_k[o] * colsum_k[w]: fold it exactly only when
    # it is zero; the eager module keeps its bias, the comparison below is on a zero-bias copy.
    with torch.no_grad():
        m.conv.bias.zero_()
    wf, bf = fold_batchnorm(w, None, m.bn)
    with torch.no_grad():
        ref = m(x)
        got = graph_conv_triton(x.to(dt), wf.to(dt), a.to(dt), bf, residual=x.to(dt), activation="relu")
    emit(
        what="check",
        case=case + "_folded_bn_inference",
        dtype=tag,
        err=rel(got, ref),
        ok=rel(got, ref) < 1e-2,
    )
    for impl, f in (
        ("eager_eval", lambda: m(x)),
        ("triton_folded", lambda: graph_conv_triton(x, wf, a, bf, residual=x, activation="relu")),
    ):
        rec = dict(what="time", case=case + "_inference", dtype=tag, impl=impl, N=n, C=c, T=t)
        try:

            def fwd(f=f):
                with torch.no_grad(), torch.autocast(DEV, dtype=torch.bfloat16, enabled=tag == "bf16"):
                    f()

            fwd()
            rec["fwd_ms"] = bench_ms(fwd)
        except Exception:  # noqa: BLE001
            rec["error"] = traceback.format_exc()[-600:]
        emit(**rec)
    free()


def section_unit():
    impls = ["eager", "triton"] + ([] if ARGS.no_compile else ["eager_compiled", "triton_compiled"])
    for case, n, c, t in unit_shapes():
        for tag in ("bf16", "fp32"):
            unit_rows(case, n, c, t, tag, impls)
        for tag in ("bf16", "fp32"):
            if time_left() > 30:
                op_rows(case, n, c, t, tag)
        if time_left() > 30:
            inference_rows(case, n, c, t, "bf16")


# --------------------------------------------------------------------------------------------- sweep
FWD_SWEEP = [  # BO, BC, BT, warps, stages, prefetch; the first is the default (no spills on sm_90)
    (64, 64, 4, 8, 3, True),
    (64, 64, 4, 8, 3, False),
    (64, 64, 4, 8, 4, True),
    (128, 64, 2, 8, 3, True),
    (64, 64, 2, 4, 3, True),
    (64, 32, 4, 8, 3, True),
    (128, 64, 4, 8, 3, False),
]
DW_SWEEP = [
    (64, 64, 4, 8, 3, False),
    (64, 64, 4, 8, 3, True),
    (64, 128, 4, 8, 3, False),
    (128, 64, 4, 8, 3, False),
    (64, 64, 2, 4, 3, True),
    (128, 128, 4, 8, 2, False),
]


def section_sweep():
    case, n, c, t = unit_shapes()[0]
    dt = torch.bfloat16
    x = torch.randn(n, c, t, 25, device=DEV, dtype=dt)
    g = torch.randn(n, c, t, 25, device=DEV, dtype=dt)
    w = (torch.randn(3, c, c, device=DEV) / (3 * c) ** 0.5).to(dt)
    a = graph().to(dt)
    best = {}
    sweeps = [("fwd", FWD_SWEEP), ("bwd_data", FWD_SWEEP), ("dw", DW_SWEEP)]
    if ARGS.small:
        sweeps = [(kind, [(16, 16, 2, 1, 1, True)]) for kind, _ in sweeps]
    for kind, cfgs in sweeps:
        for bo, bc, bt, nw, ns, pf in cfgs:
            if time_left() < 60:
                emit(what="sweep", kind=kind, error="skipped: time budget")
                return best
            pre = "dw_" if kind == "dw" else "fwd_"
            ov = {
                pre + "BO": bo,
                pre + "BC": bc,
                pre + "BT": bt,
                pre + "num_warps": nw,
                pre + "num_stages": ns,
                pre + "prefetch": pf,
            }
            rec = dict(what="sweep", case=case, dtype="bf16", kind=kind, cfg=[bo, bc, bt, nw, ns, pf])
            try:
                gck.OVERRIDE.clear()
                gck.OVERRIDE.update(ov)
                if kind == "fwd":
                    fn = lambda: gck._launch_gc(x, w, a, None, None, False, None, True, False)  # noqa: E731
                elif kind == "bwd_data":  # dX only (ST-GCN: fixed adjacency)
                    wt, at = w.transpose(1, 2), a.transpose(1, 2)
                    fn = lambda wt=wt, at=at: gck._launch_gc(g, wt, at, None, None, False, x, True, False)  # noqa: E731
                else:
                    fn = lambda: gck._launch_dw(g, x, a)  # noqa: E731
                fn()
                sync()
                rec["ms"] = bench_ms(fn, 100)
                flop = 2 * n * t * 32 * 3 * c * (c + 32)
                rec["TFLOPs_padded"] = flop / rec["ms"] / 1e9
                if kind not in best or rec["ms"] < best[kind][0]:
                    best[kind] = (rec["ms"], ov)
            except Exception:  # noqa: BLE001
                rec["error"] = traceback.format_exc()[-400:]
            finally:
                gck.OVERRIDE.clear()
            emit(**rec)
    free()
    return best


def section_sweep_and_retime():
    best = section_sweep()
    if not best:
        return
    ov = {}
    for kind in ("fwd", "dw"):  # fwd and bwd_data share one config; take the forward's
        if kind in best:
            ov.update(best[kind][1])
    emit(what="sweep_best", override=ov, ms={k: v[0] for k, v in best.items()})
    gck.OVERRIDE.update(ov)
    case, n, c, t = unit_shapes()[0]
    unit_rows(
        case, n, c, t, "bf16", ["triton_tuned"] + ([] if ARGS.no_compile else ["triton_tuned_compiled"])
    )
    gck.OVERRIDE.clear()


# ------------------------------------------------------------------------------------------ backbone
def set_backbone_impl(bbmod, impl):
    """Point the backbone's graph_conv at the reference, the kernel, or back to the dispatcher."""
    from skelcl.kernels import graph_conv

    fn = {"reference": graph_conv_reference, "triton": graph_conv_triton, "default": graph_conv}[impl]
    if not hasattr(bbmod, "graph_conv"):
        raise RuntimeError("skelcl.models.backbone has no module-level graph_conv to switch")
    bbmod.graph_conv = fn


def backbone_rows(case, n, t, tag, impls):
    from skelcl.models import backbone as bbmod

    bf16 = tag == "bf16"
    for impl in impls:
        if time_left() < (90 if "compiled" in impl and not ARGS.small else 15):
            emit(what="time", case=case, dtype=tag, impl=impl, error="skipped: time budget")
            continue
        torch.manual_seed(0)
        width = 0.25 if ARGS.small else 1.0
        m = bbmod.Backbone(kind="stgcn", width=width, strides=(5, 8)).to(DEV)
        x = torch.randn(n, t, 1, 25, 3, device=DEV)
        set_backbone_impl(bbmod, "triton" if impl.startswith("triton") else "reference")
        rec = dict(what="time", case=case, dtype=tag, impl=impl, N=n, T=t)
        fn = compile_fn(m) if impl.endswith("compiled") else m

        def step(fn=fn, x=x):
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=bf16):
                y, _ = fn(x)
            y.float().square().mean().backward()

        if impl.endswith("compiled"):
            t_c = time.time()
            try:
                step()
                sync()
                rec["compile_s"] = round(time.time() - t_c, 1)
            except Exception:  # noqa: BLE001
                rec["error"] = traceback.format_exc()[-1200:]
                emit(**rec)
                continue
        time_row(rec, step, rep_ms=600, samples=n)
        set_backbone_impl(bbmod, "default")
        del m, fn


def section_backbone():
    shapes = [("backbone_N2_T8", 2, 8)] if ARGS.small else [("backbone_N256_T64", 256, 64)]
    comp = [] if ARGS.no_compile else ["triton_compiled", "eager_compiled"]
    for case, n, t in shapes:
        backbone_rows(case, n, t, "bf16", ["eager", "triton"])
        backbone_rows(case, n, t, "fp32", ["eager", "triton"])
        backbone_rows(case, n, t, "bf16", comp[:1] if ARGS.small else comp)
        if ARGS.compile_fp32:
            backbone_rows(case, n, t, "fp32", comp)
    if not ARGS.small:
        backbone_rows("backbone_N64_T64", 64, 64, "fp32", ["eager", "triton"])


# ---------------------------------------------------------------------------------------------- table
def print_table():
    checks = [r for r in RUN.records if r["what"] == "check"]
    print(
        "\nchecks: "
        + ", ".join(f"{r['case']}/{r['dtype']}={'ok' if r.get('ok') else 'FAIL'}" for r in checks)
    )
    for r in checks:
        if not r.get("ok"):
            print(f"  FAIL {r['case']}: {r.get('errs') or r.get('error', '')[-300:]}")
    best = [r for r in RUN.records if r["what"] == "sweep_best"]
    if best:
        print(f"sweep best: {best[-1]['override']} {best[-1]['ms']}")
    head = ("case", "dtype", "impl", "ms", "fwd ms", "samples/s", "extra MiB")
    print("\n{:32s} {:5s} {:22s} {:>9s} {:>8s} {:>10s} {:>9s}  note".format(*head))
    for r in RUN.records:
        if r["what"] != "time":
            continue
        note = ""
        if "error" in r:
            note = r["error"].strip().splitlines()[-1][:70]
        elif "meets_target" in r:
            note = f"target {r['target']}: {'met' if r['meets_target'] else 'MISSED'}"
        elif "anchor_h100" in r:
            note = f"anchor {r['anchor_h100']}"
        if "compile_s" in r:
            note = f"compile {r['compile_s']} s; " + note
        ms = f"{r['ms']:.3f}" if "ms" in r else "-"
        fwd = f"{r['fwd_ms']:.3f}" if "fwd_ms" in r else "-"
        sps = f"{r['samples_per_s']:.0f}" if "samples_per_s" in r else "-"
        mem = f"{r['peak_extra_MiB']:.0f}" if r.get("peak_extra_MiB") is not None else "-"
        print(
            f"{r['case']:32s} {r['dtype']:5s} {r['impl']:22s} {ms:>9s} {fwd:>8s} {sps:>10s} {mem:>9s}  {note}"
        )


def main():
    section_env()
    parts = dict(
        check=section_correctness,
        unit=section_unit,
        backbone=section_backbone,
        sweep=section_sweep_and_retime,
    )
    wanted = {p_.strip() for p_ in ARGS.sections.split(",")} - ({"sweep"} if ARGS.no_sweep else set())
    RUN.run_sections([part for name, part in parts.items() if name in wanted])
    print_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
