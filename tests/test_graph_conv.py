"""graph_conv: the Triton kernel (interpreter), the PyTorch reference and the joints-major CPU path
(graph_conv_ncvt, called on transposed views) against a float64 einsum.

Values and every gradient (x, weight, adjacency, bias, residual) over random shapes: C not a multiple of
16, odd T, K = 1 and 3, with and without bias, residual and ReLU; fp32 and bf16. Outputs are poisoned
with NaN before each launch, so an element the kernel forgets to write fails the comparison.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton / skelcl.kernels are imported

import pytest  # noqa: E402
import skelcl.kernels.graph_conv_kernel as gck  # noqa: E402
import torch  # noqa: E402
from skelcl.kernels import (  # noqa: E402
    fold_batchnorm,
    graph_conv,
    graph_conv_ncvt,
    graph_conv_reference,
    graph_conv_triton,
)


def ncvt_as_nctv(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    """graph_conv_ncvt in the (N, C, T, V) contract: x and residual handed over as (N, C, V, T) views."""
    r = None if residual is None else residual.transpose(2, 3)
    y = graph_conv_ncvt(x.transpose(2, 3), weight, adjacency, bias, residual=r, activation=activation)
    return y.transpose(2, 3)


FNS = {"triton": graph_conv_triton, "reference": graph_conv_reference, "ncvt": ncvt_as_nctv}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Kernel outputs start as NaN; tile overrides never leak between tests."""
    monkeypatch.setattr(gck, "_empty", lambda shape, **kw: torch.full(shape, float("nan"), **kw))
    monkeypatch.setattr(gck, "OVERRIDE", {})


def dense64(x, w, a, b=None, r=None, relu_mask=None):
    """y[n,o,t,w] = sum_k sum_c sum_v w[k,o,c] x[n,c,t,v] a[k,v,w] (+ b[o]) (+ r), in float64.

    relu_mask: None (no ReLU), True (ReLU of itself), or a boolean tensor (ReLU pattern to apply)."""
    y = torch.einsum("koc,nctv,kvw->notw", w.double(), x.double(), a.double())
    if b is not None:
        y = y + b.double()[None, :, None, None]
    if r is not None:
        y = y + r.double()
    if relu_mask is True:
        y = torch.relu(y)
    elif relu_mask is not None:
        y = torch.where(relu_mask, y, torch.zeros_like(y))
    return y


def rel(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def make(n, ci, co, t, v, k, dtype, bias, residual, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, t, v, generator=g)
    w = torch.randn(k, co, ci, generator=g) / (k * ci) ** 0.5
    a = torch.rand(k, v, v, generator=g) * (torch.rand(k, v, v, generator=g) < 0.3) + torch.eye(v)
    b = torch.randn(co, generator=g) if bias else None
    r = torch.randn(n, co, t, v, generator=g) if residual else None
    leaves = [t_.to(dtype).requires_grad_() if t_ is not None else None for t_ in (x, w, a, b, r)]
    return leaves, torch.randn(n, co, t, v, generator=g)


# (N, C_in, C_out, T, V, K, bias, residual, relu, seed)
CASES = [
    (2, 5, 7, 3, 25, 3, True, True, True, 0),
    (3, 20, 18, 5, 25, 1, False, False, False, 1),
    (1, 37, 19, 7, 25, 3, True, False, True, 2),
    (2, 3, 40, 9, 25, 3, False, True, False, 3),
    (2, 17, 17, 4, 25, 2, True, True, False, 4),
    (2, 9, 21, 3, 13, 3, False, False, True, 5),
]


@pytest.mark.parametrize("impl", list(FNS))
@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "N{}_Ci{}_Co{}_T{}_V{}_K{}_b{:d}r{:d}relu{:d}".format(*c)
)
def test_fp32_values_and_all_gradients(case, impl):
    n, ci, co, t, v, k, bias, residual, relu, seed = case
    (x, w, a, b, r), gy = make(n, ci, co, t, v, k, torch.float32, bias, residual, seed)
    y = FNS[impl](x, w, a, b, residual=r, activation="relu" if relu else None)
    assert y.dtype == torch.float32 and y.shape == (n, co, t, v)
    leaves = [p for p in (x, w, a, b, r) if p is not None]
    grads = torch.autograd.grad(y, leaves, gy)

    ref_leaves = [p.detach().double().requires_grad_() for p in leaves]
    it = iter(ref_leaves)
    x64, w64, a64 = next(it), next(it), next(it)
    b64 = next(it) if bias else None
    r64 = next(it) if residual else None
    y64 = dense64(x64, w64, a64, b64, r64, True if relu else None)
    refs = torch.autograd.grad(y64, ref_leaves, gy.double())
    assert torch.isfinite(y).all()
    assert rel(y, y64) < 1e-5
    names = ["x", "weight", "adjacency"] + (["bias"] if bias else []) + (["residual"] if residual else [])
    for name, got, ref in zip(names, grads, refs):
        assert got.shape == ref.shape, name
        assert rel(got, ref) < 1e-5, (name, rel(got, ref))


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]], ids=["relu_res", "relu", "res"])
def test_bf16_values_and_gradients(case):
    n, ci, co, t, v, k, bias, residual, relu, seed = case
    (x, w, a, b, r), gy = make(n, ci, co, t, v, k, torch.bfloat16, bias, residual, seed)
    y = graph_conv_triton(x, w, a, b, residual=r, activation="relu" if relu else None)
    assert y.dtype == torch.bfloat16
    leaves = [p for p in (x, w, a, b, r) if p is not None]
    grads = torch.autograd.grad(y, leaves, gy.bfloat16())
    ref_leaves = [p.detach().double().requires_grad_() for p in leaves]
    it = iter(ref_leaves)
    x64, w64, a64 = next(it), next(it), next(it)
    b64 = next(it) if bias else None
    r64 = next(it) if residual else None
    # ReLU pattern taken from the kernel's own output: elements within bf16 rounding of 0 may flip sign.
    y64 = dense64(x64, w64, a64, b64, r64, (y > 0) if relu else None)
    refs = torch.autograd.grad(y64, ref_leaves, gy.bfloat16().double())
    assert rel(y, y64) < 1e-2
    for got, ref in zip(grads, refs):
        assert got.dtype == torch.bfloat16
        assert rel(got, ref) < 1e-2


