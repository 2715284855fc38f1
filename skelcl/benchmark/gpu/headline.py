"""Section headline: the Triton rows. InfoNCE in-batch, with the keys locked and with a long queue (bf16),
the graph-convolution unit and the backbone (bf16), and the backbone with graph_conv replaced by a no-op of
the same output shape (the share of the backbone the fused op can win)."""

from __future__ import annotations

import torch

from skelcl.benchmark.gpu.rows import backbone_row, infonce_row, infonce_shapes, unit_row


def run():
    torch.set_float32_matmul_precision("high")
    for key in ("inbatch", "locked", "queue"):
        case, m, n, nq, kgrad = infonce_shapes()[key]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "triton")
    unit_row("main", "bf16", "triton")
    backbone_row("bf16", "triton")
    backbone_row("bf16", "noop")
