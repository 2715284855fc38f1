"""Queue rows carry their video: own-video rows are left out of the global and snippet losses, the share
of own-video rows is reported, queues are sized against the epoch and a longer queue warns."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skelcl.data.synthetic import SynthConfig, generate_cache
from skelcl.errors import SkelclError
from skelcl.models import MoCo, RingQueue
from skelcl.models.heads import snippet_features
from skelcl.models.moco import queue_neighbours, queue_storage_dtype, resolve_queue_sizes
from skelcl.train import config
from skelcl.train.data import epoch_batches
from skelcl.train.pretrain import run_pretrain

torch.set_num_threads(2)

N_VIDEOS, BATCH, S = 6, 3, 3


def _views(idx, epoch, n=2):
    """Fixed random views per (video, epoch, view index): the same video looks alike across views."""
    out = []
    for v in range(n):
        seeds = [int(1000 * i + 10 * epoch + v) for i in idx]
        rows = [torch.randn(12, 1, 25, 3, generator=torch.Generator().manual_seed(s)) for s in seeds]
        out.append(torch.stack(rows))
    return out


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_ring_queue_keeps_ids_through_wraparound():
    q = RingQueue(4, 2)
    assert q.groups() is None and q.times() is None
    q.enqueue(torch.ones(3, 2), torch.tensor([7, 8, 9]), torch.tensor([0, 1, 2]))
    q.enqueue(torch.zeros(2, 2), torch.tensor([5, 6]))  # no times given: -1
    assert q.group.tolist() == [6, 8, 9, 5] and q.time.tolist() == [-1, 1, 2, -1]
    assert q.data[0].tolist() == [0.0, 0.0] and q.data[1].tolist() == [1.0, 1.0]
    q.enqueue(torch.ones(1, 2))  # no ids at all: -1
    assert q.groups().tolist() == [6, -1, 9, 5]
    q.to_dtype(torch.bfloat16)
    assert q.data.dtype == torch.bfloat16 and q.data[2].tolist() == [1.0, 1.0]
    old = {k: v for k, v in q.state_dict().items() if k not in ("group", "time")}  # saved before ids
    fresh = RingQueue(4, 2)
    fresh.load_state_dict(old)
    assert fresh.group.tolist() == [-1] * 4 and int(fresh.filled) == 4


def _train_two_epochs(exclude):
    """skeletonclr + snippet (aligned positives), queues holding exactly two epochs of keys; returns the
    model, the queues before the step of epoch 2, that step's batch, align table, loss and stats."""
    torch.manual_seed(0)
    m = MoCo(dict(kind="stgcn", width=0.125), snippet=True, dim=8, queue_size=2 * N_VIDEOS,
             snippet_queue_size=2 * N_VIDEOS * S, num_snippets=S, momentum=0.9, temperature=0.2,
             match="aligned", exclude_same_video=exclude, global_exclude_same_video=exclude)  # fmt: skip
    align = torch.tensor([[0, 1, 2], [1, 1, -1], [0, 2, 2]])
    for epoch in range(2):
        for idx in epoch_batches(N_VIDEOS, BATCH, 0, epoch, drop_last=True):
            m(_views(idx, epoch), epoch=epoch, align=align, video=torch.as_tensor(idx))
            m.flush_queues()
    assert int(m.queue.filled) == 2 * N_VIDEOS and int(m.squeue.filled) == 2 * N_VIDEOS * S
    before = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("queue.", "squeue."))}
    idx = epoch_batches(N_VIDEOS, BATCH, 0, 2, drop_last=True)[0]
    views = _views(idx, 2)
    loss, stats = m(views, epoch=2, align=align, video=torch.as_tensor(idx))
    return m, before, idx, views, align, loss, stats


