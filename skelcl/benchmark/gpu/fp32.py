"""Section fp32: float32 rows, with tf32 dots ("high") and, for InfoNCE, torch's default "highest" (the
kernel's 3xtf32 variant)."""

from __future__ import annotations

import torch

from skelcl.benchmark.gpu.common import C, derive_speedups, emit
from skelcl.benchmark.gpu.rows import backbone_row, infonce_row, infonce_shapes, unit_row


def run():

    torch.set_float32_matmul_precision("high")  # tf32 dots (the kernel and eager alike)
    case, m, n, nq, kgrad = infonce_shapes()["inbatch"]
    infonce_row(case, m, n, nq, kgrad, torch.float32, "triton")
    infonce_row(case, m, n, nq, kgrad, torch.float32, "eager")
    torch.set_float32_matmul_precision("highest")  # torch's default: the kernel's 3xtf32 variant
    mm = 64 if C.small else 16384
    infonce_row(f"inbatch_{mm}_highest", mm, mm, 0, True, torch.float32, "triton")
    torch.set_float32_matmul_precision("high")
    unit_row("main", "fp32", "triton")
    unit_row("main", "fp32", "eager")
    if C.small:  # the interpreter is slow; the bf16 backbone row already runs this code path
        emit("backbone/backbone_N256_T64/fp32/triton", "ms", None, skipped="--small")
    else:
        backbone_row("fp32", "triton")
    backbone_row("fp32", "eager")
    derive_speedups()