def test_bf16_rounds_the_intermediate_like_autocast():
    """The K*C_in intermediate is rounded to bf16 once, as conv-then-einsum in bf16 does: the kernel
    lands much closer to that two-step bf16 computation than bf16 noise would allow by chance."""
    (x, w, a, _, _), _ = make(2, 24, 20, 5, 25, 3, torch.bfloat16, False, False, 7)
    y = graph_conv_triton(x, w, a).double()
    y64 = dense64(x, w, a)
    assert rel(y, y64) < 1e-2
    u = torch.einsum("koc,nctv->nkotv", w.double(), x.double()).bfloat16().double()
    two_step = torch.einsum("nkotv,kvw->notw", u, a.double()).bfloat16().double()
    # Both round the output to bf16 too; only accumulation order separates the kernel from two_step.
    assert rel(y, two_step) < 0.3 * rel(y, y64.bfloat16().double())


@pytest.mark.parametrize("need", ["x_only", "adjacency_only", "weight_only"])
def test_partial_gradients_and_loops(need):
    """One leaf at a time, with forced row splits (dW) whose last split has fewer tiles."""
    gck.OVERRIDE.update(dw_splits=4)
    (x, w, a, _, _), gy = make(3, 11, 13, 9, 25, 3, torch.float32, False, False, 8)
    leaf = {"x_only": x, "adjacency_only": a, "weight_only": w}[need]
    for p in (x, w, a):
        p.requires_grad_(p is leaf)
    (got,) = torch.autograd.grad(graph_conv_triton(x, w, a), (leaf,), gy)
    x64, w64, a64 = (p.detach().double().requires_grad_(p is leaf) for p in (x, w, a))
    leaf64 = {"x_only": x64, "adjacency_only": a64, "weight_only": w64}[need]
    (ref,) = torch.autograd.grad(dense64(x64, w64, a64), (leaf64,), gy.double())
    assert rel(got, ref) < 1e-5


def test_transposed_weight_and_adjacency_views():
    """Strided (non-contiguous) weight and adjacency give the same result as contiguous copies."""
    (x, w, a, b, _), _ = make(2, 12, 12, 5, 25, 3, torch.float32, True, False, 9)
    wt, at = w.detach().transpose(1, 2), a.detach().transpose(1, 2)
    y = graph_conv_triton(x.detach(), wt, at, b.detach())
    assert rel(y, dense64(x, wt.contiguous(), at.contiguous(), b)) < 1e-5


def test_reference_gradcheck_float64():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(2, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)
    r = torch.randn(2, 2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda *p: graph_conv_reference(*p[:4], residual=p[4], activation="relu")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, a, b, r))


def test_dispatcher_uses_reference_on_cpu():
    (x, w, a, b, r), _ = make(2, 6, 5, 3, 25, 3, torch.float32, True, True, 11)
    y = graph_conv(x, w, a, b, residual=r, activation="relu")
    assert torch.equal(y, graph_conv_reference(x, w, a, b, residual=r, activation="relu"))
    assert rel(y, dense64(x, w, a, b, r, True)) < 1e-5


