"""Spatial graph convolution y = sum_k W_k X A_k (+ bias) (+ residual), optional ReLU.

x (N, C_in, T, V), weight (K, C_out, C_in), adjacency (K, V, V), bias (C_out,):
    y[n, o, t, w] = sum_k sum_c sum_v weight[k, o, c] * x[n, c, t, v] * adjacency[k, v, w] + bias[o]
then y += residual (same shape as y) and y = relu(y) when asked. Equivalently one GEMM with inner
dimension K * C_in: stack X A_k over k and multiply by [W_1 ... W_K].

`graph_conv_reference` is plain PyTorch (the tests' reference); `graph_conv_triton` the fused Triton kernel
(CUDA, or CPU under TRITON_INTERPRET=1); `graph_conv` dispatches on the device. `graph_conv_ncvt` is the
CPU fast path on joints-major activations (N, C_in, V, T), stored channels-last: plain matrix products.
`fold_batchnorm` folds an eval-mode BatchNorm that follows the convolution into weight and bias.
"""

from __future__ import annotations

import os

import torch

_ACTIVATIONS = (None, "relu")
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_V = 64


def _check(name, x, weight, adjacency, bias, residual, activation, ncvt=False):
    """Raise ValueError naming the argument at fault; ncvt: x and residual are (N, C, V, T)."""
    args = (("x", x), ("weight", weight), ("adjacency", adjacency), ("bias", bias), ("residual", residual))
    for arg, t in args:
        if t is None and arg in ("bias", "residual"):
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: {arg} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name}: {arg} must be a floating-point tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: {arg} is on {t.device} but x is on {x.device}")
    if x.dim() != 4:
        layout = "(N, C_in, V, T)" if ncvt else "(N, C_in, T, V)"
        raise ValueError(f"{name}: x must be {layout}, got shape {tuple(x.shape)}")
    n, c_in, t, v = x.shape
    if ncvt:
        n, c_in, v, t = x.shape
    if weight.dim() != 3 or weight.shape[2] != c_in:
        raise ValueError(f"{name}: weight must be (K, C_out, C_in={c_in}), got shape {tuple(weight.shape)}")
    k, c_out = weight.shape[0], weight.shape[1]
    if tuple(adjacency.shape) != (k, v, v):
        got = tuple(adjacency.shape)
        raise ValueError(f"{name}: adjacency must be (K={k}, V={v}, V={v}), got shape {got}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"{name}: bias must be (C_out={c_out},), got shape {tuple(bias.shape)}")
    shape = (n, c_out, v, t) if ncvt else (n, c_out, t, v)
    if residual is not None and tuple(residual.shape) != shape:
        raise ValueError(f"{name}: residual must have the output shape {shape}, got {tuple(residual.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{name}: activation must be None or 'relu', got {activation!r}")


def graph_conv_reference(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    """Plain PyTorch graph convolution (the tests' reference, and the frames-major path on a CPU when
    SKELCL_GRAPH_CONV=reference); mixed dtypes promote."""
    _check("graph_conv_reference", x, weight, adjacency, bias, residual, activation)
    dtype = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), adjacency.dtype)
    x, weight, adjacency = x.to(dtype), weight.to(dtype), adjacency.to(dtype)
    # Joints first (V x V per k), then channels over K * C_in, both as einsum: the fastest of the
    # orderings in bench/bench_graph_conv.py on CPU (2.7x the next at layer 1, 3 -> 64 channels).
    xa = torch.einsum("nctv,kvw->nkctw", x, adjacency)
    y = torch.einsum("okc,nkctw->notw", weight.permute(1, 0, 2), xa)
    if bias is not None:
        y = y + bias.to(dtype).view(1, -1, 1, 1)
    if residual is not None:
        y = y + residual
    if activation == "relu":
        y = torch.relu(y)
    return y


