"""Pretraining under torch.distributed: two gloo ranks on CPU (as torchrun would start them).

Checks that DDP keeps the ranks' models identical, that the queues take the keys of both ranks (so every
rank holds the same queues), and that run_pretrain completes with two ranks, rank 0 alone writing the run.
"""

import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skelcl.kernels import gather_with_grad

from skelcl.data.synthetic import SynthConfig, generate_cache
from skelcl.models import MoCo
from skelcl.models.moco import snippet_info_nce
from skelcl.train import config
from skelcl.train.checkpoint import load
from skelcl.train.distributed import wrap
from skelcl.train.pretrain import open_split, run_pretrain

WORLD = 2
B = 3  # videos per rank
S = 3  # snippets per video


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _views(rank, step):
    g = torch.Generator().manual_seed(100 * step + rank)
    return [torch.randn(B, 16, 1, 25, 3, generator=g) for _ in range(2)]


def _worker(rank, port, path, data):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    # Part 1: MoCo + DDP directly, two SGD steps on rank-specific batches.
    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
    model = MoCo(dict(kind="stgcn", width=0.125), dim=8, queue_size=64, snippet_queue_size=64,
                 num_snippets=S, momentum=0.9)  # fmt: skip
    ddp = wrap(model, torch.device("cpu"))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    keys = []
    for step in range(2):
        video = torch.arange(B) + B * rank + B * WORLD * step  # unique per (rank, step)
        loss, _ = ddp(_views(rank, step), video=video)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.flush_queues()
        keys.append(model.queue.get()[-B * WORLD :].clone())
    torch.save({"state": model.state_dict(), "keys": keys}, f"{path}/moco{rank}.pt")
    # Part 2: the trainer itself with two ranks.
    cfg = config.resolve("pretrain_skeletonclr", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=2", "train.batch_size=4",
        "train.num_threads=1", "pretrain.queue_size=64", "pretrain.snippet_queue_size=256",
        "pretrain.momentum=0.9"])  # fmt: skip
    metrics = run_pretrain(cfg, f"{path}/run", quiet=True)
    torch.save(metrics, f"{path}/metrics{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_pretrain_on_two_ranks(tmp_path):
    small = SynthConfig(length=(70, 100), num_subjects=8, test_every=4)
    data = generate_cache(tmp_path / "data", 20, 3, config=small, progress=False)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), str(data)), nprocs=WORLD, join=True)

    a, b = (torch.load(tmp_path / f"moco{r}.pt") for r in range(WORLD))
    for name, t in a["state"].items():
        if "running_" in name or "num_batches" in name:
            continue  # BatchNorm statistics are per rank between DDP's buffer broadcasts
        assert torch.equal(t, b["state"][name]), name  # parameters, momentum encoder and queues agree
    assert int(a["state"]["queue.filled"]) == 2 * B * WORLD
    assert int(a["state"]["squeue.filled"]) == 2 * B * WORLD * S
    # queue rows carry the gathered video ids, rank 0's batch first, on both ranks
    assert a["state"]["queue.group"][: 2 * B * WORLD].tolist() == list(range(2 * B * WORLD))
    assert a["state"]["squeue.group"][: 2 * B * WORLD * S].tolist() == [v for v in range(2 * B * WORLD)
                                                                       for _ in range(S)]  # fmt: skip
    for step in range(2):
        k = a["keys"][step]  # the last B * WORLD queue rows after this step: the keys of both ranks
        assert k.shape == (B * WORLD, 8)
        assert torch.allclose(k.norm(dim=1), torch.ones(B * WORLD), atol=1e-5)
        assert not torch.allclose(k[:B], k[B:])  # rank 1's keys are not a copy of rank 0's

    # The trainer: 2 ranks x 4 sequences per step; rank 0 wrote the run directory and the checkpoint.
    ck = load(tmp_path / "run" / "last.pt")
    m0, m1 = (torch.load(tmp_path / f"metrics{r}.pt") for r in range(WORLD))
    assert ck["epoch"] == len(ck["history"]) == 2
    n = len(open_split(ck["config"]["data"]))  # training sequences; each rank takes n // 2 of them
    steps_per_epoch = (n // WORLD) // 4
    assert steps_per_epoch >= 1
    assert int(ck["model"]["queue.filled"]) == 2 * steps_per_epoch * 4 * WORLD
    assert m0["final"]["loss"] == pytest.approx(m1["final"]["loss"])  # logged losses are rank means
    assert (tmp_path / "run" / "metrics.json").is_file()


def _empty_snippet_worker(rank, port, path):
    """Rank 1 has no query snippet with a positive (every align entry -1): its snippet loss is the early
    zero, yet both ranks must run the same backward collectives."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    # (a) The loss itself, with keys that carry a gradient through gather_with_grad: the backward
    # all-reduce runs on both ranks only if rank 1's zero loss still reaches the gathered keys.
    g = torch.Generator().manual_seed(rank)
    zq = torch.nn.functional.normalize(torch.randn(B * S, 8, generator=g), dim=1).requires_grad_()
    zk = torch.nn.functional.normalize(torch.randn(B * S, 8, generator=g), dim=1).requires_grad_()
    matched = torch.zeros(B, S, dtype=torch.long) if rank == 0 else torch.full((B, S), -1)
    loss = snippet_info_nce(zq, gather_with_grad(zk), None, matched, 0.1, offset=rank * B)
    loss.backward()
    grad_zk = zk.grad.clone()
    # (b) A DDP MoCo step with aligned positives, rank 1's align all -1.
    torch.manual_seed(0)
    model = MoCo(dict(kind="stgcn", width=0.125), dim=8, queue_size=64, snippet_queue_size=64,
                 num_snippets=S, momentum=0.9, match="aligned")  # fmt: skip
    ddp = wrap(model, torch.device("cpu"))
    align = torch.zeros(B, S, dtype=torch.long) if rank == 0 else torch.full((B, S), -1)
    for step in range(2):
        video = torch.arange(B) + B * rank + B * WORLD * step
        loss, stats = ddp(_views(rank, step), align=align, video=video)
        loss.backward()
        model.flush_queues()
    torch.save({"grad_zk": grad_zk, "loss_snippet": stats["loss_snippet"],
                "w": model.snip_q.net[0].weight.grad.clone()}, f"{path}/empty{rank}.pt")  # fmt: skip
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_rank_without_snippet_positives_does_not_hang(tmp_path):
    ctx = mp.spawn(_empty_snippet_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.time() + 240
    while not ctx.join(timeout=5):
        if time.time() > deadline:  # a hang fails the test instead of blocking the suite
            for p in ctx.processes:
                p.kill()
            pytest.fail("ranks did not finish: a backward collective is waiting on one rank")
    r0, r1 = (torch.load(tmp_path / f"empty{r}.pt") for r in range(WORLD))
    # rank 1's keys get their gradient from rank 0's loss through the all-reduce
    assert r1["grad_zk"].abs().sum() > 0
    assert r0["loss_snippet"] > 0 and r1["loss_snippet"] == 0.0
    torch.testing.assert_close(r0["w"], r1["w"])  # DDP averaged the snippet head's gradient