@pytest.mark.parametrize("exclude", [True, False])
def test_queue_spanning_two_epochs_masks_own_video_rows(exclude):
    m, before, idx, views, align, loss, stats = _train_two_epochs(exclude)
    # Every video sits twice in the global queue (2 of 12 rows) and twice S times in the snippet queue.
    assert sorted(before["queue.group"].tolist()) == sorted(list(range(N_VIDEOS)) * 2)
    if exclude:
        assert stats["queue_own_share"] == 0.0 and stats["queue_own_queries"] == 0.0
        assert stats["squeue_own_share"] == 0.0 and stats["squeue_own_queries"] == 0.0
    else:
        assert stats["queue_own_share"] == pytest.approx(2 / 12) and stats["queue_own_queries"] == 1.0
        assert stats["squeue_own_share"] == pytest.approx(2 / 12) and stats["squeue_own_queries"] == 1.0
    # Recompute the step's embeddings with the (already updated) encoders, then both losses in float64
    # with the own video's queue rows removed by hand (exclude) or kept.
    with torch.no_grad():
        fq, _ = m.encoder_q(views[0])
        fk, _ = m.encoder_k(views[1])
        q = F.normalize(m.head_q(fq), dim=1).double()
        k = F.normalize(m.head_k(fk), dim=1).double()
        zq = F.normalize(m.snip_q(snippet_features(fq, S)), dim=1).transpose(1, 2).double()  # (B, S, d)
        zk = F.normalize(m.snip_k(snippet_features(fk, S)), dim=1).transpose(1, 2).double()
    queue, qg = before["queue.data"].double(), before["queue.group"].tolist()
    squeue, sg = before["squeue.data"].double(), before["squeue.group"].tolist()
    tau = 0.2
    losses = []
    for i, vi in enumerate(idx):
        logits = [float(q[i] @ k[j]) / tau for j in range(BATCH)]
        logits += [float(q[i] @ queue[r]) / tau for r in range(len(qg)) if not (exclude and qg[r] == vi)]
        losses.append(_lse(logits) - float(q[i] @ k[i]) / tau)
    assert stats["loss_global"] == pytest.approx(float(np.mean(losses)), abs=2e-5)
    losses = []
    for b, vb in enumerate(idx):
        for s in range(S):
            p = int(align[b, s])
            if p < 0:
                continue
            qs = zq[b, s]
            logits = [float(qs @ zk[b, p]) / tau]
            for v in range(BATCH):
                for j in range(S):
                    if (v, j) != (b, p) and not (exclude and v == b):
                        logits.append(float(qs @ zk[v, j]) / tau)
            rows = [r for r in range(len(sg)) if not (exclude and sg[r] == vb)]
            logits += [float(qs @ squeue[r]) / tau for r in rows]
            losses.append(_lse(logits) - float(qs @ zk[b, p]) / tau)
    assert stats["loss_snippet"] == pytest.approx(float(np.mean(losses)), abs=2e-5)
    loss.backward()  # the masked losses have gradients
    assert torch.isfinite(m.snip_q.net[0].weight.grad).all()


def test_queue_neighbours_never_mine_the_own_video():
    g = torch.Generator().manual_seed(4)
    x = F.normalize(torch.randn(5, 6, generator=g), dim=1)
    queue = F.normalize(torch.randn(9, 6, generator=g), dim=1)
    queue[0] = x[0]  # the best neighbour of query 0 ... belongs to query 0's own video
    xg = torch.tensor([10, 11, 12, 13, 14])
    qg = torch.tensor([10, 11, 11, 20, 21, 22, 23, 24, 25])
    free = queue_neighbours(x, queue, k=3)
    masked = queue_neighbours(x, queue, xg, qg, k=3)
    sims = (x.double() @ queue.double().t()).numpy()
    for i in range(5):
        assert free[i].tolist() == list(np.argsort(-sims[i])[:3])
        allowed = [r for r in np.argsort(-sims[i]) if qg[r] != xg[i]]
        assert masked[i].tolist() == allowed[:3]
    assert int(free[0, 0]) == 0 and 0 not in masked[0].tolist()
    # fewer allowed rows than k: -1 fills the rest
    one = queue_neighbours(x[:1], queue[:2], xg[:1], torch.tensor([10, 3]), k=2)
    assert one.tolist() == [[1, -1]]


