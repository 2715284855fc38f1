"""Localization heads: U-shaped nested (U-Net++) fusion of backbone taps, and the simple upsampling head.

UFusion takes L feature maps x_0..x_{L-1} (B, C_i, T_i), highest resolution first (layers 1, 7, 10 of the
backbone: T, T/4, T/8 with strides (2, 5, 8); any lengths work, upsampling goes to the exact length of the
row above). Nodes X[i][j] (row i = level, column j), each a unit Conv1d(k=3)-BN-ReLU with C_i channels:

    X[i][0] = unit(x_i)
    X[i][j] = unit(concat(X[i][0], ..., X[i][j-1], up(X[i+1][j-1])))     for j >= 1, i + j <= L - 1

with up = nearest upsampling to T_i. The top row X[0][0..L-1] is concatenated -> Conv1d(k=1) to 512 - BN -
ReLU -> Linear(512 -> C+1) per frame, then (if T_0 differs from the input length) linear interpolation.

SimpleHead: last feature map (B, C, T') -> Linear(C -> C+1) per step -> linear interpolation to T.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def unit(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU())


class UFusion(nn.Module):
    def __init__(self, channels, num_outputs: int, hidden: int = 512):
        super().__init__()
        self.channels = list(channels)
        L = len(self.channels)
        self.nodes = nn.ModuleDict()
        for i, c in enumerate(self.channels):
            self.nodes[f"{i}_0"] = unit(c, c)
        for j in range(1, L):
            for i in range(L - j):
                c_in = self.channels[i] * j + self.channels[i + 1]
                self.nodes[f"{i}_{j}"] = unit(c_in, self.channels[i])
        self.proj = nn.Sequential(
            nn.Conv1d(self.channels[0] * L, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU()
        )
        self.classifier = nn.Linear(hidden, num_outputs)

    def forward(self, feats, length: int) -> torch.Tensor:
        """feats: list of (B, C_i, T_i), high resolution first -> logits (B, length, C+1)."""
        L = len(self.channels)
        X = {(i, 0): self.nodes[f"{i}_0"](f) for i, f in enumerate(feats)}
        for j in range(1, L):
            for i in range(L - j):
                up = F.interpolate(X[(i + 1, j - 1)], size=X[(i, 0)].shape[-1], mode="nearest")
                X[(i, j)] = self.nodes[f"{i}_{j}"](torch.cat([X[(i, k)] for k in range(j)] + [up], dim=1))
        top = self.proj(torch.cat([X[(0, j)] for j in range(L)], dim=1))  # (B, hidden, T_0)
        if top.shape[-1] != length:
            top = F.interpolate(top, size=length, mode="linear", align_corners=False)
        return self.classifier(top.transpose(1, 2))


class SimpleHead(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_outputs)

    def forward(self, feat: torch.Tensor, length: int) -> torch.Tensor:
        """feat (B, C, T') -> logits (B, length, C+1)."""
        logits = self.classifier(feat.transpose(1, 2)).transpose(1, 2)
        logits = F.interpolate(logits, size=length, mode="linear", align_corners=False)
        return logits.transpose(1, 2)


class Localizer(nn.Module):
    """Backbone + localization head. forward(x (B, T, M, 25, 3)) -> logits (B, T, C+1)."""

    TAPS = (1, 7, 10)

    def __init__(self, backbone: nn.Module, num_outputs: int, head: str = "ufusion"):
        super().__init__()
        self.backbone = backbone
        self.head_kind = head
        if head == "ufusion":
            self.head = UFusion([backbone.channels[t - 1] for t in self.TAPS], num_outputs)
        elif head == "simple":
            self.head = SimpleHead(backbone.out_channels, num_outputs)
        else:
            from skelcl.errors import SkelclError

            raise SkelclError(f"finetune.head must be 'ufusion' or 'simple', got {head!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if self.head_kind == "ufusion":
            _, taps = self.backbone(x, taps=self.TAPS)
            return self.head([taps[t] for t in self.TAPS], T)
        out, _ = self.backbone(x)
        return self.head(out.mean(dim=3), T)
