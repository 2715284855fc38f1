"""InfoNCE: Triton kernels (interpreted on CPU) and the chunked reference against a float64 dense loss."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton / skelcl.kernels.infonce_triton are imported

import warnings  # noqa: E402

import pytest  # noqa: E402
import skelcl.kernels.infonce as infonce_mod  # noqa: E402
import skelcl.kernels.infonce_triton as infonce_triton  # noqa: E402
import torch  # noqa: E402
from skelcl.kernels import info_nce, info_nce_cpu, info_nce_reference, info_nce_triton  # noqa: E402

IMPLS = {"triton": info_nce_triton, "reference": info_nce_reference, "cpu": info_nce_cpu}


@pytest.fixture(autouse=True)
def _poisoned_outputs(monkeypatch):
    """Kernel outputs start as NaN, so an element a kernel forgets to write shows up in the result."""

    def nan_empty(shape, **kw):
        return torch.full(shape, float("nan"), **kw)

    monkeypatch.setattr(infonce_triton, "_empty", nan_empty)
    monkeypatch.setattr(infonce_triton, "OVERRIDE", {})
    # Overflowing exp2 on padded / left-out tiles is masked afterwards; numpy warns about it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
        yield


def dense_loss(q, k, queue, positive, q_group, k_group, tau, queue_group=None):
    """Per-row loss from the full float64 logit matrix, written from the definition."""
    m, n = q.shape[0], k.shape[0]
    keys = k.double() if queue is None else torch.cat([k.double(), queue.double()])
    s = q.double() @ keys.t() / tau
    pos = torch.zeros_like(s, dtype=torch.bool)
    if positive is None:
        pos[torch.arange(m), torch.arange(m)] = True
    else:
        table = positive[:, None] if positive.dim() == 1 else positive
        for i in range(m):
            for j in table[i].tolist():
                if j >= 0:
                    pos[i, j] = True
    keep = torch.ones_like(pos)
    if q_group is not None:
        keep[:, :n] = (q_group[:, None] != k_group[None, :]) | pos[:, :n]
    if queue_group is not None:
        keep[:, n:] = (q_group[:, None] != queue_group[None, :]) | pos[:, n:]
    return torch.logsumexp(s.masked_fill(~keep, float("-inf")), 1) - torch.logsumexp(
        s.masked_fill(~pos, float("-inf")), 1
    )


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def loop_loss(q, k, queue, positive, q_group, k_group, queue_group, tau):
    """Per-row loss from a plain float64 loop over queries and keys (the rule, one key at a time)."""
    keys = [x.double() for x in k] + ([] if queue is None else [x.double() for x in queue])
    groups = k_group.tolist() + queue_group.tolist()
    out = []
    for i in range(q.shape[0]):
        pos = {int(j) for j in positive[i].reshape(-1).tolist() if j >= 0}
        num = den = 0.0
        for j, key in enumerate(keys):
            e = torch.exp(torch.dot(q[i].double(), key) / tau)
            if j in pos:
                num = num + e
            left_out = groups[j] == int(q_group[i]) and j not in pos
            if not left_out:
                den = den + e
        out.append(torch.log(den) - torch.log(num))
    return torch.stack(out)


def make_case(seed, m, n, nq, d, npos, groups, scale=1.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(m, d, generator=g) * scale / d**0.5).to(dtype)
    k = (torch.randn(n, d, generator=g) * scale / d**0.5).to(dtype)
    queue = None if nq == 0 else (torch.randn(nq, d, generator=g) * scale / d**0.5).to(dtype)
    positive = None
    if npos == 1:
        positive = torch.randint(0, n + nq, (m,), generator=g)
    elif npos > 1:
        positive = torch.randint(0, n + nq, (m, npos), generator=g)
        drop = torch.rand(m, npos, generator=g) < 0.4
        drop[:, 0] = False  # every row keeps at least one positive
        positive[drop] = -1
    q_group = k_group = None
    if groups:
        q_group = torch.randint(0, 3, (m,), generator=g)
        k_group = torch.randint(0, 3, (n,), generator=g)
    return q, k, queue, positive, q_group, k_group


def check(impl, case, tau, reduction="none", tol=1e-5, gtol=None, queue_group=None):
    q, k, queue, positive, q_group, k_group = case
    gtol = tol if gtol is None else gtol
    qd = q.detach().double().requires_grad_()
    kd = k.detach().double().requires_grad_()
    ref = dense_loss(qd, kd, queue, positive, q_group, k_group, tau, queue_group)
    weights = torch.rand(ref.shape, dtype=torch.float64) + 0.5  # a non-uniform upstream gradient
    gq, gk = torch.autograd.grad((ref * weights).sum(), [qd, kd])

    qt = q.detach().clone().requires_grad_()
    kt = k.detach().clone().requires_grad_()
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, temperature=tau)
    if queue_group is not None:
        kw["queue_group"] = queue_group
    out = IMPLS[impl](qt, kt, queue, reduction="none", **kw)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert rel(out, ref) < tol, rel(out, ref)
    (out * weights.float()).sum().backward()
    assert torch.isfinite(qt.grad).all() and torch.isfinite(kt.grad).all()
    assert qt.grad.dtype == q.dtype and kt.grad.dtype == k.dtype
    assert rel(qt.grad, gq) < gtol, rel(qt.grad, gq)
    assert rel(kt.grad, gk) < gtol, rel(kt.grad, gk)

    red = IMPLS[impl](q, k, queue, reduction=reduction, **kw)
    want = {"none": ref, "mean": ref.mean(), "sum": ref.sum()}[reduction]
    assert red.shape == want.shape
    assert rel(red, want) < tol


# (seed, M, N, Q, d, positives per query (0: diagonal), groups, temperature, splits, reduction)
CASES = [
    (1, 16, 16, 0, 16, 0, False, 0.07, None, "mean"),
    (2, 37, 45, 21, 20, 0, False, 0.1, None, "sum"),
    (3, 50, 61, 33, 40, 3, True, 0.5, 3, "none"),
    (4, 23, 17, 70, 7, 1, False, 0.05, 2, "mean"),
    (5, 70, 70, 0, 128, 0, True, 0.2, None, "sum"),
    (6, 33, 48, 50, 65, 4, True, 0.07, 4, "none"),
    (7, 19, 64, 31, 3, 2, False, 0.3, 5, "mean"),
    (8, 64, 33, 16, 33, 1, True, 0.15, None, "mean"),
]


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
@pytest.mark.parametrize("seed,m,n,nq,d,npos,groups,tau,splits,reduction", CASES)
def test_matches_float64_dense(impl, seed, m, n, nq, d, npos, groups, tau, splits, reduction, monkeypatch):
    if splits:
        monkeypatch.setitem(infonce_triton.OVERRIDE, "splits", splits)
    monkeypatch.setattr(infonce_mod, "_CHUNK_ELEMENTS", 600)  # several key chunks in the reference
    monkeypatch.setattr(infonce_mod, "_DENSE_BLOCK", 500)  # and key blocks in info_nce_cpu
    monkeypatch.setattr(infonce_mod, "_POS_CHUNK", 500)  # several row chunks in the positive term
    monkeypatch.setattr(infonce_triton, "_DQ_CHUNK", 300)  # and in the Triton path's dq
    case = make_case(seed, m, n, nq, d, npos, groups)
    check(impl, case, tau, reduction)


def queue_group_case(seed, m, n, nq, d, npos):
    """A grouped case whose queue rows carry group ids too; some positives lie in the queue."""
    case = make_case(seed, m, n, nq, d, npos, True)
    g = torch.Generator().manual_seed(seed + 1000)
    return case, torch.randint(0, 3, (nq,), generator=g)


def test_loop_loss_agrees_with_dense_loss():
    """The two float64 oracles (one-key-at-a-time loop, masked dense matrix) agree on the queue rule."""
    (q, k, queue, positive, q_group, k_group), queue_group = queue_group_case(101, 9, 11, 13, 5, 3)
    a = loop_loss(q, k, queue, positive, q_group, k_group, queue_group, 0.2)
    b = dense_loss(q, k, queue, positive, q_group, k_group, 0.2, queue_group)
    assert rel(a, b) < 1e-12
    # The rule does act: without queue groups the loss differs.
    assert rel(dense_loss(q, k, queue, positive, q_group, k_group, 0.2), b) > 1e-3


# (seed, M, N, Q, d, positives per query (0: diagonal), splits)
QUEUE_GROUP_CASES = [
    (111, 20, 24, 37, 16, 0, None),
    (112, 33, 17, 50, 20, 3, 3),
    (113, 18, 40, 33, 33, 1, 4),
]


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
@pytest.mark.parametrize("seed,m,n,nq,d,npos,splits", QUEUE_GROUP_CASES)
def test_queue_group_matches_float64_loop(impl, seed, m, n, nq, d, npos, splits, monkeypatch):
    if splits:
        monkeypatch.setitem(infonce_triton.OVERRIDE, "splits", splits)
    monkeypatch.setattr(infonce_mod, "_CHUNK_ELEMENTS", 600)
    monkeypatch.setattr(infonce_mod, "_DENSE_BLOCK", 600)
    case, queue_group = queue_group_case(seed, m, n, nq, d, npos)
    q, k, queue, positive, q_group, k_group = case
    if positive is None:
        positive = torch.arange(m)
    want = loop_loss(q, k, queue, positive, q_group, k_group, queue_group, 0.1)
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, queue_group=queue_group)
    got = IMPLS[impl](q, k, queue, temperature=0.1, reduction="none", **kw)
    assert rel(got, want) < 1e-5, rel(got, want)
    check(impl, case, 0.1, queue_group=queue_group)  # gradients against the dense float64 oracle


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
def test_queue_group_int32_and_all_queue_left_out(impl):
    """int32 groups; every queue row in the query's group: the loss equals the loss without a queue."""
    q, k, queue, positive, q_group, k_group = make_case(121, 16, 20, 24, 16, 0, True)
    q_group = torch.zeros(16, dtype=torch.int32)
    queue_group = torch.zeros(24, dtype=torch.int32)
    kw = dict(q_group=q_group, k_group=k_group.int(), temperature=0.1, reduction="none")
    got = IMPLS[impl](q, k, queue, queue_group=queue_group, **kw)
    want = dense_loss(q, k, None, None, q_group, k_group, 0.1)
    assert rel(got, want) < 1e-5


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(impl, dtype):
    case = make_case(11, 40, 52, 24, 32, 2, True, scale=3.0, dtype=dtype)
    # Compared with float64 on the rounded inputs; the kernel rounds softmax weights to 16 bits.
    check(impl, case, 0.1, tol=1e-4 if impl != "triton" else 2e-3, gtol=1e-2)


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
def test_extreme_logits_stay_finite(impl, monkeypatch):
    monkeypatch.setitem(infonce_triton.OVERRIDE, "splits", 3)
    # |s| up to ~1e4: exp would overflow in any precision without the running maximum. A float32 logit
    # near 1e4 is only known to ~1e-3 absolute, and gradients are differences of near-one-hot softmax
    # rows, so they get a looser bound than the loss.
    case = make_case(21, 30, 41, 40, 16, 2, True, scale=60.0)
    check(impl, case, 0.05, tol=1e-5, gtol=5e-3)


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
def test_gradient_to_one_side_only(impl):
    q, k, queue, *_ = make_case(31, 24, 30, 20, 16, 0, False)
    qd, kd = q.double().requires_grad_(), k.double().requires_grad_()
    ref = dense_loss(qd, kd, queue, None, None, None, 0.1).mean()
    gq, gk = torch.autograd.grad(ref, [qd, kd])
    fn = IMPLS[impl]
    qa, ka = q.clone().requires_grad_(), k.clone()  # keys locked
    fn(qa, ka, queue, temperature=0.1).backward()
    assert rel(qa.grad, gq) < 1e-5 and ka.grad is None
    qb, kb = q.clone(), k.clone().requires_grad_()  # queries locked
    fn(qb, kb, queue, temperature=0.1).backward()
    assert rel(kb.grad, gk) < 1e-5 and qb.grad is None
    with torch.no_grad():
        assert rel(fn(q, k, queue, temperature=0.1), ref) < 1e-5


