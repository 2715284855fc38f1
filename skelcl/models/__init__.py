"""Models: GCN backbones, projection heads, U-shaped fusion and localization heads, the MoCo wrapper."""

from skelcl.models.backbone import Backbone, layer_channels, layer_lengths
from skelcl.models.fusion import Localizer, SimpleHead, UFusion
from skelcl.models.heads import GlobalHead, SnippetHead, snippet_features
from skelcl.models.moco import MoCo, RingQueue

__all__ = [
    "Backbone",
    "GlobalHead",
    "Localizer",
    "MoCo",
    "RingQueue",
    "SimpleHead",
    "SnippetHead",
    "UFusion",
    "layer_channels",
    "layer_lengths",
    "snippet_features",
]
