"""The GPU check of the Triton kernels (InfoNCE, fused graph convolution): correctness first, then timings,
everything important within 7 minutes from process start on an H100 or H200. `scripts/gpu_check.py` is its
command line; `check.main(argv)` runs it from Python.

common.py           the run's records, budget, timing (skelcl.benchmark.timing), targets, time_row
rows.py             the timed rows: InfoNCE, the graph-convolution unit, the backbone (Triton, eager, ...)
check.py            the plan, the command line, the loop over the sections and the closing table
one module per section, in this order (a section that raises is recorded with its traceback and the next
one runs): setup, ceilings, check_infonce, check_graph_conv, headline, eager, sweeps, fp32, compiled
(section "compile"), extra_shapes, peers.

Nothing here imports torch or triton at module level, so `--small` can set TRITON_INTERPRET=1 first.
"""