def test_reference_gradcheck_float64(monkeypatch):
    monkeypatch.setattr(infonce_mod, "_CHUNK_ELEMENTS", 64)  # chunks of 16 keys
    q, k, queue, positive, q_group, k_group = make_case(41, 6, 40, 9, 4, 3, True, dtype=torch.float64)
    q.requires_grad_()
    k.requires_grad_()

    def f(q, k):
        return info_nce_reference(
            q,
            k,
            queue,
            positive=positive,
            q_group=q_group,
            k_group=k_group,
            temperature=0.3,
            reduction="none",
        )

    assert torch.autograd.gradcheck(f, (q, k))


def test_dispatcher_uses_the_cpu_path_on_cpu(monkeypatch):
    q, k, queue, positive, q_group, k_group = make_case(51, 20, 25, 5, 8, 2, True)
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, temperature=0.2, reduction="none")
    assert torch.equal(info_nce(q, k, queue, **kw), info_nce_cpu(q, k, queue, **kw))
    monkeypatch.setenv("SKELCL_INFONCE", "reference")  # the path before info_nce_cpu
    assert torch.equal(info_nce(q, k, queue, **kw), info_nce_reference(q, k, queue, **kw))
    assert not torch.equal(info_nce_cpu(q, k, queue, **kw), info_nce_reference(q, k, queue, **kw))


