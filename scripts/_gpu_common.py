"""Shared parts of the GPU check-and-benchmark scripts (gpu_bench_*.py): the record file, the time budget,
timing and peak-memory measurement, the section loop and the import of kernels/ from the working tree.

Nothing here imports torch or triton at module level (only inside the functions that need torch), so a
script may import this module before it sets TRITON_INTERPRET=1 for --small.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path


class Bench:
    """One run: the records (each appended to the JSON file at `out` as soon as it is emitted), the device
    ("cuda", or "cpu" under --small), the start time and the time budget in seconds."""

    def __init__(self, out, device, budget_s, small=False):
        self.out = Path(out)
        self.device = device
        self.budget_s = budget_s
        self.small = small
        self.t0 = time.time()
        self.records: list[dict] = []

    def emit(self, **kw):
        """Stamp the record with seconds since the start, print it and rewrite the JSON file atomically."""
        kw["t_s"] = round(time.time() - self.t0, 1)
        self.records.append(kw)
        print(json.dumps(kw), flush=True)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=1))
        tmp.replace(self.out)

    def time_left(self):
        """Seconds of the budget left."""
        return self.budget_s - (time.time() - self.t0)

    def sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def bench_ms(self, fn, rep_ms=200):
        """Median milliseconds: triton do_bench on the GPU; perf_counter on the CPU, one run under --small,
        else the median of 3."""
        if self.device == "cuda":
            from triton.testing import do_bench

            return do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")
        times = []
        for _ in range(1 if self.small else 3):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return sorted(times)[len(times) // 2]

    def peak_extra_mib(self, fn):
        """Peak CUDA memory of one call of fn above what was allocated before it, in MiB (None on CPU)."""
        if self.device != "cuda":
            return None
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    def free(self):
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def run_sections(self, parts):
        """Call each section in order; one that starts with under 20 s of budget left is recorded as skipped,
        one that raises is recorded with its traceback. Ends with the "done" record."""
        for part in parts:
            if self.time_left() < 20:
                self.emit(what="section", name=part.__name__, error="skipped: time budget")
                continue
            try:
                part()
            except Exception:  # noqa: BLE001
                self.emit(what="section", name=part.__name__, error=traceback.format_exc()[-1500:])
        self.emit(what="done", wall_s=round(time.time() - self.t0, 1))


def rel(a, b):
    """Relative error ||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def kernels_from_tree(root, run_init=True):
    """Import skelcl with `root` first on sys.path and map root/kernels to skelcl.kernels (the installed
    layout). With run_init=False kernels/__init__.py is not run (an empty package whose submodules import
    one by one), so a problem in another kernel's module cannot stop the caller. Returns the package."""
    kernels = Path(root) / "kernels"
    sys.path.insert(0, str(root))
    import skelcl

    if run_init:
        spec = importlib.util.spec_from_file_location(
            "skelcl.kernels", kernels / "__init__.py", submodule_search_locations=[str(kernels)]
        )
        package = importlib.util.module_from_spec(spec)
    else:
        spec = importlib.util.spec_from_loader("skelcl.kernels", loader=None, is_package=True)
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(kernels)]
    sys.modules["skelcl.kernels"] = package
    skelcl.kernels = package
    if run_init:
        spec.loader.exec_module(package)
    return package