class _GraphConvNVTC(torch.autograd.Function):
    """Graph convolution on physical (N, V, T, C) storage, every product one matrix multiply:

        xa_k[n] = A_k^T x[n]            (V x V) @ (V, T*C) per sample, k = 1..K
        y = bias + sum_k xa_k W_k^T     (N*V*T, C_in) @ (C_in, C_out), accumulated in place

    backward: dW_k = dy^T xa_k; dxa_k = dy W_k; dx[n] = sum_k A_k dxa_k[n]; dA_k = sum_n x[n] dxa_k[n]^T."""

    @staticmethod
    def forward(ctx, x, weight, adjacency, bias):
        n, v, t, c = x.shape
        k = weight.shape[0]
        x3 = x.view(n, v, t * c)
        xa = x.new_empty(k, n, v, t * c)
        for i in range(k):
            torch.matmul(adjacency[i].t(), x3, out=xa[i])
        rows = xa.view(k, n * v * t, c)
        y = torch.mm(rows[0], weight[0].t()) if bias is None else torch.addmm(bias, rows[0], weight[0].t())
        for i in range(1, k):
            y.addmm_(rows[i], weight[i].t())
        ctx.save_for_backward(x, weight, adjacency, xa)
        ctx.has_bias = bias is not None
        return y.view(n, v, t, -1)

    @staticmethod
    def backward(ctx, gy):
        x, weight, adjacency, xa = ctx.saved_tensors
        n, v, t, c = x.shape
        k, c_out = weight.shape[:2]
        g2 = gy.contiguous().view(n * v * t, c_out)
        need_x, need_w, need_a, need_b = ctx.needs_input_grad
        gx = gw = ga = gb = None
        rows = xa.view(k, n * v * t, c)
        if need_w:
            gw = torch.stack([torch.mm(g2.t(), rows[i]) for i in range(k)])
        if need_b and ctx.has_bias:
            gb = g2.sum(0)
        if need_x or need_a:
            x3 = x.view(n, v, t * c)
            gx = torch.empty_like(x3) if need_x else None
            ga = []
            for i in range(k):
                gxa = torch.mm(g2, weight[i]).view(n, v, t * c)
                if need_x and i == 0:
                    torch.matmul(adjacency[i], gxa, out=gx)
                elif need_x:  # accumulated by the product itself (beta = 1), no separate addition
                    gx.baddbmm_(adjacency[i].expand(n, v, v), gxa)
                if need_a:
                    ga.append(torch.matmul(x3, gxa.transpose(1, 2)).sum(0))
            gx = gx.view(n, v, t, c) if need_x else None
            ga = torch.stack(ga) if need_a else None
        return gx, gw, ga, gb


