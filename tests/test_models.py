"""Models: shapes and gradients, the InfoNCE usage against dense float64 losses, queues."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skelcl.errors import SkelclError
from skelcl.models import Backbone, Localizer, MoCo, RingQueue, UFusion, layer_lengths
from skelcl.models.moco import match_snippets, snippet_info_nce

torch.set_num_threads(2)


def _x(B=2, T=24, M=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, M, 25, 3, generator=g)


@pytest.mark.parametrize("kind", ["stgcn", "agcn"])
@pytest.mark.parametrize("strides", [(2, 5, 8), (5, 8)])
def test_backbone_shapes_and_gradients(kind, strides):
    b = Backbone(kind, width=0.125, strides=strides)
    T = 23  # odd on purpose: stride 2 gives ceil(T / 2)
    out, taps = b(_x(T=T), taps=(1, 7, 10))
    L = layer_lengths(T, strides)
    assert out.shape == (2, b.channels[-1], L[-1], 25)
    for t in (1, 7, 10):
        assert taps[t].shape == (2, b.channels[t - 1], L[t - 1])
    expected_final = T
    for _ in strides:
        expected_final = math.ceil(expected_final / 2)
    assert L[-1] == expected_final
    out.square().mean().backward()
    for name, p in b.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if kind == "agcn":
        assert b.layers[3].offset.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["stgcn", "agcn"])
@pytest.mark.parametrize("strides", [(2, 5, 8), (5, 8)])
def test_backbone_joints_major_equals_frames_major(kind, strides, monkeypatch):
    """The CPU fast path (joints-major, graph_conv_ncvt) and the frames-major path (graph_conv) compute the
    same outputs, taps, parameter gradients and BatchNorm running statistics (float64, train mode, AGCN with
    nonzero offsets so the adjacency gradient flows)."""
    import copy

    import skelcl.models.backbone as bbmod

    torch.manual_seed(0)
    model = Backbone(kind, width=0.25, strides=strides).double()
    if kind == "agcn":
        with torch.no_grad():
            for layer in model.layers:
                layer.offset.normal_(0, 0.1)
    x = _x(B=3, T=21).double()
    seen, got = {}, {}
    real = {"ncvt": bbmod.graph_conv_ncvt, "nctv": bbmod.graph_conv}
    for path, env in (("ncvt", "auto"), ("nctv", "reference")):
        monkeypatch.setenv("SKELCL_GRAPH_CONV", env)
        name = "graph_conv_ncvt" if path == "ncvt" else "graph_conv"
        spy = lambda *a, _f=real[path], _p=path, **k: seen.setdefault(_p, 1) and _f(*a, **k)  # noqa: E731
        monkeypatch.setattr(bbmod, name, spy)
        m = copy.deepcopy(model)
        out, taps = m(x, taps=(1, 6, 10))
        (out.square().mean() + sum(t.square().mean() for t in taps.values())).backward()
        got[path] = (out, taps, {n: p.grad for n, p in m.named_parameters()}, m.state_dict())
    assert set(seen) == {"ncvt", "nctv"}  # each run took its own path
    (o1, t1, g1, s1), (o2, t2, g2, s2) = got["ncvt"], got["nctv"]
    assert o1.shape == o2.shape
    torch.testing.assert_close(o1, o2, rtol=1e-10, atol=1e-12)
    for k in t2:
        torch.testing.assert_close(t1[k], t2[k], rtol=1e-10, atol=1e-12)
    for n in g2:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-8, atol=1e-12, msg=n)
    for n in s2:
        if "running" in n:
            torch.testing.assert_close(s1[n], s2[n], rtol=1e-10, atol=1e-12, msg=n)


def test_backbone_takes_joints_major_on_cpu_by_default(monkeypatch):
    import skelcl.models.backbone as bbmod

    monkeypatch.delenv("SKELCL_GRAPH_CONV", raising=False)
    assert bbmod.joints_major(torch.zeros(1))
    monkeypatch.setenv("SKELCL_GRAPH_CONV", "reference")
    assert not bbmod.joints_major(torch.zeros(1))
    monkeypatch.setenv("SKELCL_GRAPH_CONV", "ncvt")
    assert bbmod.joints_major(torch.zeros(1))


def test_backbone_width_and_bad_config():
    assert Backbone(width=1.0).channels == [64, 64, 64, 64, 128, 128, 128, 256, 256, 256]
    with pytest.raises(SkelclError, match="strides"):
        Backbone(strides=(1, 5))
    with pytest.raises(SkelclError, match="backbone"):
        Backbone(kind="resnet")
    with pytest.raises(SkelclError, match="input"):
        Backbone(width=0.125)(torch.zeros(2, 10, 25, 3))


def test_backbone_bodies_are_averaged():
    """Swapping the two bodies does not change the output (mean over bodies, shared weights)."""
    b = Backbone(width=0.125).eval()
    x = _x()
    a, _ = b(x)
    c, _ = b(x.flip(2))
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths", [(24, 12, 6), (24, 6, 3), (25, 7, 4)])
def test_ufusion_shapes_and_gradients(lengths):
    f = UFusion([8, 16, 32], num_outputs=5, hidden=16)
    feats = [torch.randn(3, c, t, requires_grad=True) for c, t in zip([8, 16, 32], lengths)]
    y = f(feats, lengths[0])
    assert y.shape == (3, lengths[0], 5)
    y.sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in feats)
    assert len(f.nodes) == 6  # 3 + 2 + 1 nodes in a 3-level nested U-Net


@pytest.mark.parametrize("head", ["ufusion", "simple"])
@pytest.mark.parametrize("strides", [(2, 5, 8), (5, 8)])
def test_localizer(head, strides):
    m = Localizer(Backbone(width=0.125, strides=strides), num_outputs=4, head=head)
    y = m(_x(T=30))
    assert y.shape == (2, 30, 4)
    y.logsumexp(-1).sum().backward()
    assert m.backbone.layers[0].weight.grad.abs().sum() > 0


def test_localizer_frames_only_see_their_neighbourhood():
    """Per-frame logits change when the input frames change (the head does not ignore time)."""
    m = Localizer(Backbone(width=0.125), num_outputs=4).eval()
    x = _x(B=1, T=40)
    y0 = m(x)
    x2 = x.clone()
    x2[:, 30:] += 1.0
    y1 = m(x2)
    assert not torch.allclose(y0[:, 30:], y1[:, 30:])


def test_ring_queue_wraparound():
    q = RingQueue(5, 2)
    assert q.get() is None
    rows = torch.arange(16, dtype=torch.float32).view(8, 2)
    q.enqueue(rows[:3])
    assert torch.equal(q.get(), rows[:3])
    q.enqueue(rows[3:7])  # 4 rows: 2 fill the end, 2 wrap to the front
    assert int(q.filled) == 5 and int(q.ptr) == 2
    assert torch.equal(q.data, torch.stack([rows[5], rows[6], rows[2], rows[3], rows[4]]))
    q.enqueue(torch.arange(14, dtype=torch.float32).view(7, 2) + 100)  # more rows than the queue
    assert set(map(tuple, q.data.tolist())) == {(100 + 2 * i, 101 + 2 * i) for i in range(2, 7)}
    assert RingQueue(0, 2).get() is None


def _dense_snippet_loss(zq, zk, queue, matched, tau, exclude, neighbours=0):
    """Explicit per-query loop in float64."""
    B, S = matched.shape
    losses = []
    for b in range(B):
        for s in range(S):
            if matched[b, s] < 0:  # no positive: not part of the loss
                continue
            qv = zq[b * S + s]
            logits, pos = [], []
            for v in range(zk.shape[0] // S):
                for j in range(S):
                    if v == b and abs(j - int(matched[b, s])) <= neighbours:
                        pos.append(float(qv @ zk[v * S + j]) / tau)
                        logits.append(pos[-1])
                    elif v == b and exclude:
                        continue
                    else:
                        logits.append(float(qv @ zk[v * S + j]) / tau)
            if queue is not None:
                logits += [float(qv @ r) / tau for r in queue]
            lse = lambda xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
            losses.append(lse(logits) - lse(pos))
    return float(np.mean(losses))


@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("with_queue", [True, False])
def test_snippet_loss_matches_dense_float64(exclude, with_queue):
    g = torch.Generator().manual_seed(1)
    B, S, d = 3, 4, 8
    zq = F.normalize(torch.randn(B * S, d, generator=g, dtype=torch.float64), dim=1)
    zk = F.normalize(torch.randn(B * S, d, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(5, d, generator=g, dtype=torch.float64), dim=1) if with_queue else None
    matched = torch.randint(0, S, (B, S), generator=g)
    got = snippet_info_nce(zq, zk, queue, matched, 0.2, exclude)
    want = _dense_snippet_loss(zq, zk, queue, matched, 0.2, exclude)
    assert abs(float(got) - want) < 1e-9
    matched[0, 1] = matched[2, 0] = matched[2, 3] = -1  # query snippets without a temporal counterpart
    got = snippet_info_nce(zq, zk, queue, matched, 0.2, exclude)
    want = _dense_snippet_loss(zq, zk, queue, matched, 0.2, exclude)
    assert abs(float(got) - want) < 1e-9
    for r in (1, 2):  # neighbours of the positive are positives too (clipped at the video's ends)
        got = snippet_info_nce(zq, zk, queue, matched, 0.2, exclude, neighbours=r)
        want = _dense_snippet_loss(zq, zk, queue, matched, 0.2, exclude, neighbours=r)
        assert abs(float(got) - want) < 1e-9, r


def test_snippet_loss_without_any_positive_is_zero_with_zero_gradient():
    zq = torch.randn(6, 4, requires_grad=True)
    loss = snippet_info_nce(zq, torch.randn(6, 4), None, torch.full((2, 3), -1), 0.1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.count_nonzero(zq.grad) == 0


def _moco(method="skeletonclr", snippet=True, **kw):
    torch.manual_seed(0)
    return MoCo(dict(kind="stgcn", width=0.125), method=method, snippet=snippet, dim=16, queue_size=6,
                snippet_queue_size=20, num_snippets=3, momentum=0.9, **kw)  # fmt: skip


def test_moco_skeletonclr_global_loss_is_dense_infonce():
    """With snippet off and an empty queue, the loss is the float64 InfoNCE over the batch keys."""
    m = _moco(snippet=False)
    views = [_x(B=3, T=16, seed=1), _x(B=3, T=16, seed=2)]
    loss, stats = m(views)
    with torch.no_grad():  # recompute q and k with the same (updated) encoders
        m.train()
        fq, _ = m.encoder_q(views[0])
        q = F.normalize(m.head_q(fq), dim=1).double()
        fk, _ = m.encoder_k(views[1])
        k = F.normalize(m.head_k(fk), dim=1).double()
    logits = q @ k.t() / 0.07
    want = (logits.logsumexp(1) - logits.diag()).mean()
    assert abs(float(loss.detach()) - float(want)) < 1e-4
    assert set(stats) == {"loss", "loss_global"}


@pytest.mark.parametrize("method", ["skeletonclr", "rvtclr", "aimclr"])
def test_moco_gradients_queues_and_momentum(method):
    m = _moco(method, nn_warmup_epochs=0)
    views = [_x(B=4, T=16, seed=s) for s in range(3)]
    k0 = [p.clone() for p in m.encoder_k.parameters()]
    loss, stats = m(views, epoch=1, align=torch.zeros(4, 3, dtype=torch.long))
    loss.backward()
    assert "loss_snippet" in stats and "snippet_match_acc" in stats
    assert (method == "aimclr") == ("loss_d3m" in stats)
    for name, p in m.named_parameters():
        if name.startswith(("encoder_k", "head_k", "motion_k", "snip_k")):
            assert p.grad is None, name
        else:
            assert p.grad is not None, name
    # Momentum update: theta_k = 0.9 theta_k + 0.1 theta_q (theta_q unchanged before the step).
    for before, pk, pq in zip(k0, m.encoder_k.parameters(), m.encoder_q.parameters()):
        torch.testing.assert_close(pk, 0.9 * before + 0.1 * pq)
    assert m.queue.get() is None  # keys wait until after backward
    m.flush_queues()
    assert int(m.queue.filled) == 4 and int(m.squeue.filled) == 12
    loss2, _ = m(views, epoch=1)  # second step uses the queues (and NN positives for aimclr)
    loss2.backward()
    m.flush_queues()
    assert int(m.queue.filled) == 6 and int(m.squeue.filled) == 20


def test_moco_errors():
    with pytest.raises(SkelclError, match="method"):
        _moco("simclr")
    with pytest.raises(SkelclError, match="extreme"):
        _moco("aimclr")([_x(), _x()])
    with pytest.raises(SkelclError, match="aligned"):
        _moco(match="aligned")([_x(T=16), _x(T=16)])
    with pytest.raises(SkelclError, match="snippet_neighbours"):
        _moco(snippet_neighbours=-1)


def test_match_snippets_feature_and_cosine_against_loops():
    """feature: argmax of raw dot products; cosine: of unit vectors. A key snippet with a large norm wins
    every feature match but not the cosine one."""
    g = torch.Generator().manual_seed(3)
    B, C, S = 2, 5, 4
    sq, sk = torch.randn(B, C, S, generator=g), torch.randn(B, C, S, generator=g)
    sk[0, :, 2] = sq[0, :, 0] * 0.1 + 0.05  # points where query snippet 0 points, but short ...
    sk[0, :, 3] = sq[0, :, 1] * 50.0  # ... while this one is long
    for rule in ("feature", "cosine"):
        got = match_snippets(sq, sk, rule)
        for b in range(B):
            for s in range(S):
                sims = []
                for j in range(S):
                    a, k = sq[b, :, s].double(), sk[b, :, j].double()
                    sims.append(float(a @ k / (a.norm() * k.norm() if rule == "cosine" else 1.0)))
                assert int(got[b, s]) == int(np.argmax(sims)), (rule, b, s)
    assert int(match_snippets(sq, sk, "cosine")[0, 0]) == 2
    assert int(match_snippets(sq, sk, "feature")[0, 0]) == 3
    with pytest.raises(SkelclError, match="rule"):
        match_snippets(sq, sk, "aligned")


def test_snippet_matching_rules_in_moco():
    """aligned needs the table and uses it as the positives; -1 entries drop out; statistics are reported."""
    views = [_x(B=2, T=16, seed=1), _x(B=2, T=16, seed=2)]
    align = torch.tensor([[2, 1, 0], [0, -1, 1]])
    _, stats = _moco(match="cosine")(views, align=align)
    assert 0.0 <= stats["snippet_match_acc"] <= 1.0
    assert stats["snippet_aligned_share"] == pytest.approx(5 / 6)
    loss_a, stats_a = _moco(match="aligned")(views, align=align)
    loss_b, stats_b = _moco(match="aligned")(views, align=torch.tensor([[2, 1, 0], [0, 2, 1]]))
    assert stats_a["loss_snippet"] > 0 and stats_a["loss_snippet"] != stats_b["loss_snippet"]


@pytest.mark.parametrize("method", ["skeletonclr", "rvtclr", "aimclr"])
def test_moco_and_localizer_under_bf16_autocast(method):
    """The GPU trainer runs under bf16 autocast; the same dtype mixing (bf16 activations, fp32 queues and
    losses) is exercised here through CPU autocast: losses stay close to the fp32 ones, gradients are finite,
    the queues keep fp32."""
    views = [_x(B=4, T=16, seed=s) for s in range(3)]
    align = torch.tensor([[0, 1, 2], [0, 1, -1], [1, 1, 2], [0, 2, 2]])
    losses = {}
    for amp in (False, True):
        m = _moco(method, nn_warmup_epochs=0, match="aligned")
        for _ in range(2):  # the second step uses the queues (and NN positives for aimclr)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss, _ = m(views, epoch=1, align=align)
            assert loss.dtype == torch.float32 and torch.isfinite(loss.detach())
            loss.backward()
            m.flush_queues()
        losses[amp] = float(loss.detach())
        for name, p in m.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert m.queue.data.dtype == m.squeue.data.dtype == torch.float32
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    loc = Localizer(Backbone(width=0.125), num_outputs=4).eval()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = loc(_x(T=30))
        ref = loc(_x(T=30))
    assert torch.isfinite(y).all() and y.shape == ref.shape
    assert float((y.float() - ref).norm() / ref.norm()) < 0.05


def test_joints_major_training_step_with_one_thread():
    """A training step on the CPU path with one intra-op thread and strided residual convolutions (layers
    2, 5, 8): oneDNN's 1x1 weight-gradient kernel crashed the process here on channels-last input."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        m = Localizer(Backbone(width=0.125), 5, head="ufusion")
        for T in (70, 83):
            m(_x(B=4, T=T, M=1)).square().mean().backward()
        grads = [p.grad for p in m.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    finally:
        torch.set_num_threads(threads)
