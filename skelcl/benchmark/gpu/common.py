"""What every section of the GPU check shares: the run (C), its records and time budget (Bench), the H100
targets, and time_row, which times one forward + backward step into one record.

Records are a flat JSON list of dicts, each with at least name, unit and value (value may be null), plus
fields such as section, ok, error and t_s (seconds since process start). The file is rewritten after every
record, so a run cut short still leaves everything measured until then.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

from skelcl.benchmark import timing
from skelcl.benchmark.record import write_json

ROOT = Path(__file__).resolve().parents[3]
H100 = dict(bf16_TFLOPs=timing.H100_BF16_TFLOPS, copy_TBps=timing.H100_COPY_TBPS)
TAU = 0.07
D = 128
BUDGET_S = 400.0
TARGETS = {  # H100 targets, compared with H100-equivalent times
    ("infonce", "inbatch_65536", "bf16"): dict(ms=14.0, extra_MiB=128.0),
    ("infonce", "inbatch_65536", "fp32"): dict(ms=55.0),
    ("infonce", "locked_65536", "bf16"): dict(ms=7.0),
    ("infonce", "queue_4096+1048576", "bf16"): dict(ms=6.0, extra_MiB=1024.0),
    ("graph_conv", "unit_N256_C256_T64", "bf16"): dict(ms=3.5),
    ("backbone", "backbone_N256_T64", "bf16"): dict(samples_per_s=8400.0),
}

# The run: args, bench, dev ("cuda", or "cpu" for --small), small, scale (card / H100 factors by bound),
# peers, compile_backend and the kernel modules (infonce, it, gck, graph_conv_reference, graph_conv_triton).
C = SimpleNamespace()


class BudgetExceeded(BaseException):
    """Raised by the hard time budget (SIGALRM, or a check between steps). A BaseException, so the
    `except Exception` around single rows and checks does not swallow it."""


class Bench:
    """One run: records (written to `out` after each one), the device ("cuda", or "cpu" for --small),
    the process start time t0 and the hard time budget in seconds from t0."""

    def __init__(self, out, device, budget_s, t0, small=False):
        self.out = None if out is None else Path(out)
        self.device, self.budget_s, self.small, self.t0 = device, budget_s, small, t0
        self.records: list[dict] = []
        self.section = None
        self._alarm = False

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
        if self.out is not None:
            write_json(self.out, self.records)

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

    def sync(self):
        timing.sync(self.device)

    def bench_ms(self, fn, rep_ms=200):
        """Median milliseconds (one call under --small: a dry run, not a figure)."""
        return timing.median_ms(fn, self.device, rep_ms)

    def peak_extra_mib(self, fn):
        return timing.peak_extra_mib(fn, self.device)

    def free(self):
        timing.free(self.device)


def emit(name, unit, value, **kw):
    return C.bench.emit(name, unit, value, **kw)


def rel(a, b):
    """Relative error ||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def tag_of(dtype):
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def unit_rows(rows, dtype, d=D):
    """rows random unit vectors of dimension d on the run's device, in dtype."""
    import torch
    import torch.nn.functional as F

    return F.normalize(torch.randn(rows, d, device=C.dev), dim=1).to(dtype)


def graph(v=25, k=3, seed=0):
    """A sparse, row-normalized (k, v, v) adjacency with self-loops, on the run's device."""
    import torch

    g = torch.Generator().manual_seed(seed)
    a = torch.rand(k, v, v, generator=g) * (torch.rand(k, v, v, generator=g) < 0.15) + torch.eye(v)
    return (a / a.sum(1, keepdim=True)).to(C.dev)


class Poisoned:
    """Kernel outputs start as NaN inside the block (an unwritten element shows); overrides restored."""

    def __init__(self, module, **override):
        self.module, self.override = module, override

    def __enter__(self):
        import torch

        self.saved = (self.module._empty, dict(self.module.OVERRIDE))
        self.module._empty = lambda shape, **kw: torch.full(shape, float("nan"), **kw)
        self.module.OVERRIDE.update(self.override)

    def __exit__(self, *exc):
        self.module._empty = self.saved[0]
        self.module.OVERRIDE.clear()
        self.module.OVERRIDE.update(self.saved[1])


