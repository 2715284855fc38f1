"""Section ceilings: one large bf16 GEMM and one device-to-device copy on this card. Every later time is also
reported as an H100-equivalent: scaled by this card's rate over the H100's (694 TFLOP/s bf16, 3.0 TB/s copy
counting read + write)."""

from __future__ import annotations

from skelcl.benchmark import timing
from skelcl.benchmark.gpu.common import H100, C, emit


def run():
    n, nbytes = (256, 1 << 20) if C.small else (8192, 4 << 30)
    c = timing.measure_ceilings(C.dev, n=n, copy_bytes=nbytes, rep_ms=100)
    C.scale["compute"] = timing.h100_scale(c, "compute")
    C.scale["memory"] = timing.h100_scale(c, "memory")
    emit("ceiling/bf16_gemm", "TFLOP/s", c["bf16_tflops"], n=n, ms=c["gemm_ms"], h100=H100["bf16_TFLOPs"],
         ratio=C.scale["compute"])  # fmt: skip
    emit("ceiling/d2d_copy", "TB/s", c["copy_tbps"], bytes=nbytes, counted="read + write", ms=c["copy_ms"],
         h100=H100["copy_TBps"], ratio=C.scale["memory"])  # fmt: skip
