"""Shared parts of scripts/gpu_check.py: the record file, the time budget, timing and peak memory.

Records are a flat JSON list of dicts, each with at least name, unit and value (value may be null), plus
fields such as section, ok, error and t_s (seconds since process start). The file is rewritten after every
record, so a run cut short still leaves everything measured until then.

Nothing here imports torch or triton at module level (only inside the functions that need torch), so a
caller may import this module before it sets TRITON_INTERPRET=1.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path


class BudgetExceeded(BaseException):
    """Raised by the hard time budget (SIGALRM, or a check between steps). A BaseException, so the
    `except Exception` around single rows and checks does not swallow it."""


class Bench:
    """One run: records (written to `out` after each one), the device ("cuda", or "cpu" for --small),
    the process start time t0 and the hard time budget in seconds from t0."""

    def __init__(self, out, device, budget_s, t0, small=False):
        self.out = None if out is None else Path(out)
        self.device = device
        self.budget_s = budget_s
        self.small = small
        self.t0 = t0
        self.records: list[dict] = []
        self.section = None
        self._alarm = False

    # ----------------------------------------------------------------------------------- records
    def emit(self, name, unit, value, **kw):
        """Append {name, unit, value, section, ..., t_s}, print it as one JSON line and rewrite the file."""
        rec = dict(name=name, unit=unit, value=value)
        if self.section is not None:
            rec["section"] = self.section
        rec.update(kw)
        rec["t_s"] = round(time.time() - self.t0, 1)
        self.records.append(rec)
        print(json.dumps(rec, default=str), flush=True)
        self.save()
        return rec

    def save(self):
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=1, default=str))
        tmp.replace(self.out)

    # ------------------------------------------------------------------------------------ budget
    def time_left(self):
        return self.budget_s - (time.time() - self.t0)

    def check_budget(self, need_s=0.0):
        """Raise BudgetExceeded when less than need_s seconds of the budget are left."""
        if self.time_left() < need_s:
            raise BudgetExceeded(f"{self.time_left():.0f} s left, {need_s:.0f} s needed")

    def arm(self):
        """Hard stop: SIGALRM raises BudgetExceeded when the budget runs out, wherever the main thread is
        (after the current CUDA call or compile returns). Only in the main thread of a process."""
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
            return

        def on_alarm(signum, frame):
            raise BudgetExceeded("hard time budget reached")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(0.5, self.time_left()))
        self._alarm = True

    def disarm(self):
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._alarm = False

    # ------------------------------------------------------------------------------------ timing
    def sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def bench_ms(self, fn, rep_ms=200):
        """Median milliseconds: triton's do_bench on the GPU (warm-up 25 ms, rep_ms of repeats); on the CPU
        one call under --small (a dry run, not a figure)."""
        if self.device == "cuda":
            from triton.testing import do_bench

            return do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

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
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def rel(a, b):
    """Relative error ||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))
