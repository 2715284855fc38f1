"""Section check_graph_conv: the graph-convolution kernel at the unit shape (N 256, C 256, T 64) in bf16
against float64 (values and all five gradients), and the bf16 backbone on the kernel against the plain
float32 path."""

from __future__ import annotations

import copy

import torch

from skelcl.benchmark.gpu.common import C, Poisoned, emit, graph, rel
from skelcl.benchmark.gpu.rows import backbone_module, set_backbone_impl, unit_shape


def gc_dense64(x, w, a, b, r, relu_mask):

    y = torch.einsum("koc,nctv,kvw->notw", w.double(), x.double(), a.double())
    y = y + b.double()[None, :, None, None] + r.double()
    return torch.where(relu_mask, y, torch.zeros_like(y))


def gc_unit_check():
    """graph_conv_triton at the unit shape, bf16, bias + residual + ReLU, against float64 (values and the
    gradients of x, weight, adjacency, bias, residual); outputs poisoned."""

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


def backbone_check():
    """bf16 backbone on the kernel vs the plain float32 path (outputs, every parameter gradient); the
    kernel's error must stay within twice the plain bf16 path's error (+1e-3)."""

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


def run():
    gc_unit_check()
    C.bench.free()
    C.bench.check_budget(10)
    backbone_check()
    C.bench.free()