@pytest.mark.parametrize("bound", [60.0, 0.0])  # exp without / with the row maximum subtracted
def test_cpu_gradcheck_float64(bound, monkeypatch):
    monkeypatch.setattr(infonce_mod, "_EXP_BOUND", bound)
    monkeypatch.setattr(infonce_mod, "_DENSE_BLOCK", 30)  # blocks of 5 keys: k split, queue split
    (q, k, queue, positive, q_group, k_group), queue_group = queue_group_case(42, 6, 10, 12, 4, 3)
    q = q.double().requires_grad_()
    k = k.double().requires_grad_()
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, queue_group=queue_group)

    def f(q, k):
        return info_nce_cpu(q, k, queue.double(), temperature=0.3, reduction="none", **kw)

    assert torch.autograd.gradcheck(f, (q, k))


def test_cpu_shifted_exp_matches_unshifted(monkeypatch):
    case, queue_group = queue_group_case(43, 40, 30, 50, 16, 2)
    q, k, queue, positive, q_group, k_group = case
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, queue_group=queue_group, reduction="none")
    plain = info_nce_cpu(q, k, queue, temperature=0.1, **kw)
    monkeypatch.setattr(infonce_mod, "_EXP_BOUND", 0.0)
    shifted = info_nce_cpu(q, k, queue, temperature=0.1, **kw)
    assert rel(shifted, plain) < 1e-6 and not torch.equal(shifted, plain)


