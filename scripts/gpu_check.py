#!/usr/bin/env python
"""One GPU check of the Triton kernels (InfoNCE, fused graph convolution): correctness first, then timings,
everything important within 7 minutes from process start on an H100 or H200.

    python scripts/gpu_check.py --out $OUT/gpu_check.json          # on the GPU machine (repository root)
    python scripts/gpu_check.py --plan                             # sections and estimated GPU seconds
    python scripts/gpu_check.py --small --out /tmp/gpu_small.json  # CPU dry run (TRITON_INTERPRET=1)

Sections, in this order (a section that raises is recorded with its traceback and the next one runs):
  setup            versions, card, commit
  ceilings     (a) one large bf16 GEMM and one device-to-device copy: every later time is also reported as
                   an H100-equivalent (anchors: H100 694 TFLOP/s bf16, 3.0 TB/s copy counting read + write)
  check_infonce (b) fresh random inputs, NaN-poisoned outputs: in-batch 65,536^2 bf16 (loss and dq of 256
                   sampled rows in float64, dk of 256 sampled keys), 4,096 x (4,096 + 1,048,576) bf16
                   (loss, dq of sampled rows), a ragged case with positives, groups and queue groups
  check_graph_conv (b) the unit shape N 256, C 256, T 64 in bf16 against float64 (values and all five
                   gradients) and the bf16 backbone against the plain float32 path
  headline     (c) Triton rows: InfoNCE in-batch / keys locked / long queue (bf16), the GCN unit and the
                   backbone (bf16), and the backbone with graph_conv replaced by a no-op of the same output
                   shape (the share of the backbone the fused op can win)
  eager        (d) PyTorch eager on the same card for the same rows; speed-ups over eager
  sweeps       (e) graph conv dW tiles (the 4-warp variant without spills first), its forward tiles, then
                   InfoNCE forward / dk tiles and key splits
  fp32             float32 rows (tf32 dots, and torch's default "highest" for InfoNCE)
  compile          torch.compile rows (eager InfoNCE, the GCN unit, the backbone last)
  extra_shapes     InfoNCE 16,384^2, 4,096 x (4,096 + 65,536), 262,144^2; GCN unit N 64 C 64
  peers            Inf-CL 1.2.1 and memeff 0.3.1 from wheels in .whl/ (absent wheels: recorded, skipped)

Every record is a dict with name, unit, value (plus section, t_s and fields of its own) in one JSON list,
rewritten after each record, so a run cut short still leaves its results. The hard budget (--budget-s,
default 400 s from process start) is checked between steps and enforced by SIGALRM inside long ones; a
short table is printed last. Targets are H100 figures and are compared with the H100-equivalent times.
The sections live in skelcl.benchmark.gpu, one module each; `main(argv)` runs the check from Python
(skelcl bench reuses it). TRITON_INTERPRET must be set before Triton is first imported when --small is
used that way.
"""

import time

T_START = time.time()  # the budget counts from here (before torch is imported)

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # skelcl from this checkout, installed or not
from skelcl.benchmark.gpu import check  # noqa: E402

PLAN, BUDGET_S = check.PLAN, check.BUDGET_S


def main(argv=None):
    """Run the check (see the module docstring); returns the exit code (0 unless a check failed)."""
    return check.main(argv, t0=T_START if argv is None else None, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