@pytest.mark.parametrize("impl", list(FNS))
def test_fold_batchnorm_matches_eval_conv_bn(impl):
    (x, w, a, b, _), _ = make(2, 10, 14, 5, 25, 3, torch.float32, True, False, 12)
    x, w, a, b = x.detach(), w.detach(), a.detach(), b.detach()
    bn = torch.nn.BatchNorm2d(14)
    g = torch.Generator().manual_seed(13)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(14, generator=g))
        bn.running_var.copy_(torch.rand(14, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(14, generator=g))
        bn.bias.copy_(torch.randn(14, generator=g))
    bn.eval()
    expected = bn(dense64(x, w, a, b).float()).double()
    wf, bf = fold_batchnorm(w, b, bn)
    assert rel(FNS[impl](x, wf, a, bf), expected) < 1e-5
    wf0, bf0 = fold_batchnorm(w, None, bn)  # no conv bias
    assert rel(FNS[impl](x, wf0, a, bf0), bn(dense64(x, w, a).float()).double()) < 1e-5


def test_autocast_cpu_casts_to_bf16():
    (x, w, a, b, _), _ = make(2, 8, 6, 3, 25, 3, torch.float32, True, False, 14)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = graph_conv_triton(x, w, a, b)
    assert y.dtype == torch.bfloat16
    assert rel(y, dense64(x, w, a, b)) < 1e-2
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_torch_compile_fullgraph_forward_and_backward():
    """The custom ops trace under torch.compile (aot_eager: AOTAutograd with the fake kernels)."""
    (x, w, a, b, r), gy = make(2, 9, 7, 3, 25, 3, torch.float32, True, True, 15)

    def f(x, w, a, b, r):
        return graph_conv_triton(x, w, a, b, residual=r, activation="relu") * 2.0

    fc = torch.compile(f, backend="aot_eager", fullgraph=True)
    y = fc(x, w, a, b, r)
    grads = torch.autograd.grad(y, (x, w, a, b, r), gy)
    leaves64 = [p.detach().double().requires_grad_() for p in (x, w, a, b, r)]
    y64 = 2.0 * dense64(*leaves64, True)
    refs = torch.autograd.grad(y64, leaves64, gy.double())
    assert rel(y, y64) < 1e-5
    for got, ref in zip(grads, refs):
        assert rel(got, ref) < 1e-5


def test_custom_op_registrations_opcheck():
    (x, w, a, b, r), _ = make(1, 6, 5, 3, 25, 2, torch.float32, True, True, 16)
    args = (
        x.detach().requires_grad_(),
        w.detach().requires_grad_(),
        a.detach(),
        b.detach(),
        r.detach(),
        True,
    )
    torch.library.opcheck(
        gck.graph_conv_fwd_op,
        args,
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(x=torch.randn(2, 3, 4)), "x must be"),
        (dict(weight=torch.randn(3, 4, 5)), "weight must be"),
        (dict(adjacency=torch.randn(3, 24, 24)), "adjacency must be"),
        (dict(bias=torch.randn(5)), "bias must be"),
        (dict(residual=torch.randn(2, 4, 4, 25)), "residual must"),
        (dict(activation="gelu"), "activation"),
        (dict(x=torch.randn(2, 3, 5, 25, dtype=torch.float64)), "unsupported"),
    ],
)
def test_bad_inputs_name_the_argument(bad, message):
    args = dict(
        x=torch.randn(2, 3, 5, 25),
        weight=torch.randn(3, 4, 3),
        adjacency=torch.randn(3, 25, 25),
        bias=None,
        residual=None,
        activation=None,
    )
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        graph_conv_triton(
            args["x"],
            args["weight"],
            args["adjacency"],
            args["bias"],
            residual=args["residual"],
            activation=args["activation"],
        )


def test_without_register_prefetch():
    """The loop variant without the next-block prefetch (the GPU default for float32) computes the same."""
    gck.OVERRIDE.update(fwd_prefetch=False, dw_prefetch=False, dw_splits=3)
    (x, w, a, b, r), gy = make(2, 21, 18, 7, 25, 3, torch.float32, True, True, 17)
    y = graph_conv_triton(x, w, a, b, residual=r, activation="relu")
    grads = torch.autograd.grad(y, (x, w, a, b, r), gy)
    leaves64 = [p.detach().double().requires_grad_() for p in (x, w, a, b, r)]
    y64 = dense64(*leaves64, True)
    refs = torch.autograd.grad(y64, leaves64, gy.double())
    assert rel(y, y64) < 1e-5
    for got, ref in zip(grads, refs):
        assert rel(got, ref) < 1e-5