@pytest.mark.parametrize("seed", range(4))
def test_queue_left_out_pairs_match_the_dense_mask(seed):
    g = torch.Generator().manual_seed(seed)
    m, n, nq = 30, 7, 200
    q_group, queue_group = torch.randint(-1, 5, (m,), generator=g), torch.randint(-1, 5, (nq,), generator=g)
    pos = torch.randint(-1, n + nq, (m, 3), generator=g)
    rows, cols = infonce_mod._queue_left_out(q_group, queue_group, pos, n)
    got = torch.zeros(m, nq, dtype=torch.bool)
    got[rows, cols] = True
    assert rows.numel() == int(got.sum())  # no pair twice
    want = infonce_mod._left_out(q_group, queue_group, pos, torch.arange(m), torch.arange(n, n + nq))
    assert torch.equal(got, want) and want.any()


def test_cpu_over_budget_logs_and_runs_the_reference(monkeypatch, caplog):
    q, k, queue, positive, q_group, k_group = make_case(52, 20, 25, 500, 8, 2, True)
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, temperature=0.2, reduction="none")
    monkeypatch.setenv("SKELCL_INFONCE_DENSE_MB", "0.01")  # 10 KiB < 20 x 525 float32 logits
    monkeypatch.setattr(infonce_mod, "_logged", set())
    with caplog.at_level("INFO", logger="skelcl.kernels"):
        got = info_nce_cpu(q, k, queue, **kw)
        info_nce_cpu(q, k, queue, **kw)
    assert torch.equal(got, info_nce_reference(q, k, queue, **kw))
    lines = [r.getMessage() for r in caplog.records if "info_nce_cpu" in r.getMessage()]
    assert len(lines) == 1 and "over the 0 MiB budget" in lines[0] and "20 x 525" in lines[0], lines
    monkeypatch.setenv("SKELCL_INFONCE_DENSE_MB", "1")
    assert not torch.equal(info_nce_cpu(q, k, queue, **kw), got)  # within budget: the dense path


