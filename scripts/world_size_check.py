"""Same answer at any world size: N ranks x batch b against one process with batch N * b.

    python scripts/world_size_check.py --work /tmp/wsc          # the figures of docs/scale.md

Pretrains the same small model on the same synthetic data (CPU, gloo) as 1 process with batch N*b for
several train.seed values, and as N ranks (torchrun) with batch b per rank for seed 0, and prints the
per-epoch loss curves. Both take the same sequences in each step (rank r takes positions r, r + N, ... of
the same epoch permutation), average the same gradients (DDP) and fill the queues with the same keys, but
not the same augmentation draws (step_rng(seed, epoch, step, rank)) or BatchNorm statistics (per rank:
over b samples instead of N*b). So the curves are not equal; the check is that the N-rank curve differs
from the 1-process seed-0 curve by no more than 1-process curves of different seeds differ from each
other (the run-to-run spread the seed alone gives). Exit code 1 when it does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

COMMON = ["data.bodies=1", "model.width=0.125", "train.num_threads=1", "train.lr=0.05",
          "pretrain.queue_size=32", "pretrain.snippet_queue_size=128", "pretrain.momentum=0.9",
          "train.schedule=constant", "train.warmup=0"]  # fmt: skip


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(data, out, ranks: int, batch: int, seed: int, epochs: int) -> list[float]:
    args = ["pretrain", "--config", "pretrain_skeletonclr", "--data", str(data), "--out", str(out),
            "--quiet", *COMMON, f"train.batch_size={batch}", f"train.seed={seed}",
            f"train.epochs={epochs}"]  # fmt: skip
    if ranks == 1:
        cmd = [sys.executable, "-m", "skelcl", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc-per-node", str(ranks), "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port()}", "-m", "skelcl", *args]  # fmt: skip
    with open(f"{out}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ).returncode
    if rc != 0:
        raise SystemExit(f"{out}: rc {rc}; see {out}.log")
    return [h["loss"] for h in json.loads((Path(out) / "metrics.json").read_text())["history"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/skelcl_world_size_check")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=6, help="b, per rank")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3, help="1-process runs (train.seed 0, 1, ...)")
    ap.add_argument("--sequences", type=int, default=64)
    args = ap.parse_args(argv)
    from skelcl.data.synthetic import SynthConfig, generate_cache

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = SynthConfig(length=(60, 90), num_subjects=8, test_every=4)
    data = generate_cache(work / "data", args.sequences, 3, config=cfg, progress=False)
    n, b = args.ranks, args.batch
    single = {s: run(data, work / f"one_seed{s}", 1, n * b, s, args.epochs) for s in range(args.seeds)}
    multi = run(data, work / f"ranks{n}", n, b, 0, args.epochs)
    diff = max(abs(x - y) for x, y in zip(multi, single[0]))
    spread = max(abs(x - y) for s in single for t in single if s < t for x, y in zip(single[s], single[t]))
    out = {"ranks": n, "batch_per_rank": b, "epochs": args.epochs,
           "one_process_loss": {f"seed {s}": [round(v, 4) for v in c] for s, c in single.items()},
           f"{n}_ranks_loss_seed0": [round(v, 4) for v in multi],
           "max_abs_diff_vs_seed0": round(diff, 4),
           "max_abs_diff_between_seeds": round(spread, 4)}  # fmt: skip
    print(json.dumps(out, indent=2))
    (work / "result.json").write_text(json.dumps(out, indent=2))
    return 0 if diff <= spread else 1


if __name__ == "__main__":
    sys.exit(main())
