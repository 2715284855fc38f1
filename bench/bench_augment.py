"""Augmentation throughput, side by side in one run: NumPy per-sample reference, numba, DALI (CPU).

The full pretraining recipe ("aimclr": query, key and extreme view, 150 frames each, from 300-frame
sequences with 2 bodies). One step = sample() + apply() for a batch, as the pretraining loader does it.
Backends are timed in interleaved rounds (reference, numba, DALI, reference, ...) so that load from other
processes hits all of them alike; figures are medians over rounds, the ratio is the median of per-round
ratios. Writes JSON (machine, load average, figures) and prints a short table last.

    python bench/bench_augment.py [--batch 128] [--rounds 7] [--out bench/results/augment_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import skelcl.augment as aug


def machine_info() -> dict:
    import numba

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
    }
    try:
        import nvidia.dali

        info["dali"] = nvidia.dali.__version__
    except ImportError:
        info["dali"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def step(backend, x, lengths, rng, recipe):
    import numba

    params = aug.sample(recipe, lengths, rng)
    if backend == "numba-1thread":  # the same kernel on one core, for the per-core figure
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return aug.apply(x, lengths, params, backend="numba")
        finally:
            numba.set_num_threads(threads)
    return aug.apply(x, lengths, params, backend=backend)


def time_step(backend, x, lengths, rng, recipe) -> float:
    t0 = time.perf_counter()
    views = step(backend, x, lengths, rng, recipe)
    dt = time.perf_counter() - t0
    assert len(views) == 3 and views[2].shape == (len(x), 150) + x.shape[2:]
    return dt


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="sequences per step for numba and DALI")
    ap.add_argument("--ref-batch", type=int, default=32, help="sequences per step for the NumPy reference")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--no-dali", action="store_true")
    ap.add_argument("--out", default="bench/results/augment_cpu.json")
    args = ap.parse_args(argv)

    recipe = aug.load_recipe("aimclr")
    rng = np.random.default_rng(0)
    T = args.frames
    x = rng.normal(size=(args.batch, T, 2, 25, 3)).astype(np.float32)
    lengths = np.full(args.batch, T)
    xr, lr = x[: args.ref_batch], lengths[: args.ref_batch]
    backends = {"numpy": (xr, lr), "numba": (x, lengths), "numba-1thread": (x, lengths)}
    if not args.no_dali:
        backends["dali"] = (x, lengths)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    step("numba", x[:4], lengths[:4], rng, recipe)  # compile (or load the cache)
    warm = {"numba_first_call_s": time.perf_counter() - t0}
    for name, (xb, lb) in backends.items():
        t0 = time.perf_counter()
        step(name, xb, lb, rng, recipe)  # DALI: builds the pipeline for this batch size
        warm[f"{name}_warmup_s"] = time.perf_counter() - t0

    per_round = {name: [] for name in backends}
    for _ in range(args.rounds):
        for name, (xb, lb) in backends.items():
            per_round[name].append(len(xb) / time_step(name, xb, lb, rng, recipe))
    load_after = os.getloadavg()

    # sample() alone, for the record
    ts = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        aug.sample(recipe, lengths, rng)
        ts.append(time.perf_counter() - t0)

    rates = {name: float(np.median(v)) for name, v in per_round.items()}
    ratio = {
        f"{name}_over_numpy": float(np.median(np.array(per_round[name]) / np.array(per_round["numpy"])))
        for name in backends
        if name != "numpy"
    }
    result = {
        "what": "sequences/s for sample() + apply() of the aimclr recipe (3 views x 150 frames from 300-frame"
        " sequences, 2 bodies, float32), medians over interleaved rounds",
        "machine": machine_info(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "batch": args.batch,
        "ref_batch": args.ref_batch,
        "rounds": args.rounds,
        "sequences_per_s": rates,
        "ratios": ratio,
        "per_round_sequences_per_s": {k: [round(r, 1) for r in v] for k, v in per_round.items()},
        "sample_ms_per_batch": float(np.median(ts) * 1e3),
        "warmup_s": warm,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {os.cpu_count()} CPUs")
    print(f"{'backend':<14} {'seq/s':>10} {'x numpy':>8}")
    for name, r in rates.items():
        x_ref = ratio.get(f"{name}_over_numpy", 1.0)
        print(f"{name:<14} {r:>10.0f} {x_ref:>8.1f}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
