"""Section extra_shapes: InfoNCE 16,384^2, 4,096 x (4,096 + 65,536) and 262,144^2; the graph-convolution unit
at N 64, C 64."""

from __future__ import annotations

import torch

from skelcl.benchmark.gpu.common import C, derive_speedups
from skelcl.benchmark.gpu.rows import infonce_row, unit_row


def run():

    mm = 64 if C.small else 16384
    for impl in ("triton", "eager"):
        infonce_row(f"inbatch_{mm}", mm, mm, 0, True, torch.bfloat16, impl)
    m, nq = (32, 128) if C.small else (4096, 65536)
    for impl in ("triton", "eager"):
        infonce_row(f"queue_{m}+{nq}", m, m, nq, True, torch.bfloat16, impl)
    for impl in ("triton", "eager"):
        unit_row("small", "bf16", impl)
    big = 80 if C.small else 262144
    infonce_row(f"inbatch_{big}", big, big, 0, True, torch.bfloat16, "triton", rep_ms=500)
    derive_speedups()