def test_queue_sizes_auto_and_the_epoch_warning():
    assert resolve_queue_sizes("auto", "auto", 240, 19) == (240, 240 * 19, [])
    assert resolve_queue_sizes("auto", "auto", 10**6, 19) == (32768, 65536, [])
    assert resolve_queue_sizes("auto", "auto") == (32768, 65536, [])
    q, sq, notes = resolve_queue_sizes(256, 4096, 242 // 32 * 32, 19)
    assert (q, sq) == (256, 4096) and len(notes) == 1  # 256 > 224 keys per epoch; 4096 < 224 * 19
    assert "pretrain.queue_size 256 spans 1.14 epochs" in notes[0]
    for bad in (-1, "big", 2.5, True):
        with pytest.raises(SkelclError, match="pretrain.queue_size must be 'auto' or an integer"):
            resolve_queue_sizes(bad, 0)


def test_pretrain_warns_when_a_queue_spans_more_than_an_epoch(tmp_path, capsys):
    """The note is printed once, as a log line (also in log.txt), not a second time as a Python warning."""
    small = SynthConfig(length=(70, 90), num_subjects=4, test_every=4)
    data = generate_cache(tmp_path / "data", 10, 3, config=small, progress=False)
    cfg = config.resolve("pretrain_skeletonclr", [
        f"data.path={data}", "data.bodies=1", "data.split=null", "model.width=0.125", "train.epochs=1",
        "train.batch_size=4", "train.num_threads=2", "pretrain.queue_size=20", "pretrain.snippet=false",
        "train.prefetch=false"])  # fmt: skip
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_pretrain(cfg, tmp_path / "run", quiet=True)
    assert not [w for w in caught if "spans" in str(w.message)]
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("queue_size 20 spans 2.50 epochs") == 1
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("warning: pretrain.queue_size 20 spans 2.50 epochs (8 rows per epoch)") == 1
    assert "queues 20 / 0 rows" in log
    assert metrics["final"]["queue_own_share"] == 0.0  # exclusion is on by default


def test_queue_storage_dtype():
    """auto: the autocast dtype under CUDA autocast, float32 otherwise (CPU autocast included); an explicit
    setting wins. A bf16 queue (explicit here, on the CPU) gives the fp32 queue's losses within bf16
    rounding, and its checkpoint loads into a float32 model."""
    assert queue_storage_dtype("auto", True, torch.bfloat16) == torch.bfloat16
    assert queue_storage_dtype("auto", True, torch.float16) == torch.float16
    assert queue_storage_dtype("auto", False) == torch.float32
    assert queue_storage_dtype("float32", True, torch.bfloat16) == torch.float32
    assert queue_storage_dtype("bfloat16", False) == torch.bfloat16
    losses = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        m = MoCo(dict(kind="stgcn", width=0.125), snippet=True, dim=8, queue_size=6, snippet_queue_size=18,
                 num_snippets=S, momentum=0.9, match="aligned", queue_dtype=dtype)  # fmt: skip
        align = torch.tensor([[0, 1, 2], [1, 1, -1], [0, 2, 2]])
        for step in range(2):
            idx = [3 * step, 3 * step + 1, 3 * step + 2]
            loss, stats = m(_views(idx, 0), align=align, video=torch.as_tensor(idx))
            loss.backward()
            m.flush_queues()
        assert m.queue.data.dtype == m.squeue.data.dtype == getattr(torch, dtype)
        losses[dtype] = stats
        state = m.state_dict()
    assert losses["bfloat16"]["loss_global"] == pytest.approx(losses["float32"]["loss_global"], rel=0.02)
    assert losses["bfloat16"]["loss_snippet"] == pytest.approx(losses["float32"]["loss_snippet"], rel=0.02)
    torch.manual_seed(0)
    fresh = MoCo(dict(kind="stgcn", width=0.125), snippet=True, dim=8, queue_size=6, snippet_queue_size=18,
                 num_snippets=S)  # fmt: skip
    fresh.load_state_dict(state)
    assert fresh.queue.data.dtype == torch.float32
    torch.testing.assert_close(fresh.queue.data, state["queue.data"].float())
