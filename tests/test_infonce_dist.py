"""gather_with_grad in a 2-process gloo group on CPU: the InfoNCE gradients reaching each rank's keys equal
the gradients of the summed per-rank losses computed in one process."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skelcl.kernels import gather_with_grad, info_nce

WORLD = 2
D = 8


def _data(sizes):
    g = torch.Generator().manual_seed(5)
    qs = [torch.randn(n, D, generator=g, dtype=torch.float64) for n in sizes]
    ks = [torch.randn(n, D, generator=g, dtype=torch.float64) for n in sizes]
    return qs, ks


def _loss(q, keys, rank, sizes):
    """Rank r's loss: its queries against all gathered keys, query i's positive is its own key i."""
    pos = torch.arange(sizes[rank]) + sum(sizes[:rank])
    return info_nce(q, keys, positive=pos, temperature=0.2, reduction="sum")


def _worker(rank, port, path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    results = {}
    for uneven, sizes in ((False, [6, 6]), (True, [5, 9])):
        qs, ks = _data(sizes)
        q = qs[rank].clone().requires_grad_()
        k = ks[rank].clone().requires_grad_()
        keys = gather_with_grad(k, uneven=uneven)
        _loss(q, keys, rank, sizes).backward()
        results[uneven] = (keys.detach(), q.grad, k.grad)
    torch.save(results, f"{path}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_gather_with_grad_two_ranks(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for uneven, sizes in ((False, [6, 6]), (True, [5, 9])):
        qs, ks = _data(sizes)
        qs = [q.clone().requires_grad_() for q in qs]
        ks = [k.clone().requires_grad_() for k in ks]
        full = torch.cat(ks)
        sum(_loss(qs[r], full, r, sizes) for r in range(WORLD)).backward()
        for r in range(WORLD):
            keys, gq, gk = got[r][uneven]
            assert torch.equal(keys, full.detach())
            torch.testing.assert_close(gq, qs[r].grad, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(gk, ks[r].grad, rtol=1e-10, atol=1e-12)


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