def test_cpu_backward_twice_through_one_graph():
    q, k, queue, *_ = make_case(53, 12, 12, 20, 8, 0, False)
    q.requires_grad_()
    loss = info_nce_cpu(q, k, queue, temperature=0.1)
    (g1,) = torch.autograd.grad(loss, q, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, q)
    assert torch.equal(g1, g2) and g1.abs().sum() > 0


@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_autograd_saves_nothing_of_size_m_by_n(impl, monkeypatch):
    m, n, nq, d = 48, 56, 32, 16  # M * N = 2688 > every input (<= 896 elements)
    q, k, queue, positive, q_group, k_group = make_case(61, m, n, nq, d, 2, True)
    q.requires_grad_()
    k.requires_grad_()
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = IMPLS[impl](q, k, queue, positive=positive, q_group=q_group, k_group=k_group)
    loss.backward()
    assert sizes and max(sizes) < m * n, sorted(sizes)[-5:]
    # The hook does see a dense computation's logits (the check can fail):
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.logsumexp(q @ k.t(), 1).sum()
    assert max(sizes) >= m * n


def test_torch_compile_custom_op():
    """The Triton path traced by torch.compile (fullgraph) through the custom op's fake and autograd."""
    q, k, queue, positive, q_group, k_group = make_case(71, 32, 40, 16, 16, 2, True)
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, temperature=0.1)

    def f(q, k):
        return info_nce_triton(q, k, queue, **kw)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    q1, k1 = q.clone().requires_grad_(), k.clone().requires_grad_()
    q2, k2 = q.clone().requires_grad_(), k.clone().requires_grad_()
    out_c = compiled(q1, k1)
    out_c.backward()
    out_e = f(q2, k2)
    out_e.backward()
    assert rel(out_c, out_e) < 1e-6
    assert rel(q1.grad, q2.grad) < 1e-6 and rel(k1.grad, k2.grad) < 1e-6


