"""Kernels, installed as `skelcl.kernels`.

Each op has a plain PyTorch reference and a Triton kernel; the dispatcher picks the Triton kernel for
CUDA tensors and the reference elsewhere. The graph convolution also has a CPU fast path on joints-major
activations, graph_conv_ncvt, which the backbone uses on a CPU.
"""

from skelcl.kernels.distributed import gather_with_grad
from skelcl.kernels.graph_conv import (
    fold_batchnorm,
    graph_conv,
    graph_conv_ncvt,
    graph_conv_reference,
    graph_conv_triton,
)
from skelcl.kernels.infonce import info_nce, info_nce_cpu, info_nce_reference, info_nce_triton

__all__ = [
    "fold_batchnorm",
    "gather_with_grad",
    "graph_conv",
    "graph_conv_ncvt",
    "graph_conv_reference",
    "graph_conv_triton",
    "info_nce",
    "info_nce_cpu",
    "info_nce_reference",
    "info_nce_triton",
]
