"""CPU InfoNCE forward + backward: the chunked reference against a dense eager loss, side by side.

    pytest bench/bench_infonce.py --benchmark-enable --benchmark-group-by=param:shape

The ratio within one run is the figure; absolute CPU times depend on the machine. The chunked
reference holds at most 2^22 logits at a time, the dense loss holds the whole M x (N + Q) matrix
(and autograd keeps it for backward).
"""

import pytest
import torch
import torch.nn.functional as F
from skelcl.kernels import info_nce_reference

# (M, N, Q, d)
SHAPES = {"inbatch_2048": (2048, 2048, 0, 128), "queue_1024x(1024+16384)": (1024, 1024, 16384, 128)}
TAU = 0.07


def _inputs(m, n, nq, d):
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(m, d, generator=g), dim=1).requires_grad_()
    k = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
    queue = F.normalize(torch.randn(nq, d, generator=g), dim=1) if nq else None
    return q, k, queue


def _dense(q, k, queue):
    keys = k if queue is None else torch.cat([k, queue])
    return F.cross_entropy(q @ keys.t() / TAU, torch.arange(q.shape[0]))


def _chunked(q, k, queue):
    return info_nce_reference(q, k, queue, temperature=TAU)


@pytest.mark.parametrize("impl", ["dense_eager", "chunked_reference"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_infonce_cpu_fwd_bwd(benchmark, shape, impl):
    torch.set_num_threads(2)
    q, k, queue = _inputs(*SHAPES[shape])
    fn = _dense if impl == "dense_eager" else _chunked

    def step():
        q.grad = k.grad = None
        loss = fn(q, k, queue)
        loss.backward()
        return loss

    loss = benchmark(step)
    assert torch.isfinite(loss)
    ref = _dense(q.detach().double(), k.detach().double(), None if queue is None else queue.double())
    assert abs(loss.item() - ref.item()) < 1e-4 * abs(ref.item())
