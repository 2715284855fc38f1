"""GCN backbones: ST-GCN and AGCN (learned adjacency offset), 10 layers on the NTU-25 graph.

Input x (B, T, M, 25, 3) float32 (the augmentation output layout). Bodies are folded into the batch:
(B*M, 3, T, V). Layer l (1-based) of the stack:

    h = ReLU(BN(graph_conv(x, W, A_l)))                 spatial: y = sum_k W_k x A_k (skelcl.kernels)
    y = ReLU(BN(TemporalConv_9x1(h), stride s_l) + R(x)) temporal, residual R (identity / 1x1 conv / none)

A_l = A (3 partitions) for ST-GCN; A_l = A + B_l with B_l a learned (3, 25, 25) offset (init 0) for AGCN.
Channels 64,64,64,64,128,128,128,256,256,256 times `width`; stride 2 at the 1-based layers in `strides`
((2, 5, 8) as in the authors' code: 8x downsampling; (5, 8): ST-GCN's usual 4x).
A temporal conv of kernel 9, padding 4, stride 2 maps T -> ceil(T / 2).

Two layouts compute the same function with the same parameters. On CUDA activations are frames-major
(N, C, T, V) and the spatial step is skelcl.kernels.graph_conv (the Triton kernel). On a CPU they are
joints-major (N, C, V, T) stored channels-last (as (N, V, T, C)): the graph convolution becomes plain matrix
products (graph_conv_ncvt), the temporal conv a (1 x 9) conv and the BatchNorms run on channels-last
storage, the CPU fast path. SKELCL_GRAPH_CONV=reference forces frames-major,
SKELCL_GRAPH_CONV=ncvt joints-major (see joints_major).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from skelcl.data.skeleton import spatial_adjacency
from skelcl.errors import SkelclError
from skelcl.kernels import graph_conv, graph_conv_ncvt

BASE_CHANNELS = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)
KINDS = ("stgcn", "agcn")


def layer_channels(width: float) -> list[int]:
    """Channels of the 10 layers for a width multiplier (at least 4 each)."""
    return [max(4, int(round(c * width))) for c in BASE_CHANNELS]


def layer_lengths(T: int, strides) -> list[int]:
    """Temporal length after each of the 10 layers for an input of T frames."""
    out = []
    for layer in range(1, 11):
        if layer in strides:
            T = (T + 1) // 2
        out.append(T)
    return out


class GCNLayer(nn.Module):
    """One spatial graph conv + temporal conv block (see the module docstring)."""

    def __init__(self, c_in: int, c_out: int, stride: int, adaptive: bool, residual: bool, kernel: int = 9):
        super().__init__()
        K = 3
        self.weight = nn.Parameter(torch.empty(K, c_out, c_in))
        nn.init.kaiming_uniform_(self.weight.view(K * c_out, c_in), a=5**0.5)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.offset = nn.Parameter(torch.zeros(K, 25, 25)) if adaptive else None
        self.bn_s = nn.BatchNorm2d(c_out)
        self.tconv = nn.Conv2d(c_out, c_out, (kernel, 1), stride=(stride, 1), padding=(kernel // 2, 0))
        self.bn_t = nn.BatchNorm2d(c_out)
        if not residual:
            self.res = None
        elif c_in == c_out and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=(stride, 1)), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """Frames-major: x (N, C_in, T, V) -> (N, C_out, T', V)."""
        a = adjacency if self.offset is None else adjacency + self.offset
        h = graph_conv(x, self.weight, a.to(x.dtype), self.bias)
        h = F.relu(self.bn_s(h))
        h = self.bn_t(self.tconv(h))
        if self.res is not None:
            h = h + self.res(x)
        return F.relu(h)

    def forward_ncvt(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """Joints-major (the CPU path): x (N, C_in, V, T) -> (N, C_out, V, T'); the same parameters, with the
        temporal kernels (C, C, 9, 1) used transposed as (C, C, 1, 9)."""
        a = adjacency if self.offset is None else adjacency + self.offset
        h = graph_conv_ncvt(x, self.weight, a.to(x.dtype), self.bias)
        h = F.relu_(self.bn_s(h))  # in place: BatchNorm's backward does not read its output
        tc = self.tconv
        stride, pad = (1, tc.stride[0]), (0, tc.padding[0])
        h = self.bn_t(F.conv2d(h, tc.weight.transpose(2, 3), tc.bias, stride=stride, padding=pad))
        if isinstance(self.res, nn.Identity):
            h = _add(h, x)
        elif self.res is not None:
            # the 1x1 conv as a matrix product on the (N, V, T, C) storage: oneDNN's 1x1 weight-gradient
            # kernel crashed (SIGSEGV) on channels-last input with one thread (torch 2.13, AVX-512)
            conv, bn = self.res
            xs = x.permute(0, 2, 3, 1)[:, :, :: tc.stride[0]]
            r = F.linear(xs, conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)
            h = _add(h, bn(r))
        return F.relu_(h)


def _add(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """h + r, in place into h (a BatchNorm output no backward reads) unless r's dtype would promote it
    (float32 residual onto a bf16 h under CPU autocast)."""
    return h.add_(r) if torch.promote_types(h.dtype, r.dtype) == h.dtype else h + r


def joints_major(x: torch.Tensor) -> bool:
    """Whether the backbone runs joints-major on x. SKELCL_GRAPH_CONV: "auto" (default) joints-major on a
    CPU, frames-major on CUDA; "ncvt" joints-major on any device; anything else ("reference", ...)
    frames-major through skelcl.kernels.graph_conv."""
    mode = os.environ.get("SKELCL_GRAPH_CONV", "auto")
    return mode == "ncvt" or (mode == "auto" and not x.is_cuda)


class Backbone(nn.Module):
    """10-layer ST-GCN / AGCN. forward(x (B,T,M,25,3), taps=()) -> (final (B, C, T_10, V) mean over bodies,
    {layer: (B, C_l, T_l) mean over bodies and joints for layer in taps}). Joints-major on a CPU, frames-major
    on CUDA (see the module docstring); both layouts give the same outputs and gradients."""

    def __init__(self, kind: str = "stgcn", width: float = 1.0, strides=(2, 5, 8), in_channels: int = 3):
        super().__init__()
        if kind not in KINDS:
            raise SkelclError(f"model.backbone must be one of {', '.join(KINDS)}, got {kind!r}")
        strides = tuple(int(s) for s in strides)
        if any(not 2 <= s <= 10 for s in strides) or len(set(strides)) != len(strides):
            raise SkelclError(f"model.strides must be distinct layers in 2..10, got {list(strides)}")
        if width <= 0:
            raise SkelclError(f"model.width must be > 0, got {width}")
        self.kind, self.width, self.strides = kind, float(width), strides
        self.channels = layer_channels(width)
        self.register_buffer("adjacency", torch.as_tensor(spatial_adjacency(), dtype=torch.float32))
        self.data_bn = nn.BatchNorm1d(in_channels * 25)
        layers, c_prev = [], in_channels
        for i, c in enumerate(self.channels):
            layer = i + 1
            stride = 2 if layer in strides else 1
            layers.append(GCNLayer(c_prev, c, stride, kind == "agcn", residual=layer > 1))
            c_prev = c
        self.layers = nn.ModuleList(layers)

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor, taps=()):
        if x.dim() != 5 or x.shape[3] != 25 or x.shape[4] != 3:
            raise SkelclError(f"backbone input must be (B, T, M, 25, 3), got {tuple(x.shape)}")
        B, T, M, V, C = x.shape
        ncvt = joints_major(x)
        # (B, T, M, V, C) -> (B*M, V*C, T) for the data BN, then (B*M, C, V, T) or (B*M, C, T, V).
        h = x.permute(0, 2, 3, 4, 1).reshape(B * M, V * C, T)
        h = self.data_bn(h).view(B * M, V, C, T)
        if ncvt:  # stored (B*M, V, T, C): channels-last, the storage graph_conv_ncvt computes on
            h = h.transpose(1, 2).contiguous(memory_format=torch.channels_last)
        else:
            h = h.permute(0, 2, 3, 1).contiguous()
        joint_dim = 2 if ncvt else 3
        tapped = {}
        for i, layer in enumerate(self.layers):
            h = layer.forward_ncvt(h, self.adjacency) if ncvt else layer(h, self.adjacency)
            if i + 1 in taps:
                f = h.mean(dim=joint_dim)
                tapped[i + 1] = f.view(B, M, *f.shape[1:]).mean(dim=1)
        if ncvt:
            h = h.transpose(2, 3)  # (B*M, C, T_10, V)
        out = h.reshape(B, M, *h.shape[1:]).mean(dim=1)
        return out, tapped
