"""One pretraining step, phase by phase, for each base method with and without the snippet loss.

A step as skelcl.train.pretrain runs it (skelcl.benchmark.cases.PretrainVariant): batch from the store
-> augment.sample + augment.apply (numba) -> MoCo forward (query encoder, momentum update, key encoder,
losses through skelcl.kernels.info_nce) -> backward -> SGD step -> queues take the keys. Phases are timed
with perf_counter (with a CUDA synchronize on the GPU). Variants run in interleaved rounds (A, B, C, ...,
A, B, C, ...) so load from other processes hits them alike; figures are medians over rounds, and each
variant's cost is also given as the median per-round ratio to SkeletonCLR without the snippet loss. On
the CPU only those ratios carry over to other machines; absolute times count on a named GPU.

    python bench/bench_pretrain_step.py [--width 0.25] [--batch 32] [--rounds 5] [--device cpu]
        [--out bench/results/pretrain_step_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from skelcl.benchmark.cases import PretrainVariant
from skelcl.data import open_cache
from skelcl.data.synthetic import generate_cache
from skelcl.train.data import SequenceStore

DESIGNED = dict(match="feature", exclude_same_video=True)  # the design's snippet matching
VARIANTS = {  # name: (MoCo keyword arguments, augmentation recipe)
    "skeletonclr": (dict(method="skeletonclr", snippet=False), "skeletonclr"),
    "skeletonclr+snippet": (dict(method="skeletonclr", snippet=True, **DESIGNED), "skeletonclr"),
    "skeletonclr+snippet(aligned)": (
        dict(method="skeletonclr", snippet=True, match="aligned", exclude_same_video=True),
        "skeletonclr",
    ),
    "aimclr": (dict(method="aimclr", snippet=False), "aimclr"),
    "aimclr+snippet": (dict(method="aimclr", snippet=True, **DESIGNED), "aimclr"),
}
PHASES = ("data", "forward", "backward", "optimizer")


class Variant:
    """A named variant: the `skelcl bench` pretraining step (skelcl.benchmark.cases.PretrainVariant)."""

    def __init__(self, name, args, store, device):
        kw, recipe = VARIANTS[name]
        s = dict(width=args.width, batch=args.batch, queue=args.queue, squeue=args.snippet_queue)
        self.name = name
        self.run = PretrainVariant(store, s, device, prefetch=False, recipe=recipe, **kw)

    def step(self) -> dict:
        t = self.run()
        t["total"] = sum(t.values())
        return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=float, default=0.25, help="backbone channel multiplier (1.0: 64..256)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant and round")
    ap.add_argument("--queue", type=int, default=4096)
    ap.add_argument("--snippet-queue", type=int, default=16384)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="bench/results/pretrain_step_cpu.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    with tempfile.TemporaryDirectory() as tmp:
        data = generate_cache(Path(tmp) / "synth", max(64, args.batch), 0, progress=False)
        store = SequenceStore(open_cache(data), bodies=2)
        for i in range(len(store)):
            store.get(i)  # normalization happens once, as in training after the first epoch
        variants = [Variant(n, args, store, device) for n in names]
        for v in variants:  # warm-up: numba compilation, allocator, queues filled
            for _ in range(3):
                v.step()
        rounds = {n: [] for n in names}
        for _ in range(args.rounds):
            for v in variants:
                times = [v.step() for _ in range(args.steps)]
                rounds[v.name].append({k: float(np.mean([t[k] for t in times])) for k in times[0]})

    base = names[0]
    result = {
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0],
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "ratio_base": base,
        "variants": {},
    }  # fmt: skip
    for n in names:
        med = {k: float(np.median([r[k] for r in rounds[n]])) * 1e3 for k in (*PHASES, "total")}
        ratio = float(np.median([a["total"] / b["total"] for a, b in zip(rounds[n], rounds[base])]))
        result["variants"][n] = {
            "ms": med,
            "ratio_to_base": ratio,
            "sequences_per_s": args.batch / med["total"] * 1e3,
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    dev = result["machine"]["device"]
    print(
        f"one pretraining step, batch {args.batch}, width {args.width}, {dev}, "
        f"medians of {args.rounds} rounds (ms)"
    )
    print(
        f"{'variant':30s} "
        + " ".join(f"{p:>9s}" for p in (*PHASES, "total"))
        + f" {'seq/s':>7s} {'x base':>7s}"
    )
    for n, r in result["variants"].items():
        ms = r["ms"]
        cells = " ".join(f"{ms[p]:9.1f}" for p in (*PHASES, "total"))
        print(f"{n:30s} {cells} {r['sequences_per_s']:7.1f} {r['ratio_to_base']:7.2f}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
