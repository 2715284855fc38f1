"""Projection heads for contrastive pretraining.

GlobalHead: MLP C -> C -> d on the globally pooled backbone feature (mean over time and joints);
SnippetHead: Conv1d(C, C, 1) - ReLU - Conv1d(C, d, 1) on the snippet features (B, C, S) -> (B, d, S).
Both return un-normalized embeddings; the losses L2-normalize them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class GlobalHead(nn.Module):
    def __init__(self, in_channels: int, dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_channels, in_channels), nn.ReLU(), nn.Linear(in_channels, dim))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """feat (B, C, T, V) -> (B, d)."""
        return self.net(feat.mean(dim=(2, 3)))


class MotionHead(nn.Module):
    """RVTCLR's motion head: BN - Linear C -> C - BN - ReLU - Linear C -> d on the pooled feature (B, C).

    The input BatchNorm standardizes each channel over the batch: the mean-pooled feature of every view
    shares one large common component (cosine ~0.97 between any two views at init), and a change of
    tempo shifts it only slightly; standardized, that shift becomes a direction the cosine sees."""

    def __init__(self, in_channels: int, dim: int = 128):
        super().__init__()
        c = in_channels
        self.net = nn.Sequential(
            nn.BatchNorm1d(c), nn.Linear(c, c), nn.BatchNorm1d(c), nn.ReLU(), nn.Linear(c, dim)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled (B, C) -> (B, d)."""
        return self.net(pooled)


class SnippetHead(nn.Module):
    def __init__(self, in_channels: int, dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, in_channels, 1), nn.ReLU(), nn.Conv1d(in_channels, dim, 1)
        )

    def forward(self, snippets: torch.Tensor) -> torch.Tensor:
        """snippets (B, C, S) -> (B, d, S)."""
        return self.net(snippets)


def motion_features(feat: torch.Tensor) -> torch.Tensor:
    """Backbone output (B, C, T', V) -> (B, C): mean over time and joints of |f[:, :, t + 1] - f[:, :, t]|,
    how fast each channel changes (zeros when T' < 2). A view at twice the tempo changes faster; the
    mean-pooled feature, which the appearance losses make tempo-invariant, does not show it."""
    if feat.shape[2] < 2:
        return feat.new_zeros(feat.shape[:2])
    return (feat[:, :, 1:] - feat[:, :, :-1]).abs().mean(dim=(2, 3))


def snippet_features(feat: torch.Tensor, num_snippets: int) -> torch.Tensor:
    """Backbone output (B, C, T', V) -> (B, C, S): mean over joints, adaptive average pooling over time."""
    return F.adaptive_avg_pool1d(feat.mean(dim=3), num_snippets)
