"""Timing shared by the GPU suite of `skelcl bench` and the GPU check (skelcl.benchmark.gpu): median
milliseconds from triton's do_bench, the peak memory of one call, and the card's ceilings (a large bf16 GEMM
and a device-to-device copy) that turn a time on this card into an H100-equivalent time.

torch and triton are imported inside the functions only, so a caller may import this module before it sets
TRITON_INTERPRET=1.
"""

from __future__ import annotations

import gc
import time

H100_BF16_TFLOPS = 694.0  # measured on one H100 80GB HBM3 (torch 2.11), large bf16 matmul
H100_COPY_TBPS = 3.0  # device-to-device copy on the same card, read + write counted


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def sync(device) -> None:
    if is_cuda(device):
        import torch

        torch.cuda.synchronize()


def median_ms(fn, device="cuda", rep_ms=200, warmup_ms=25) -> float:
    """Median milliseconds of fn: triton's do_bench on CUDA (warm-up warmup_ms, rep_ms of repeats); on the
    CPU one timed call (a dry run of the code path, not a figure)."""
    if is_cuda(device):
        from triton.testing import do_bench

        return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def peak_extra_mib(fn, device="cuda"):
    """Peak CUDA memory of one call of fn above what was allocated before it, in MiB (None off CUDA)."""
    if not is_cuda(device):
        return None
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def free(device) -> None:
    """Collect garbage and hand cached CUDA blocks back, between rows."""
    gc.collect()
    if is_cuda(device):
        import torch

        torch.cuda.empty_cache()


def measure_ceilings(device="cuda", n=8192, copy_bytes=2 << 30, rep_ms=200) -> dict:
    """This card's bf16 GEMM rate (TFLOP/s, n^3) and device-to-device copy rate (TB/s, read + write of
    copy_bytes), medians of median_ms, with the times they came from."""
    import torch

    def gemm() -> float:  # the operands are freed when this returns
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        return median_ms(lambda: a @ b, device, rep_ms)

    def copy() -> float:
        src = torch.empty(copy_bytes, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        return median_ms(lambda: dst.copy_(src), device, rep_ms, warmup_ms=10)

    gemm_ms = gemm()
    copy_ms = copy()
    free(device)
    return {"bf16_tflops": 2 * n**3 / gemm_ms / 1e9, "copy_tbps": 2 * copy_bytes / copy_ms / 1e9,
            "gemm_n": n, "gemm_ms": gemm_ms, "copy_bytes": copy_bytes, "copy_ms": copy_ms}  # fmt: skip


def h100_scale(ceilings: dict, bound: str = "compute") -> float:
    """Factor that turns a time on this card into an H100-equivalent time (rates: divide by it)."""
    if bound == "memory":
        return ceilings["copy_tbps"] / H100_COPY_TBPS
    return ceilings["bf16_tflops"] / H100_BF16_TFLOPS
