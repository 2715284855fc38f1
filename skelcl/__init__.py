"""skelcl: snippet-level contrastive pretraining for skeleton-based temporal action localization."""

__version__ = "0.1.0"
