"""Augmentation throughput, side by side in one run: NumPy per-sample reference, numba (all threads and
one), DALI (CPU) when importable: the `augment` case of `skelcl bench` (skelcl/benchmark/cases.py).

The full pretraining recipe ("aimclr": query, key and extreme view, 150 frames each, from 300-frame
sequences with 2 bodies); one call = sample() + apply() for a batch, as the pretraining loader does it.
Variants run in interleaved rounds; figures are medians over rounds, ratios the median of per-round
ratios. Writes the skelcl-bench JSON schema and prints the table.

    python bench/bench_augment.py [--rounds 9] [--quick] [--out bench/results/augment_cpu.json]
    (the same as: skelcl bench --case augment --out FILE)
"""

from __future__ import annotations

import argparse
import os

from skelcl.benchmark import runner


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=0, help="timed rounds (default: the case's, 9)")
    ap.add_argument("--quick", action="store_true", help="CI sizes")
    ap.add_argument("--out", default=None, help="result file (default: none)")
    args = ap.parse_args(argv)
    if args.rounds:
        os.environ["SKELCL_BENCH_ROUNDS"] = str(args.rounds)
    res = runner.run("cpu", quick=args.quick, out=args.out, names=["augment"])
    print(runner.table(res))
    return res


if __name__ == "__main__":
    main()
