"""The backbone on the Triton graph convolution (interpreter) matches the plain path: outputs and
every parameter gradient, ST-GCN and AGCN (learned adjacency offsets, so dA flows)."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton / skelcl.kernels are imported

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from skelcl.kernels import graph_conv_reference, graph_conv_triton  # noqa: E402

bbmod = pytest.importorskip("skelcl.models.backbone")


@pytest.mark.parametrize("kind", ["agcn"])  # AGCN covers the ST-GCN path plus dA
def test_backbone_kernel_path_matches_plain_path(kind, monkeypatch):
    if not hasattr(bbmod, "graph_conv"):
        pytest.skip("skelcl.models.backbone has no module-level graph_conv to switch")
    monkeypatch.setenv("SKELCL_GRAPH_CONV", "reference")  # frames-major: the path that calls graph_conv
    torch.manual_seed(0)
    model = bbmod.Backbone(kind=kind, width=0.25, strides=(5, 8))
    if kind == "agcn":
        with torch.no_grad():
            for layer in model.layers:
                layer.offset.normal_(0, 0.05)
    x = torch.randn(1, 8, 2, 25, 3)
    out = {}
    calls = []
    for name, fn in (("plain", graph_conv_reference), ("kernel", graph_conv_triton)):
        fn = (lambda f: lambda *a, **k: calls.append(1) or f(*a, **k))(fn)
        monkeypatch.setattr(bbmod, "graph_conv", fn)
        m = copy.deepcopy(model)
        y, taps = m(x, taps=(1, 7))
        (y.square().mean() + sum(t.square().mean() for t in taps.values())).backward()
        out[name] = (y, {n: p.grad for n, p in m.named_parameters()})
    assert len(calls) == 2 * len(model.layers)  # both runs went through the switched graph_conv
    (y0, g0), (y1, g1) = out["plain"], out["kernel"]
    assert ((y1 - y0).norm() / y0.norm()).item() < 1e-4
    assert set(g0) == set(g1) and all(g is not None for g in g0.values())
    if kind == "agcn":
        assert any(n.endswith("offset") for n in g0)
    top = max(g.norm() for g in g0.values())
    for n, g in g0.items():
        # Biases just before a training-mode BatchNorm get rounding noise as gradient: compare all
        # gradients against the largest one, and the sizeable ones relatively as well.
        assert ((g1[n] - g).norm() / top).item() < 1e-5, n
        if g.norm() > 1e-3 * top:
            assert ((g1[n] - g).norm() / g.norm()).item() < 1e-3, n