def graph_conv_ncvt(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    """Graph convolution on joints-major activations: x (N, C_in, V, T) -> y (N, C_out, V, T), residual
    (N, C_out, V, T); otherwise the contract of graph_conv_reference (y here is its output transposed).

    The CPU fast path of the backbone. It computes on (N, V, T, C) storage, where the joint mix is one
    (V x V) matrix product per sample and partition and the channel mix one (N*V*T, C_in) @ (C_in, C_out)
    product per partition, with no copies (_GraphConvNVTC). x in torch.channels_last memory format is that
    storage already; other strides cost one copy. y comes back in channels_last format. Under CPU autocast
    it computes in the autocast dtype (float32 accumulation), else in the promoted dtype of the inputs.
    """
    _check("graph_conv_ncvt", x, weight, adjacency, bias, residual, activation, ncvt=True)
    dtype = _compute_dtype(x, weight, adjacency, residual)
    xp = x.to(dtype).permute(0, 2, 3, 1)
    if not xp.is_contiguous():
        xp = xp.contiguous()
    b = None if bias is None else bias.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        y = _GraphConvNVTC.apply(xp, weight.to(dtype), adjacency.to(dtype), b).permute(0, 3, 1, 2)
    if residual is not None:
        y = y + residual.to(dtype)
    if activation == "relu":
        y = torch.relu(y)
    return y


def _compute_dtype(x, weight, adjacency, residual):
    """The autocast dtype when autocast is on for x's device, else the promoted dtype of the inputs."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    dtype = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), adjacency.dtype)
    return dtype if residual is None else torch.promote_types(dtype, residual.dtype)


def graph_conv_triton(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    """Fused Triton graph convolution; same contract as graph_conv_reference.

    float32 (tf32 dots when torch.backends.cudnn.allow_tf32, as for convolutions), bfloat16 and float16,
    fp32 accumulation; under autocast the inputs are cast to the autocast dtype. Output in the compute
    dtype. Differentiable in x, weight, adjacency, bias and residual; works under torch.compile.
    """
    _check("graph_conv_triton", x, weight, adjacency, bias, residual, activation)
    dtype = _compute_dtype(x, weight, adjacency, residual)
    if dtype not in _TRITON_DTYPES:
        raise ValueError(f"graph_conv_triton: compute dtype {dtype} unsupported (float32, bfloat16, float16)")
    if x.shape[3] > _MAX_V:
        raise ValueError(f"graph_conv_triton: V={x.shape[3]} joints is more than the kernel's {_MAX_V}")
    import skelcl.kernels.graph_conv_kernel as gck  # imports triton (TRITON_INTERPRET is read at import)

    return gck.graph_conv_fused(
        x.to(dtype),
        weight.to(dtype),
        adjacency.to(dtype),
        bias,
        None if residual is None else residual.to(dtype),
        activation == "relu",
    )


def graph_conv(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    """Dispatcher: graph_conv_triton on CUDA tensors (float32 / bfloat16 / float16 compute), the reference
    elsewhere (CPU, float64). SKELCL_GRAPH_CONV=reference in the environment forces the reference."""
    use_triton = (
        x.is_cuda
        and os.environ.get("SKELCL_GRAPH_CONV", "auto") != "reference"
        and x.dim() == 4
        and x.shape[3] <= _MAX_V
        and _compute_dtype(x, weight, adjacency, residual) in _TRITON_DTYPES
    )
    fn = graph_conv_triton if use_triton else graph_conv_reference
    return fn(x, weight, adjacency, bias, residual=residual, activation=activation)


def fold_batchnorm(weight, bias, bn):
    """(weight', bias') such that graph_conv(x, weight', A, bias') == bn(graph_conv(x, weight, A, bias))
    for a BatchNorm in eval mode (running statistics): with s = gamma / sqrt(running_var + eps),
    weight'[k, o, c] = s[o] * weight[k, o, c] and bias'[o] = s[o] * (bias[o] - running_mean[o]) + beta[o].

    bn: a torch.nn.BatchNorm1d/2d with running statistics over C_out channels; bias may be None.
    Returns new tensors (no gradient link to the BatchNorm); compute in float32 or better.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "fold_batchnorm: the BatchNorm has no running statistics (track_running_stats=False)"
        )
    c_out = weight.shape[1]
    if bn.running_mean.shape != (c_out,):
        got = bn.running_mean.shape[0]
        raise ValueError(f"fold_batchnorm: the BatchNorm has {got} channels, weight has C_out={c_out}")
    with torch.no_grad():
        dtype = torch.promote_types(weight.dtype, torch.float32)
        s = (bn.running_var.to(dtype) + bn.eps).rsqrt()
        if bn.weight is not None:
            s = s * bn.weight.to(dtype)
        b = torch.zeros(c_out, dtype=dtype, device=weight.device) if bias is None else bias.to(dtype)
        b = s * (b - bn.running_mean.to(dtype))
        if bn.bias is not None:
            b = b + bn.bias.to(dtype)
        w = weight.to(dtype) * s.view(1, -1, 1)
    return w.to(weight.dtype), b.to(weight.dtype if bias is None else bias.dtype)