def test_custom_op_registrations():
    """torch.library.opcheck: schema, fake (meta) functions, autograd registration, AOT dispatch."""
    q, k, queue, positive, *_ = make_case(81, 20, 24, 10, 16, 2, False)
    pos = positive.contiguous()
    torch.library.opcheck(infonce_triton.lse_fwd_op, (q.requires_grad_(), k.requires_grad_(), queue, pos,
                                                     None, None, None, 0.1, True))  # fmt: skip
    qg, kg, queue_g = torch.zeros(20, dtype=torch.long), torch.ones(24, dtype=torch.long), torch.arange(10)
    torch.library.opcheck(infonce_triton.lse_fwd_op, (q, k, queue, pos, qg, kg, queue_g, 0.1, True))
    lse, _ = infonce_triton.lse_fwd_op(q.detach(), k.detach(), queue, pos, None, None, None, 0.1, False)
    g = torch.rand(lse.shape)
    torch.library.opcheck(infonce_triton.lse_dk_op, (q.detach(), k.detach(), lse, g, pos, None, None, 0.1))


def test_choose_splits_fills_the_chip():
    assert infonce_triton.choose_splits(512, 512, 132) == 1  # 65,536 queries, BLOCK_M 128
    s = infonce_triton.choose_splits(32, 8224, 132)  # 4,096 queries x 1.05M keys
    progs = 32 * s
    assert progs >= 132 and progs / (-(-progs // 132) * 132) >= 0.9 and 8224 // s >= 8
    assert infonce_triton.choose_splits(1, 3, 132) == 1  # too few tiles to split


BAD = [
    (dict(q=torch.randn(4, 8, 2)), "q must be 2-D"),
    (dict(k=torch.randn(6, 9)), "k has d=9"),
    (dict(queue=torch.randn(3, 7)), "queue has d=7"),
    (dict(q=torch.randn(4, 300), k=torch.randn(6, 300)), "outside 1..256"),
    (dict(q=torch.randint(0, 3, (4, 8))), "dtype int64"),
    (dict(q=torch.randn(7, 8)), "needs N >= M"),
    (dict(positive=torch.tensor([0, 1, 2])), "shape (M,) or (M, P)"),
    (dict(positive=torch.tensor([0, 1, 2, 99])), "positive holds 99"),
    (dict(positive=torch.tensor([0.0, 1, 2, 3])), "int64"),
    (dict(q_group=torch.zeros(4, dtype=torch.long)), "both q_group and k_group"),
    (
        dict(q_group=torch.zeros(4, dtype=torch.long), k_group=torch.zeros(5, dtype=torch.long)),
        "k_group must",
    ),
    (dict(queue_group=torch.zeros(3, dtype=torch.long)), "queue_group needs q_group"),
    (
        dict(
            q_group=torch.zeros(4, dtype=torch.long),
            k_group=torch.zeros(6, dtype=torch.long),
            queue_group=torch.zeros(4, dtype=torch.long),
        ),
        "queue_group must have shape (3,)",
    ),  # fmt: skip
    (
        dict(
            q_group=torch.zeros(4, dtype=torch.long),
            k_group=torch.zeros(6, dtype=torch.long),
            queue_group=torch.zeros(3),
        ),
        "queue_group must be an int64",
    ),  # fmt: skip
    (
        dict(
            q_group=torch.zeros(4, dtype=torch.long),
            k_group=torch.zeros(6, dtype=torch.long),
            queue_group=torch.zeros(3, dtype=torch.long),
            queue=None,
        ),
        "queue_group given without a queue",
    ),  # fmt: skip
    (dict(temperature=0.0), "temperature"),
    (dict(reduction="avg"), "reduction"),
]


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
@pytest.mark.parametrize("bad,message", BAD)
def test_bad_input_messages(impl, bad, message):
    args = dict(q=torch.randn(4, 8), k=torch.randn(6, 8), queue=torch.randn(3, 8))
    kw = {}
    for key, v in bad.items():
        (args if key in args else kw)[key] = v
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        IMPLS[impl](args["q"], args["k"], args["queue"], **kw)


def test_triton_rejects_float64():
    with pytest.raises(ValueError, match="info_nce_triton: q has dtype float64"):
        info_nce_triton(torch.randn(4, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64))


@pytest.mark.slow
def test_torch_compile_inductor_cpu():
    """Full inductor compile on CPU (about 30 s cold): the custom op stays one opaque node."""
    q, k, queue, *_ = make_case(91, 32, 40, 16, 16, 0, False)
    f = torch.compile(lambda q, k: info_nce_triton(q, k, queue, temperature=0.1), fullgraph=True)
    q1, k1 = q.clone().requires_grad_(), k.clone().requires_grad_()
    q2, k2 = q.clone().requires_grad_(), k.clone().requires_grad_()
    out_c = f(q1, k1)
    out_c.backward()
    out_e = info_nce_triton(q2, k2, queue, temperature=0.1)
    out_e.backward()
    assert rel(out_c, out_e) < 1e-6
    assert rel(q1.grad, q2.grad) < 1e-6 and rel(k1.grad, k2.grad) < 1e-6


def strided(t):
    """The same values as a non-contiguous view: every other row (or element) of a larger tensor."""
    big = torch.zeros((2 * t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype)
    big[::2] = t
    return big[::2]


def transposed(t):
    """The same values as a view whose last two dimensions are stored transposed."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


VIEW_ARGS = [
    ("q", strided),
    ("q", transposed),
    ("k", strided),
    ("k", transposed),
    ("queue", strided),
    ("queue", transposed),
    ("positive", strided),
    ("positive", transposed),
    ("q_group", strided),
    ("k_group", strided),
    ("queue_group", strided),
]


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
@pytest.mark.parametrize("arg,view", VIEW_ARGS, ids=[f"{a}-{v.__name__}" for a, v in VIEW_ARGS])
def test_non_contiguous_views_of_every_argument(impl, arg, view, monkeypatch):
    monkeypatch.setitem(infonce_triton.OVERRIDE, "splits", 2)
    (q, k, queue, positive, q_group, k_group), queue_group = queue_group_case(131, 20, 24, 18, 16, 2)
    args = dict(q=q, k=k, queue=queue, positive=positive, q_group=q_group, k_group=k_group)
    args["queue_group"] = queue_group
    args[arg] = view(args[arg])
    assert not args[arg].is_contiguous() and torch.equal(args[arg], locals()[arg])
    q_in, k_in = args.pop("q").requires_grad_(), args.pop("k").requires_grad_()
    queue_in = args.pop("queue")
    loss = IMPLS[impl](q_in, k_in, queue_in, temperature=0.1, reduction="none", **args)
    want = dense_loss(q, k, queue, positive, q_group, k_group, 0.1, queue_group)
    assert rel(loss, want) < 1e-5, rel(loss, want)
    weights = torch.rand(want.shape, dtype=torch.float64) + 0.5
    (loss * weights.float()).sum().backward()
    qd, kd = q.double().requires_grad_(), k.double().requires_grad_()
    ref = dense_loss(qd, kd, queue, positive, q_group, k_group, 0.1, queue_group)
    gq, gk = torch.autograd.grad((ref * weights).sum(), [qd, kd])
    assert rel(q_in.grad, gq) < 1e-5 and rel(k_in.grad, gk) < 1e-5


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
def test_row_without_kept_key_gets_zero_not_nan_gradient(impl, monkeypatch):
    """Row 0 has every key (batch and queue) in its group and no positive: its loss is 0 / 0 (NaN). The
    other rows' loss, differentiated with the key range split in three (per-split results merged on the
    host), has finite gradients equal to the float64 ones, and row 0 gets a zero gradient."""
    monkeypatch.setitem(infonce_triton.OVERRIDE, "splits", 3)
    monkeypatch.setattr(infonce_mod, "_CHUNK_ELEMENTS", 600)
    q, k, queue, positive, _, _ = make_case(141, 16, 40, 20, 16, 2, False)
    positive[0] = -1
    q_group = torch.arange(16) % 3 + 1
    q_group[0] = 0
    k_group, queue_group = torch.zeros(40, dtype=torch.long), torch.zeros(20, dtype=torch.long)
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, queue_group=queue_group, temperature=0.1)
    qt, kt = q.clone().requires_grad_(), k.clone().requires_grad_()
    loss = IMPLS[impl](qt, kt, queue, reduction="none", **kw)
    assert torch.isnan(loss[0]) and torch.isfinite(loss[1:]).all()
    loss[1:].sum().backward()
    assert torch.isfinite(qt.grad).all() and torch.isfinite(kt.grad).all()
    assert torch.count_nonzero(qt.grad[0]) == 0
    qd, kd = q.double().requires_grad_(), k.double().requires_grad_()
    ref = dense_loss(qd, kd, queue, positive, q_group, k_group, 0.1, queue_group)
    gq, gk = torch.autograd.grad(ref[1:].sum(), [qd, kd])
    assert rel(qt.grad, gq) < 1e-5 and rel(kt.grad, gk) < 1e-5


@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_saved_for_backward_is_16bit_inputs_plus_float32_e(impl):
    """In-batch bf16: autograd keeps the bf16 inputs, O(M) vectors and (Triton, for dq) one float32
    (M, d) E; no float32 copies of q or k for the positive term."""
    m, d = 64, 32
    q, k, *_ = make_case(151, m, m, 0, d, 0, False, dtype=torch.bfloat16)
    q.requires_grad_()
    k.requires_grad_()
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = IMPLS[impl](q, k, temperature=0.1)
    loss.backward()
    big32 = [n for dt, n in saved if dt == torch.float32 and n >= m * d]
    assert len(big32) == (1 if impl == "triton" else 0), saved
    assert all(n <= m * d for _, n in saved) and any(dt == torch.bfloat16 for dt, _ in saved)
    assert q.grad.dtype == k.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("impl", ["triton", "reference", "cpu"])
def test_autocast_casts_inputs_to_the_autocast_dtype(impl, monkeypatch):
    """Under (CPU) bf16 autocast float32 q, k and queue reach the kernel as bf16 (the "16bit" variant);
    the loss is float32, equals the loss of the bf16-rounded inputs, and gradients come back float32."""
    q, k, queue, positive, q_group, k_group = make_case(161, 24, 32, 16, 16, 2, True)
    seen = []
    dense_lse = infonce_triton.dense_lse

    def spy(q, k, queue, *args):
        seen.append((q.dtype, k.dtype, None if queue is None else queue.dtype))
        return dense_lse(q, k, queue, *args)

    monkeypatch.setattr(infonce_triton, "dense_lse", spy)
    kw = dict(positive=positive, q_group=q_group, k_group=k_group, temperature=0.1, reduction="none")
    qa, ka = q.clone().requires_grad_(), k.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = IMPLS[impl](qa, ka, queue, **kw)
    assert loss.dtype == torch.float32
    if impl == "triton":
        assert seen == [(torch.bfloat16,) * 3]
        assert infonce_triton.dot_mode(seen[0][0], torch.device("cuda")) == "16bit"
    want = dense_loss(q.bfloat16(), k.bfloat16(), queue.bfloat16(), positive, q_group, k_group, 0.1)
    assert rel(loss, want) < 2e-3
    assert rel(loss, dense_loss(q, k, queue, positive, q_group, k_group, 0.1)) > 1e-4  # bf16 did act
    loss.sum().backward()
    assert qa.grad.dtype == ka.grad.dtype == torch.float32 and torch.isfinite(qa.grad).all()


def test_dispatcher_environment_switch(monkeypatch):
    q, k, queue, *_ = make_case(171, 16, 16, 16, 16, 0, False)
    calls = []
    monkeypatch.setattr(infonce_triton, "dense_lse", lambda *a: calls.append(1) or torch.zeros(16))
    monkeypatch.setenv("SKELCL_INFONCE", "triton")
    info_nce(q, k, queue)
    assert calls == [1]
    monkeypatch.setenv("SKELCL_INFONCE", "reference")
    info_nce(q, k, queue)
    assert calls == [1]
