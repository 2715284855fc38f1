"""The pytest-benchmark module behind `skelcl bench`: one test per case, variants interleaved by round.

pytest-benchmark runs the rounds (warm-up rounds first) and writes its JSON; one round calls every variant
of the case once, starting from a different variant each round (A B C, B C A, C A B, ...) so that load
from other processes and cache effects hit all variants alike. The per-variant seconds of every round go
into the benchmark's extra_info and `summarize` turns them into records (skelcl.benchmark.record):
value = median over rounds, spread = interquartile range, ratio = median over rounds of the per-round
plain / variant time.

Run directly (what `skelcl bench` does in a subprocess):

    SKELCL_BENCH_QUICK=1 SKELCL_BENCH_CASES=augment,infonce python -m pytest -p no:cacheprovider \
        skelcl/benchmark/suite.py --benchmark-json out.json
Environment: SKELCL_BENCH_CASES (comma list, default every case of the suite), SKELCL_BENCH_SUITE
(cpu | gpu), SKELCL_BENCH_QUICK (1: CI sizes), SKELCL_BENCH_DEVICE (cpu | cuda), SKELCL_BENCH_WORKDIR
(data files), SKELCL_BENCH_ROUNDS (overrides every case's rounds), SKELCL_MALLOC (default: leave glibc's
allocator settings alone; otherwise tuned as the skelcl commands tune them, skelcl.train.malloc).
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest

from skelcl.benchmark import cases
from skelcl.benchmark.record import make_record
from skelcl.train.malloc import keep_freed_memory

keep_freed_memory()  # cases run in-process as the skelcl commands run them (SKELCL_MALLOC=default: not)


def _selected():
    suite = os.environ.get("SKELCL_BENCH_SUITE", "cpu")
    names = os.environ.get("SKELCL_BENCH_CASES", "")
    default = cases.GPU_CASES if suite == "gpu" else cases.CPU_CASES
    return [n.strip() for n in names.split(",") if n.strip()] or list(default)


@pytest.mark.parametrize("name", _selected())
def test_case(benchmark, name, tmp_path_factory):
    quick = os.environ.get("SKELCL_BENCH_QUICK", "0") == "1"
    device = os.environ.get("SKELCL_BENCH_DEVICE", "cpu")
    workdir = os.environ.get("SKELCL_BENCH_WORKDIR") or tmp_path_factory.mktemp("data")
    if quick:  # one intra-op thread: tiny shapes on a busy CI machine run far faster than with two
        import torch

        torch.set_num_threads(1)
    case = cases.build(name, quick, device, workdir)
    rounds = int(os.environ.get("SKELCL_BENCH_ROUNDS", 0)) or (2 if quick else case.rounds)
    warmup = 0 if quick else case.warmup  # quick: the harness is checked, figures do not count
    labels = list(case.variants)
    seconds = {k: [] for k in labels}
    phases = {k: [] for k in labels}
    counter = itertools.count()
    sync = case.sync or (lambda: None)

    def one_round():
        r = next(counter) % len(labels)
        for label in labels[r:] + labels[:r]:
            sync()
            t0 = time.perf_counter()
            out = case.variants[label]()
            sync()
            seconds[label].append(time.perf_counter() - t0)
            timed = isinstance(out, dict) and all(isinstance(v, float) for v in out.values())
            phases[label].append(out if timed else None)  # a step's seconds by phase

    try:
        benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmup, iterations=1)
    finally:
        if case.close is not None:
            case.close()
    if benchmark.disabled:  # --benchmark-disable (the test suite's default): one call, no figures
        return
    skip = warmup  # the warm-up rounds' times are not figures
    benchmark.extra_info["skelcl"] = {
        "case": case.name,
        "unit": case.unit,
        "plain": case.plain,
        "items": case.items,
        "params": case.params,
        "suite": "gpu" if device.startswith("cuda") else "cpu",
        "seconds": {k: v[skip:] for k, v in seconds.items()},
        "phases": {k: v[skip:] for k, v in phases.items() if any(p is not None for p in v)},
    }
    assert all(len(v) == rounds for v in benchmark.extra_info["skelcl"]["seconds"].values())


def _iqr(x) -> float:
    q75, q25 = np.percentile(x, [75, 25])
    return float(q75 - q25)


def summarize(info: dict) -> list[dict]:
    """Records (skelcl.benchmark.record schema) of one case from its extra_info["skelcl"]: one per variant,
    and for variants that report phases one per phase (milliseconds per step, "<case>/<variant>/<phase>";
    GiB for a "..._gib" peak memory) plus the share of the step spent on data
    ("<case>/<variant>/data_share", percent) and, for steps that time their snippet loss, its share of the
    step's compute ("<case>/<variant>/snippet_share", percent: the snippet_* phases over forward + backward
    + optimizer)."""
    case, unit, suite = info["case"], info["unit"], info["suite"]
    secs = {k: np.asarray(v, dtype=float) for k, v in info["seconds"].items()}
    rate = unit.endswith("/s")

    def values(label):
        t = secs[label]
        return info["items"].get(label, 1) / t if rate else t * 1e3

    out = []
    for label, t in secs.items():
        v = values(label)
        plain = info["plain"].get(label)
        params = dict(info["params"])
        rec = dict(spread=_iqr(v), rounds=len(t), suite=suite, params=params)
        if plain is not None:
            # per round; per item for rates (the plain path may handle fewer items per call)
            ratio = float(np.median(v / values(plain) if rate else secs[plain] / t))
            rec.update(plain=f"{case}/{plain}", plain_value=float(np.median(values(plain))), ratio=ratio)
        out.append(make_record(f"{case}/{label}", unit, float(np.median(v)), **rec))
        steps = [p for p in info.get("phases", {}).get(label, []) if p is not None]
        if steps:
            keys = list(steps[0])
            per_step = t / max(1, info["params"].get("steps", 1))
            for key in keys:  # seconds per step, or a peak memory in GiB ("..._gib")
                gib = key.endswith("_gib")
                ms = np.array([p[key] for p in steps]) * (1 if gib else 1e3)
                out.append(
                    make_record(
                        f"{case}/{label}/{key}",
                        "GiB" if gib else "ms",
                        float(np.median(ms)),
                        spread=_iqr(ms),
                        rounds=len(ms),
                        suite=suite,
                        params=params,
                    )
                )
            if "snippet_forward" in keys:
                snip = ("snippet_forward", "snippet_infonce_backward", "snippet_queue")
                part = np.array([sum(p[k] for k in snip) for p in steps])
                compute = np.array([p["forward"] + p["backward"] + p["optimizer"] for p in steps])
                share = part / compute * 100
                out.append(
                    make_record(
                        f"{case}/{label}/snippet_share",
                        "%",
                        float(np.median(share)),
                        spread=_iqr(share),
                        higher_is_better=False,
                        rounds=len(share),
                        suite=suite,
                        params=params,
                    )
                )
            if "data" in keys:
                share = np.array([p["data"] for p in steps]) / per_step * 100
                out.append(
                    make_record(
                        f"{case}/{label}/data_share",
                        "%",
                        float(np.median(share)),
                        spread=_iqr(share),
                        higher_is_better=False,
                        rounds=len(share),
                        suite=suite,
                        params=params,
                    )
                )
    return out
