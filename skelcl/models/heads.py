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


class SnippetHead(nn.Module):
    def __init__(self, in_channels: int, dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, in_channels, 1), nn.ReLU(), nn.Conv1d(in_channels, dim, 1)
        )

    def forward(self, snippets: torch.Tensor) -> torch.Tensor:
        """snippets (B, C, S) -> (B, d, S)."""
        return self.net(snippets)


def snippet_features(feat: torch.Tensor, num_snippets: int) -> torch.Tensor:
    """Backbone output (B, C, T', V) -> (B, C, S): mean over joints, adaptive average pooling over time."""
    return F.adaptive_avg_pool1d(feat.mean(dim=3), num_snippets)
