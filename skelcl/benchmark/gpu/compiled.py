"""Section compile: torch.compile rows (eager InfoNCE, the graph-convolution unit eager and on the kernel,
the backbone last, on the GPU only)."""

from __future__ import annotations

import torch

from skelcl.benchmark.gpu.common import C, emit
from skelcl.benchmark.gpu.rows import backbone_row, infonce_row, unit_row


def run():

    mm = 64 if C.small else 16384
    infonce_row(f"inbatch_{mm}", mm, mm, 0, True, torch.bfloat16, "eager_compiled")
    unit_row("main", "bf16", "eager_compiled")
    unit_row("main", "bf16", "triton_compiled")
    if C.small:
        emit("compile/backbone", "ms", None, skipped="--small: the backbone is compiled on the GPU only")
        return
    C.bench.check_budget(80)  # about 53 s to compile on an H100
    backbone_row("bf16", "eager_compiled")
