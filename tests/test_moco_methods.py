"""The three base methods (skeletonclr, rvtclr, aimclr) with and without the snippet loss: each new loss
term against a float64 loop, the views' tempos, dense nearest-neighbour mining of snippet positives."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skelcl import augment
from skelcl.errors import SkelclError
from skelcl.models import MoCo
from skelcl.models.moco import snippet_info_nce

torch.set_num_threads(2)


def _x(B=3, T=16, seed=0):
    return torch.randn(B, T, 1, 25, 3, generator=torch.Generator().manual_seed(seed))


def _moco(method, snippet=False, **kw):
    torch.manual_seed(0)
    kw = dict(dict(dim=8, queue_size=6, snippet_queue_size=18, num_snippets=3, momentum=0.9), **kw)
    return MoCo(dict(kind="stgcn", width=0.125), method=method, snippet=snippet, **kw)


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _infonce_loop(q, keys, queue, tau):
    """mean_i [log sum_j exp(<q_i, key_j>/tau) over keys and queue - <q_i, key_i>/tau], float64 loop."""
    out = []
    for i in range(q.shape[0]):
        logits = [float(q[i] @ keys[j]) / tau for j in range(keys.shape[0])]
        logits += [float(q[i] @ r) / tau for r in queue]
        out.append(_lse(logits) - float(q[i] @ keys[i]) / tau)
    return float(np.mean(out))


def _velocity64(f):
    """(B, C, T, V) -> (B, C) float64: mean over t < T - 1 and v of |f[:, :, t + 1, v] - f[:, :, t, v]|."""
    f = f.double()
    B, C, T, V = f.shape
    out = torch.zeros(B, C, dtype=torch.float64)
    for t in range(T - 1):
        out += (f[:, :, t + 1] - f[:, :, t]).abs().sum(dim=2)
    return out / ((T - 1) * V)


def test_rvtclr_terms_match_float64_loops():
    """L_A1 (same-tempo key), L_A2 (other-tempo key), L_M = mean max(0, margin - (<m, mk> - <m, mk'>)) with
    m, mk, mk' the motion head on the feature velocity of the query and of the momentum encoder's two keys
    (one head call, shared BatchNorm statistics), over two steps (the second with a queue)."""
    m = _moco("rvtclr", temperature=0.2, motion_margin=0.5)
    for step in range(2):
        views = [_x(seed=10 * step + v) for v in range(3)]
        queue = m.queue.get()
        queue = [] if queue is None else queue.clone().double()
        loss, stats = m(views, video=torch.tensor([0, 1, 2]) + 3 * step)
        with torch.no_grad():  # the step's embeddings, recomputed with the updated encoders
            fq, f1, f2 = m.encoder_q(views[0])[0], m.encoder_k(views[1])[0], m.encoder_k(views[2])[0]
            q = F.normalize(m.head_q(fq), dim=1).double()
            k1, k2 = (F.normalize(m.head_k(f), dim=1).double() for f in (f1, f2))
            pooled = torch.cat([_velocity64(f) for f in (fq, f1, f2)]).float()
            mq, m1, m2 = F.normalize(m.motion_q(pooled), dim=1).double().split(3)
        a1 = _infonce_loop(q, k1, queue, 0.2)
        a2 = _infonce_loop(q, k2, queue, 0.2)
        lm = float(np.mean([max(0.0, 0.5 - (float(mq[i] @ m1[i]) - float(mq[i] @ m2[i]))) for i in range(3)]))
        assert stats["loss_global"] == pytest.approx(a1, abs=2e-5)
        assert stats["loss_cross_tempo"] == pytest.approx(a2, abs=2e-5)
        assert stats["loss_motion"] == pytest.approx(lm, abs=2e-5)
        assert stats["loss"] == pytest.approx(a1 + a2 + lm, abs=5e-5)
        loss.backward()
        assert m.motion_q.net[1].weight.grad is not None  # the motion head learns from L_M
        m.flush_queues()
    assert int(m.queue.filled) == 6  # the same-tempo keys of both steps


class _Coords(torch.nn.Module):
    """A stand-in encoder: feature channel c at frame t is coordinate c of the first joints, (B, C, T, 1)."""

    def __init__(self, channels):
        super().__init__()
        self.channels = channels

    def forward(self, x, taps=()):
        B, T = x.shape[:2]
        return x[:, :, 0].reshape(B, T, -1)[:, :, : self.channels].transpose(1, 2)[..., None], {}


def _tempo_views(B, T, gen):
    """Query, same-tempo key, other-tempo key of B samples: channel c of sample b reads a_bc s(o + speed t),
    s = the triangle wave 0 1 2 3 3 2 1 0 (period 8), a_bc in {1, 2, 3, 4}, own offset o per view. Over 16
    frames the 1x and 2x views hold the same values (each of 0..3 equally often) in another order, so their
    means over time agree exactly; the 2x view changes twice as fast."""
    tri = torch.tensor([0.0, 1, 2, 3, 3, 2, 1, 0])
    amp = torch.randint(1, 5, (B, 1, 1, 25, 3), generator=gen).float()
    fast = torch.rand(B, generator=gen) < 0.5

    def view(speed):
        o = torch.randint(0, 8, (B, 1), generator=gen)
        idx = (o + speed[:, None] * torch.arange(T)[None, :]) % 8
        return amp * tri[idx][:, :, None, None, None]

    s_q = torch.where(fast, 2, 1)
    return [view(s_q), view(s_q), view(3 - s_q)]


def test_rvtclr_motion_head_sees_tempo_when_mean_features_agree():
    """The tempo pair must be identifiable from what the motion head reads. Here the 1x and 2x views have
    identical mean features (see _tempo_views), so a head on the mean-pooled feature scores the same-tempo
    and the other-tempo key alike (ranking at chance); the head on the feature velocity learns the ranking."""
    m = _moco("rvtclr", dim=16, queue_size=64)
    c = m.encoder_q.out_channels
    m.encoder_q, m.encoder_k = _Coords(c), _Coords(c)
    gen = torch.Generator().manual_seed(0)
    views = _tempo_views(32, 16, gen)
    with torch.no_grad():
        means = [m.encoder_q(v)[0].mean(dim=(2, 3)) for v in views]
    assert torch.equal(means[1], means[2])  # the keys' mean features agree exactly
    _, stats = m(views)
    assert stats["loss_motion"] != pytest.approx(1.0, abs=1e-6)  # same == other would give the margin
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for _ in range(30):
        loss, _ = m(_tempo_views(32, 16, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.flush_queues()
    accs = [m(_tempo_views(32, 16, gen))[1]["motion_order_acc"] for _ in range(4)]  # fresh samples
    assert min(accs) >= 0.9, accs


def test_snippet_nn_mining_positives_match_float64_loop():
    """queue_positive rows (mined neighbours) join each query's positives; -1 entries are padding; queue rows
    of the query's own video are left out (this table mines one of them, row 2 for video 1: it counts)."""
    g = torch.Generator().manual_seed(5)
    B, S, d, Q = 2, 3, 6, 7
    zq = F.normalize(torch.randn(B * S, d, generator=g, dtype=torch.float64), dim=1)
    zk = F.normalize(torch.randn(B * S, d, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(Q, d, generator=g, dtype=torch.float64), dim=1)
    matched = torch.tensor([[0, 2, -1], [1, 1, 0]])
    mined = torch.tensor([[3, 0], [6, -1], [1, 2], [4, 5], [-1, -1], [0, 6]])
    qgroup = torch.tensor([9, 9, 1, 1, 2, 2, 8])  # rows 2, 3 belong to batch video 1 (videos are 0, 1)
    tau = 0.3
    got = snippet_info_nce(zq, zk, queue, matched, tau, True, queue_group=qgroup, queue_positive=mined)
    losses = []
    for b in range(B):
        for s in range(S):
            p = int(matched[b, s])
            if p < 0:
                continue
            qs = zq[b * S + s]
            pos = [float(qs @ zk[b * S + p]) / tau]
            pos += [float(qs @ queue[r]) / tau for r in mined[b * S + s].tolist() if r >= 0]
            neg = [float(qs @ zk[v * S + j]) / tau for v in range(B) for j in range(S) if v != b]
            own = [r for r in range(Q) if int(qgroup[r]) == b]  # left out unless mined
            neg += [float(qs @ queue[r]) / tau for r in range(Q) if r not in mined[b * S + s].tolist() + own]
            losses.append(_lse(pos + neg) - _lse(pos))
    assert float(got) == pytest.approx(float(np.mean(losses)), abs=1e-9)


def test_snippet_nn_mining_in_moco_after_warmup():
    """Before snippet_nn_warmup_epochs no neighbour is mined; after it the loss changes (neighbours are
    positives), and own-video rows are never mined with exclusion on (stats stay 0)."""
    m = _moco("skeletonclr", snippet=True, snippet_nn_topk=2, snippet_nn_warmup_epochs=1, match="aligned")
    align = torch.tensor([[0, 1, 2], [0, 1, -1], [1, 2, 2]])
    views = [_x(seed=1), _x(seed=2)]
    m(views, epoch=0, align=align, video=torch.tensor([0, 1, 2]))
    m.flush_queues()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    _, before = m(views, epoch=0, align=align, video=torch.tensor([3, 4, 5]))
    m.load_state_dict(state)
    m._pending = []
    _, after = m(views, epoch=1, align=align, video=torch.tensor([3, 4, 5]))
    assert after["loss_snippet"] < before["loss_snippet"]  # more positives, same key set
    m.load_state_dict(state)
    m._pending = []
    _, own = m(views, epoch=1, align=align, video=torch.tensor([0, 1, 2]))  # queue holds these videos
    assert own["squeue_own_share"] == 0.0 and own["queue_own_share"] == 0.0


def test_views_come_at_the_right_tempo():
    lengths = np.full(32, 400)
    for name, same, other in (("skeletonclr", [(0, 1)], []), ("rvtclr", [(0, 1)], [(0, 2)]),
                              ("aimclr", [], [(0, 1)])):  # fmt: skip
        p = augment.sample(name, lengths, np.random.default_rng(3))
        sp = [v.speed for v in p.views]
        assert set(np.unique(sp[0])) == {1, 2}, name  # both tempos occur as query
        for a, b in same:
            assert np.array_equal(sp[a], sp[b]), name
            offsets_equal = np.array_equal(p.views[a].tempo_offset, p.views[b].tempo_offset)
            assert offsets_equal == (name == "rvtclr"), name  # own offsets, or rvtclr's key aligned
        for a, b in other:
            assert np.all(sp[a] != sp[b]), name
    assert [v.name for v in augment.load_recipe("rvtclr").views] == ["query", "key", "key_other"]


def test_rvtclr_keys_show_the_query_moment():
    """rvtclr's keys are centred on the query's time span (tempo align: query): with the crops' shifts
    removed, the mean source frame of each key is within a frame of the query's, at either tempo."""
    lengths = np.full(64, 400)
    p = augment.sample("rvtclr", lengths, np.random.default_rng(5))
    centre = [v.tempo_offset + v.speed * 149 / 2 for v in p.views]  # window coordinates, before the crop
    for v in (1, 2):  # a view at speed s can centre on 74.5 s .. 299 - 74.5 s
        want = np.clip(centre[0], p.views[v].speed * 149 / 2, 299 - p.views[v].speed * 149 / 2)
        assert np.all(np.abs(centre[v] - want) <= 0.5), v
    assert np.all(p.views[2].speed != p.views[0].speed)


def test_tempo_same_as_errors_name_the_field():
    def recipe(tempo):
        return {"window": 40, "views": [{"name": "query", "frames": 10, "ops": {"tempo": {"speeds": [1, 2]}}},
                                        {"name": "key", "frames": 10, "ops": {"tempo": tempo}}]}  # fmt: skip

    r = augment.recipe.recipe_from_dict("ok", recipe({"speeds": [1, 2], "same_as": "query"}))
    assert r.views[1].op("tempo").same_as == "query"
    with pytest.raises(SkelclError, match=r"views\[1\].ops.tempo.same_as: no earlier view named 'nope'"):
        augment.recipe.recipe_from_dict("bad", recipe({"speeds": [1, 2], "same_as": "nope"}))
    with pytest.raises(SkelclError, match="same speeds"):
        augment.recipe.recipe_from_dict("bad", recipe({"speeds": [1, 3], "same_as": "query"}))
    with pytest.raises(SkelclError, match="exclude each other"):
        augment.recipe.recipe_from_dict("bad", recipe({"speeds": [1, 2], "same_as": "query", "pair": True}))


def test_rvtclr_snippet_keys_come_from_the_other_tempo_view():
    """Changing view 1 (same-tempo key) leaves rvtclr's snippet loss alone; changing view 2 changes it."""
    align = torch.tensor([[0, 1, 2], [0, 1, -1], [1, 2, 2]])
    base = [_x(seed=1), _x(seed=2), _x(seed=3)]
    out = {}
    for name, views in (("base", base), ("v1", [base[0], _x(seed=7), base[2]]),
                        ("v2", [base[0], base[1], _x(seed=7)])):  # fmt: skip
        out[name] = _moco("rvtclr", snippet=True, match="aligned")(views, align=align)[1]
    assert out["v1"]["loss_snippet"] == out["base"]["loss_snippet"]
    assert out["v1"]["loss_global"] != out["base"]["loss_global"]
    assert out["v2"]["loss_snippet"] != out["base"]["loss_snippet"]


@pytest.mark.parametrize("method", ["skeletonclr", "rvtclr", "aimclr"])
@pytest.mark.parametrize("snippet", [False, True])
def test_every_method_with_and_without_snippets_trains(method, snippet):
    m = _moco(method, snippet=snippet, nn_warmup_epochs=0, snippet_nn_topk=2, snippet_nn_warmup_epochs=0)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    align = torch.tensor([[0, 1, 2], [0, 1, -1], [1, 2, 2]])
    for step in range(2):  # the second step meets the queues (and mines neighbours)
        views = [_x(seed=10 * step + v) for v in range(3 if method != "skeletonclr" else 2)]
        loss, stats = m(views, epoch=1, align=align, video=torch.tensor([0, 1, 2]) + 3 * step)
        opt.zero_grad()
        loss.backward()
        for name, p in m.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
        opt.step()
        m.flush_queues()
    assert ("loss_snippet" in stats) == snippet
    assert ("loss_motion" in stats) == (method == "rvtclr") and ("loss_d3m" in stats) == (method == "aimclr")
    assert stats["queue_own_share"] == 0.0
    assert int(m.queue.filled) == 6 and int(m.squeue.filled) == (18 if snippet else 0)
    assert m.queue.groups().tolist() == [0, 1, 2, 3, 4, 5]
    if snippet:
        assert m.squeue.times().tolist() == [0, 1, 2] * 6


def test_methods_need_their_views():
    with pytest.raises(SkelclError, match=r"rvtclr needs 3 views .*\(use pretrain.recipe=rvtclr\)"):
        _moco("rvtclr")([_x(), _x()])
    with pytest.raises(SkelclError, match="queue_dtype"):
        _moco("skeletonclr", queue_dtype="int8")
