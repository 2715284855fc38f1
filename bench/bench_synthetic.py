"""Synthetic generator throughput: sequences per second on this machine (target: 10,000 sequences of
~300 frames well under a minute on 2 cores).

    python -m pytest bench/bench_synthetic.py --benchmark-enable      # pytest-benchmark table
    python bench/bench_synthetic.py [--sequences 10000]               # one timed run -> bench/results/
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

from skelcl.data.synthetic import generate


def _generate(n, seed=0):
    frames = 0
    for seq in generate(n, seed=seed):
        frames += len(seq.labels)
    return frames


def test_generate_1000(benchmark):
    frames = benchmark.pedantic(_generate, args=(1000,), rounds=3, iterations=1)
    assert frames > 1000 * 200


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, default=10_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "synthetic_cpu.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    frames = _generate(args.sequences)
    seconds = time.perf_counter() - start
    result = {
        "benchmark": "synthetic generator",
        "sequences": args.sequences,
        "frames": frames,
        "seconds": round(seconds, 2),
        "sequences_per_second": round(args.sequences / seconds, 1),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "load_average_before": os.getloadavg()[0],
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
