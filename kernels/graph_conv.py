"""Spatial graph convolution y = sum_k W_k X A_k (+ bias) (+ residual), optional ReLU.

x (N, C_in, T, V), weight (K, C_out, C_in), adjacency (K, V, V), bias (C_out,):
    y[n, o, t, w] = sum_k sum_c sum_v weight[k, o, c] * x[n, c, t, v] * adjacency[k, v, w] + bias[o]
"""

from __future__ import annotations

import torch


def graph_conv_reference(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    """Plain PyTorch graph convolution (the CPU path and the tests' reference)."""
    if activation not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    # Aggregate over joints first (cheap: V x V per k), then mix channels with one matmul over K * C_in.
    xa = torch.einsum("nctv,kvw->nkctw", x, adjacency)
    n, k, c, t, w = xa.shape
    y = torch.einsum("okc,nkctw->notw", weight.permute(1, 0, 2), xa)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    if residual is not None:
        y = y + residual
    if activation == "relu":
        y = torch.relu(y)
    return y


def graph_conv(x, weight, adjacency, bias=None, *, residual=None, activation=None):
    """Dispatcher: the Triton kernel on CUDA tensors (once available), the reference elsewhere."""
    return graph_conv_reference(x, weight, adjacency, bias, residual=residual, activation=activation)
