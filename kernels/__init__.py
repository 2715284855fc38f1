"""Kernels, installed as `skelcl.kernels`.

Each op has a plain PyTorch reference (also the CPU path) and a Triton kernel; the dispatcher picks the
Triton kernel for CUDA tensors and the reference elsewhere.
"""

from skelcl.kernels.graph_conv import graph_conv, graph_conv_reference
from skelcl.kernels.infonce import info_nce, info_nce_reference

__all__ = ["graph_conv", "graph_conv_reference", "info_nce", "info_nce_reference"]
