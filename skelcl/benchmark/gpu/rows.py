"""The timed rows of the GPU check: InfoNCE (Triton, eager, compiled eager, the peers), the graph-convolution
unit and the ST-GCN backbone, each one forward + backward step timed by common.time_row; their shapes at full
size and tiny under --small."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from skelcl.benchmark.gpu.common import TAU, C, graph, tag_of, time_row, unit_rows


def infonce_shapes():
    """Headline (case, M, N, Q, keys need grad) at full size, tiny under --small."""
    if C.small:
        return dict(inbatch=("inbatch_65536", 64, 64, 0, True), locked=("locked_65536", 64, 64, 0, False),
                    queue=("queue_4096+1048576", 32, 32, 256, True))  # fmt: skip
    return dict(inbatch=("inbatch_65536", 65536, 65536, 0, True),
                locked=("locked_65536", 65536, 65536, 0, False),
                queue=("queue_4096+1048576", 4096, 4096, 1048576, True))  # fmt: skip


def infonce_step(impl, q, k, queue):
    """(step, zero): one forward + backward of the loss with positives on the diagonal."""
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


def unit_shape(name="main"):
    if C.small:
        return ("unit_N256_C256_T64", 1, 16, 4) if name == "main" else ("unit_N64_C64_T64", 1, 16, 2)
    return ("unit_N256_C256_T64", 256, 256, 64) if name == "main" else ("unit_N64_C64_T64", 64, 64, 64)


def backbone_module():
    from skelcl.models import backbone as bbmod

    if not hasattr(bbmod, "graph_conv"):
        raise RuntimeError("skelcl.models.backbone has no module-level graph_conv to switch")
    return bbmod


class NoOpGraphConv(torch.autograd.Function):
    """graph_conv replaced by a no-op of the same output shape: zeros forward, zero gradients backward
    (the layers before it still run their backward)."""

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


def noop_graph_conv(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    return NoOpGraphConv.apply(x, weight, adjacency, bias)


def set_backbone_impl(bbmod, impl):
    from skelcl.kernels import graph_conv

    fns = dict(reference=C.graph_conv_reference, triton=C.graph_conv_triton, default=graph_conv)
    bbmod.graph_conv = noop_graph_conv if impl == "noop" else fns[impl]


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


def unit_row(which, tag, impl):
    case, n, c, t = unit_shape(which)
    m = (UnitKernel if impl.startswith("triton") else UnitEager)(c, graph()).to(C.dev)
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