def import_kernels():
    """(infonce, infonce_triton, graph_conv_kernel) modules of skelcl.kernels. kernels/ is installed as
    skelcl.kernels; in a checkout where it is not, map it from the working tree by hand."""
    try:
        import skelcl.kernels  # noqa: F401
    except ImportError:
        import skelcl

        kernels = ROOT / "kernels"
        spec = importlib.util.spec_from_file_location(
            "skelcl.kernels", kernels / "__init__.py", submodule_search_locations=[str(kernels)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["skelcl.kernels"] = package
        skelcl.kernels = package
        spec.loader.exec_module(package)
    import skelcl.kernels.graph_conv_kernel as gck
    import skelcl.kernels.infonce as infonce
    import skelcl.kernels.infonce_triton as it

    return infonce, it, gck


def with_target(rec, family, case, dtype, impl):
    """rec with the H100 target of its row and whether the H100-equivalent time and the memory meet it."""
    target = TARGETS.get((family, case, dtype))
    if not target or impl != "triton":
        return rec
    rec["target"] = target
    if "ms" in target and rec["h100_equiv_ms"] is not None:
        rec["meets_time_target"] = rec["h100_equiv_ms"] <= target["ms"]
    if "samples_per_s" in target and "h100_equiv_samples_per_s" in rec:
        rec["meets_time_target"] = rec["h100_equiv_samples_per_s"] >= target["samples_per_s"]
    if "extra_MiB" in target:
        peak = rec["peak_extra_MiB"]
        rec["meets_memory_target"] = None if peak is None else peak <= target["extra_MiB"]
    return rec


def time_row(family, case, dtype, impl, step, *, bound="compute", zero=None, fwd=None, rep_ms=200,
             flops=None, samples=None, **extra):  # fmt: skip
    """Time one forward + backward `step` (median ms), peak extra memory, the H100-equivalent and the
    target verdicts; one record. `zero` clears gradients before the memory measurement."""
    C.bench.check_budget(5)
    rec = dict(family=family, case=case, dtype=dtype, impl=impl, bound=bound, **extra)
    ms = None
    try:
        t = time.perf_counter()
        step()
        C.bench.sync()
        first_s = time.perf_counter() - t
        rec["first_call_s"] = round(first_s, 3)
        # --small: the first call is the timing (a dry run of the code path, not a figure)
        ms = first_s * 1e3 if C.small else C.bench.bench_ms(step, rep_ms)
        if zero is not None:
            zero()
        rec["peak_extra_MiB"] = C.bench.peak_extra_mib(step)
        if fwd is not None:
            rec["fwd_ms"] = C.bench.bench_ms(fwd, rep_ms)
        scale = C.scale.get(bound)
        rec["h100_equiv_ms"] = None if scale is None else ms * scale
        if flops:
            rec["TFLOPs"] = flops / ms / 1e9
        if samples:
            rec["samples_per_s"] = samples / ms * 1e3
            if scale:
                rec["h100_equiv_samples_per_s"] = samples / (ms * scale) * 1e3
        with_target(rec, family, case, dtype, impl)
    except BudgetExceeded:
        raise
    except Exception as e:  # noqa: BLE001
        oom = "OutOfMemory" in repr(e)
        rec["error"] = repr(e)[-300:] if oom else traceback.format_exc()[-1200:]
    C.bench.free()
    return emit(f"{family}/{case}/{dtype}/{impl}", "ms", ms, **rec)


def derive_speedups():
    """speedup_vs_eager on every timed row that has an eager row of the same family, case and dtype."""
    eager = {}
    for r in C.bench.records:
        if r.get("unit") == "ms" and r.get("impl") == "eager" and r.get("value"):
            eager[(r["family"], r["case"], r["dtype"])] = r["value"]
    for r in C.bench.records:
        key = (r.get("family"), r.get("case"), r.get("dtype"))
        if r.get("unit") == "ms" and r.get("value") and key in eager:
            r["speedup_vs_eager"] = eager[key] / r["value"]
    C.bench.save()
