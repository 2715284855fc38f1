"""Data: skeleton layout, the frame cache, the synthetic generator, normalization and dataset readers."""

from skelcl.data.cache import Cache, CacheWriter, Sequence, open_cache

__all__ = ["Cache", "CacheWriter", "Sequence", "open_cache"]
