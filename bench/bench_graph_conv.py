"""CPU graph convolution forward + backward: orderings of the PyTorch reference, side by side.

    pytest bench/bench_graph_conv.py --benchmark-enable --benchmark-group-by=param:shape

(BENCH_THREADS=1 pins one intra-op thread: steadier on a shared machine.)

Training on a CPU uses graph_conv_ncvt on joints-major activations (N, C, V, T) stored channels-last,
timed here on input already in that layout (the backbone keeps it from layer to layer). This compares
ways of writing the same y = sum_k W_k X A_k (gradients for x, weight and adjacency) at backbone-like
shapes, batch 16 (8 sequences x 2 bodies). The ratio within one run is the figure; absolute CPU times
depend on the machine.
Every variant is checked against a float64 einsum before it is timed.
"""

import os

import pytest
import torch
from skelcl.kernels import graph_conv_ncvt, graph_conv_reference

# (N, C_in, C_out, T): layer 1, a 64-channel layer, the 64 -> 128 transition, 128 and 256 layers
SHAPES = {
    "l1_3to64_T64": (16, 3, 64, 64),
    "64to64_T64": (16, 64, 64, 64),
    "64to128_T32": (16, 64, 128, 32),
    "128to128_T32": (16, 128, 128, 32),
    "256to256_T16": (16, 256, 256, 16),
}


def joints_first_bmm(x, w, a):
    """Joints first as a batched matmul over k, then one channel matmul over K * C_in."""
    n, ci, t, v = x.shape
    k, co = w.shape[:2]
    xa = torch.matmul(x.reshape(n, 1, ci * t, v), a.unsqueeze(0))  # (N, K, C_in*T, V)
    y = torch.matmul(w.permute(1, 0, 2).reshape(co, k * ci), xa.reshape(n, k * ci, t * v))
    return y.view(n, co, t, v)


def conv_first(x, w, a):
    """Channels first (one matmul to K * C_out, like a 1x1 conv), then joints per k, summed over k."""
    n, ci, t, v = x.shape
    k, co = w.shape[:2]
    y = torch.matmul(w.reshape(k * co, ci), x.reshape(n, ci, t * v))
    return torch.matmul(y.view(n, k, co * t, v), a).sum(1).view(n, co, t, v)


def joints_one_matmul(x, w, a):
    """Joints first as one V -> K*V matmul, then one channel matmul over K * C_in."""
    n, ci, t, v = x.shape
    k, co = w.shape[:2]
    xa = torch.matmul(x.reshape(n, ci * t, v), a.permute(1, 0, 2).reshape(v, k * v))
    xa = xa.view(n, ci, t, k, v).permute(0, 3, 1, 2, 4).reshape(n, k * ci, t * v)
    return torch.matmul(w.permute(1, 0, 2).reshape(co, k * ci), xa).view(n, co, t, v)


IMPLS = {
    "reference": graph_conv_reference,  # joints first, then channels, both einsum
    "joints_first_bmm": joints_first_bmm,
    "conv_first": conv_first,
    "joints_one_matmul": joints_one_matmul,
    "ncvt": graph_conv_ncvt,  # joints-major input (N, C, V, T) stored (N, V, T, C): matrix products
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_graph_conv_cpu_fwd_bwd(benchmark, shape, impl):
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    n, ci, co, t = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, ci, t, 25, generator=g, requires_grad=True)
    w = torch.randn(3, co, ci, generator=g, requires_grad=True)
    a = torch.rand(3, 25, 25, generator=g, requires_grad=True)
    gy = torch.randn(n, co, t, 25, generator=g)
    fn = IMPLS[impl]
    ref = torch.einsum("koc,nctv,kvw->notw", w.double(), x.double(), a.double())
    if impl == "ncvt":  # its activations are joints-major, stored channels-last as in the backbone
        x = x.detach().transpose(2, 3).contiguous(memory_format=torch.channels_last).requires_grad_()
        gy, ref = gy.transpose(2, 3).contiguous(), ref.transpose(2, 3)
    y = fn(x, w, a)
    assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-5

    def step():
        return torch.autograd.grad(fn(x, w, a), (x, w, a), gy)

    grads = benchmark(step)
    assert all(torch.isfinite(gr).all() for gr in grads)
