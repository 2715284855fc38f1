"""The GPU check's plan, command line and run: the sections in order under one hard time budget, then a short
table. Section modules are imported only when the check runs (after --small has set TRITON_INTERPRET=1)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from skelcl.benchmark.gpu.common import BUDGET_S, ROOT, Bench, BudgetExceeded, C, derive_speedups, emit

# (section, estimated GPU seconds, what it does): --plan prints these; they must sum to <= 420. Each section
# is the function run() of the module of its name ("compile" lives in compiled.py).
PLAN = [
    ("setup", 15, "imports, CUDA init, versions"),
    ("ceilings", 5, "(a) bf16 GEMM 8192^3, 4 GiB device copy"),
    ("check_infonce", 40, "(b) 65,536^2 bf16 sampled float64 rows; long queue; ragged groups"),
    ("check_graph_conv", 45, "(b) unit shape bf16 vs float64; bf16 backbone vs plain fp32"),
    ("headline", 30, "(c) Triton rows: InfoNCE x3, GCN unit, backbone, no-op backbone"),
    ("eager", 25, "(d) eager rows on the same card, speed-ups"),
    ("sweeps", 70, "(e) graph conv dW / fwd tiles, InfoNCE tiles and splits"),
    ("fp32", 45, "float32 rows (tf32; 3xtf32 InfoNCE)"),
    ("compile", 60, "torch.compile rows (backbone last)"),
    ("extra_shapes", 25, "InfoNCE 16,384^2, 4,096 + 65,536, 262,144^2; unit N 64 C 64"),
    ("peers", 40, "Inf-CL, memeff from .whl/"),
]
MODULES = {name: name for name, _, _ in PLAN} | {"compile": "compiled"}


def parse_args(argv, description=None):
    p = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="JSON file to write (default: gpu_check.json in $OUT or .)")
    p.add_argument("--small", action="store_true", help="CPU dry run: TRITON_INTERPRET=1, tiny shapes")
    p.add_argument("--plan", action="store_true", help="print the sections and estimated GPU seconds")
    p.add_argument("--budget-s", type=float, default=None, help=f"hard budget (default {BUDGET_S:.0f})")
    p.add_argument("--sections", default=None, help="comma-separated subset of the sections (in order)")
    p.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder holding the peer wheels")
    p.add_argument("--site", default="/tmp/gpu_check_peers", help="where the peer wheels are installed")
    return p.parse_args(argv)


def print_plan():
    total = 0
    print(f"{'section':18s} {'est. GPU s':>10s}  what")
    for name, est, what in PLAN:
        total += est
        print(f"{name:18s} {est:>10d}  {what}")
    print(f"{'total':18s} {total:>10d}  (hard budget {BUDGET_S:.0f} s from process start; 7 min = 420 s)")
    return total


def _row_note(r):
    if r.get("error"):
        return r["error"].strip().splitlines()[-1][:60]
    notes = []
    if "meets_time_target" in r:
        notes.append(f"time {'met' if r['meets_time_target'] else 'MISSED'}")
    if "meets_memory_target" in r:
        mem = {True: "met", False: "MISSED", None: "not measured"}[r["meets_memory_target"]]
        notes.append(f"memory {mem}")
    return ", ".join(notes)


def print_table():
    recs = C.bench.records
    checks = [r for r in recs if r["name"].startswith("check/") and "ok" in r]
    verdict = {True: "ok", False: "FAIL", None: "-"}
    print("\nchecks: " + ", ".join(f"{r['name'][6:]}={verdict[r.get('ok')]}" for r in checks))
    for r in recs:
        if r.get("error") and r.get("unit") == "section":
            print(f"section {r['value']}: {r['error'].strip().splitlines()[-1][:150]}")
    ceil = [r for r in recs if r["name"].startswith("ceiling/")]
    if ceil:
        parts = [f"{r['name'][8:]} {r['value']:.3g} {r['unit']} (x{r['ratio']:.2f} H100)" for r in ceil]
        print("ceilings: " + ", ".join(parts))
    line = "{:36s} {:5s} {:15s} {:>9s} {:>10s} {:>8s} {:>9s}  {}"
    head = ("family/case", "dtype", "impl", "ms", "H100-eq ms", "vs eager", "extra MiB", "verdict")
    print("\n" + line.format(*head))
    cols = ("value", ".3f"), ("h100_equiv_ms", ".3f"), ("speedup_vs_eager", ".2f"), ("peak_extra_MiB", ".0f")
    for r in recs:
        if r.get("unit") != "ms" or "family" not in r:
            continue
        cells = [format(r[key], fmt) if r.get(key) is not None else "-" for key, fmt in cols]
        print(line.format(r["family"] + "/" + r["case"], r["dtype"], r["impl"], *cells, _row_note(r)))
    done = [r for r in recs if r["name"] == "done"]
    if done:
        print(f"\nwall {done[-1]['value']:.0f} s from process start; JSON: {C.bench.out}")


def run_sections(wanted):
    """Each section in plan order (setup always): a section that raises is recorded and the next one runs;
    once the budget is spent, the rest are recorded as skipped."""
    stopped = False
    for name, _, _ in PLAN:
        if wanted is not None and name not in wanted and name != "setup":
            continue
        C.bench.section = name
        if stopped or C.bench.time_left() < 5:
            emit(f"section/{name}", "section", name, error="skipped: time budget")
            continue
        t = time.time()
        try:
            importlib.import_module(f"skelcl.benchmark.gpu.{MODULES[name]}").run()
            emit(f"section/{name}", "s", round(time.time() - t, 1))
        except BudgetExceeded as e:
            stopped = True
            emit(f"section/{name}", "section", name, error=f"stopped: {e}")
        except Exception:  # noqa: BLE001
            emit(f"section/{name}", "section", name, error=traceback.format_exc()[-1500:])


def main(argv=None, t0=None, description=None):
    """Run the check; returns the exit code (0 unless a correctness check failed). The budget counts from
    t0 (default: now)."""
    args = parse_args(argv, description)
    if args.plan:
        print_plan()
        return 0
    if args.small:
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton
    out = args.out or os.path.join(os.environ.get("OUT", "."), "gpu_check.json")
    import torch

    C.args, C.small = args, args.small
    C.dev = "cpu" if args.small else "cuda"
    if C.dev == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (use --small for the CPU dry run)", file=sys.stderr)
        return 2
    budget = args.budget_s if args.budget_s is not None else BUDGET_S
    C.bench = Bench(out, C.dev, budget, time.time() if t0 is None else t0, small=args.small)
    C.scale, C.peers = {}, {}
    C.compile_backend = "aot_eager" if args.small else "inductor"
    from skelcl.benchmark.gpu.common import import_kernels

    C.infonce, C.it, C.gck = import_kernels()
    from skelcl.kernels import graph_conv_reference, graph_conv_triton

    C.graph_conv_reference, C.graph_conv_triton = graph_conv_reference, graph_conv_triton
    wanted = None if args.sections is None else {s.strip() for s in args.sections.split(",")}
    C.bench.arm()
    try:
        run_sections(wanted)
    finally:
        C.bench.disarm()
        C.bench.section = None
        try:
            derive_speedups()
        except Exception:  # noqa: BLE001
            pass
        emit("done", "s", round(time.time() - C.bench.t0, 1))
    print_table()
    failed = [r for r in C.bench.records if r["name"].startswith("check/") and r.get("ok") is False]
    return 1 if failed else 0