def _strided(t):
    """Same values, non-contiguous: every other entry along dim 0 of a larger tensor."""
    big = torch.zeros((2 * t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype)
    big[::2] = t
    return big[::2]


def _transposed(t):
    """Same values, the last two dimensions stored transposed."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


GC_VIEWS = [
    (arg, view)
    for arg in ("x", "weight", "adjacency", "bias", "residual", "grad")
    for view in (_strided, _transposed)
    if not (arg == "bias" and view is _transposed)
]


@pytest.mark.parametrize("impl", list(FNS))
@pytest.mark.parametrize("arg,view", GC_VIEWS, ids=[f"{a}-{v.__name__[1:]}" for a, v in GC_VIEWS])
def test_non_contiguous_views_of_every_argument(impl, arg, view):
    """A strided or transposed view of any argument (and of the upstream gradient) gives the float64
    result and gradients."""
    (x, w, a, b, r), gy = make(2, 10, 12, 5, 25, 2, torch.float32, True, True, 18)
    vals = dict(x=x.detach(), weight=w.detach(), adjacency=a.detach(), bias=b.detach(), residual=r.detach())
    vals["grad"] = gy
    vals[arg] = view(vals[arg])
    assert not vals[arg].is_contiguous()
    leaves = [vals[n].requires_grad_() for n in ("x", "weight", "adjacency", "bias", "residual")]
    y = FNS[impl](*leaves[:4], residual=leaves[4], activation="relu")
    grads = torch.autograd.grad(y, leaves, vals["grad"])
    leaves64 = [p.detach().double().requires_grad_() for p in leaves]
    y64 = dense64(*leaves64, True)
    refs = torch.autograd.grad(y64, leaves64, gy.double())
    assert rel(y, y64) < 1e-5
    for got, ref in zip(grads, refs):
        assert rel(got, ref) < 1e-5


def test_ncvt_contiguous_input_both_channel_orders():
    """graph_conv_ncvt on contiguous (N, C, V, T) input (one copy into its storage), with C_in < C_out and
    C_in > C_out, equals the float64 einsum; a float64 gradcheck covers both shapes."""
    for ci, co in ((4, 9), (9, 4)):
        (x, w, a, b, r), _ = make(2, ci, co, 6, 25, 3, torch.float32, True, True, 21)
        x, w, a, b, r = (p.detach() for p in (x, w, a, b, r))
        y = graph_conv_ncvt(x.transpose(2, 3).contiguous(), w, a, b, residual=r.transpose(2, 3).contiguous())
        assert y.shape == (2, co, 25, 6)
        assert rel(y.transpose(2, 3), dense64(x, w, a, b, r)) < 1e-5
    g = torch.Generator().manual_seed(22)
    for ci, co in ((2, 3), (3, 2)):
        leaves = [
            torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
            for shape in ((2, ci, 5, 4), (2, co, ci), (2, 5, 5), (co,), (2, co, 5, 4))
        ]
        fn = lambda *p: graph_conv_ncvt(*p[:4], residual=p[4], activation="relu")  # noqa: E731
        assert torch.autograd.gradcheck(fn, tuple(leaves))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(x=torch.randn(2, 3, 25)), r"x must be \(N, C_in, V, T\)"),
        (dict(adjacency=torch.randn(3, 5, 5)), "adjacency must be"),
        (dict(residual=torch.randn(2, 4, 5, 25)), r"residual must have the output shape \(2, 4, 25, 5\)"),
    ],
)
def test_ncvt_bad_inputs_name_the_argument_in_its_layout(bad, message):
    args = dict(x=torch.randn(2, 3, 25, 5), weight=torch.randn(3, 4, 3), adjacency=torch.randn(3, 25, 25))
    args.update(bad)
    residual = args.pop("residual", None)
    with pytest.raises(ValueError, match=message):
        graph_conv_ncvt(args["x"], args["weight"], args["adjacency"], residual=residual)


def test_ncvt_channels_last_storage_and_cpu_autocast():
    """Channels-last input (the backbone's storage) gives the same values and gradients as contiguous
    input and comes back channels-last; under CPU bf16 autocast the op computes in bf16 (float32
    accumulation), close to the float64 result."""
    (x, w, a, b, _), gy = make(3, 6, 8, 7, 25, 3, torch.float32, True, False, 23)
    x_ncvt = x.detach().transpose(2, 3)
    outs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x_ncvt.contiguous(memory_format=fmt).requires_grad_()
        y = graph_conv_ncvt(xi, w, a, b)
        grads = torch.autograd.grad(y, (xi, w, a, b), gy.transpose(2, 3))
        outs.append((y, grads))
    assert outs[1][0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for g0, g1 in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g0, g1)
    ref = dense64(x, w, a, b).transpose(2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = graph_conv_ncvt(x_ncvt.contiguous(memory_format=torch.channels_last), w, a, b)
    assert y16.dtype == torch.bfloat16
    assert rel(y16, ref) < 2e-2
