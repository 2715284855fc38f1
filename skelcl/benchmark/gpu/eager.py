"""Section eager: PyTorch eager on the same card for the headline rows, the speed-ups over it, and the share
of the bf16 backbone step that the graph convolution takes."""

from __future__ import annotations

import torch

from skelcl.benchmark.gpu.common import C, derive_speedups, emit
from skelcl.benchmark.gpu.rows import backbone_row, infonce_row, infonce_shapes, unit_row


def share_of_graph_conv():
    """Share of the bf16 backbone step that the graph convolution takes: 1 - noop / eager."""
    rows = {r["impl"]: r["value"] for r in C.bench.records
            if r.get("family") == "backbone" and r.get("dtype") == "bf16" and r.get("value")}  # fmt: skip
    if "noop" in rows and "eager" in rows:
        share = 1 - rows["noop"] / rows["eager"]
        emit("derived/backbone_bf16/graph_conv_share_of_eager_step", "fraction", share,
             noop_ms=rows["noop"], eager_ms=rows["eager"], triton_ms=rows.get("triton"))  # fmt: skip


def run():
    for key in ("inbatch", "queue"):
        case, m, n, nq, kgrad = infonce_shapes()[key]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "eager")
    unit_row("main", "bf16", "eager")
    backbone_row("bf16", "eager")
    derive_speedups()
    share_of_graph_conv()
