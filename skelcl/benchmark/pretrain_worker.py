"""One rank of a pretraining step in its own process, stepped by the CPU `demo_ranks` benchmark case.

The case compares the demo's step in one process with two threads against the same global batch split over
two gloo ranks with one thread each (half the batch per rank, DDP-averaged gradients, keys gathered into
both ranks' InfoNCE and queues: what `torchrun --nproc_per_node 2 -m skelcl pretrain` runs). A rank prints
"ready" after two warm-up steps; then every "step" line on stdin runs one step and prints "ok". Started as

    python -m skelcl.benchmark.pretrain_worker --workdir DIR --sequences 96 --bodies 1 --width 0.25 \
        --batch 32 --queue 240 --squeue 4560 --threads 2 [--rank 0 --world 2 --port 29611] [--reference]

--batch is per rank; --solo takes a rank's share of the batch without joining a process group (no
gradient all-reduce, no key all-gather); --reference runs the chunked reference InfoNCE
(SKELCL_INFONCE=reference, the path before info_nce_cpu). The method is the demo's: RVTCLR + aligned
snippet loss, own-video rows left out.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m skelcl.benchmark.pretrain_worker")
    p.add_argument("--workdir", required=True, help="folder of the benchmark's synthetic cache")
    p.add_argument("--sequences", type=int, required=True)
    p.add_argument("--bodies", type=int, default=1)
    p.add_argument("--width", type=float, required=True)
    p.add_argument("--batch", type=int, required=True, help="sequences per rank")
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--squeue", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--port", type=int, default=29611)
    p.add_argument("--reference", action="store_true", help="SKELCL_INFONCE=reference")
    p.add_argument("--solo", action="store_true",
                   help="take rank r's share of the batch but join no process group (no gradient all-reduce, "
                   "no key all-gather): the ranks' compute without their communication")  # fmt: skip
    a = p.parse_args(argv)
    if not 0 <= a.rank < a.world:
        p.error(f"--rank {a.rank} is outside 0..{a.world - 1}")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.reference:
        os.environ["SKELCL_INFONCE"] = "reference"
    os.environ["NUMBA_NUM_THREADS"] = str(a.threads)
    import torch
    import torch.distributed as dist

    from skelcl.benchmark.backbone_worker import serve
    from skelcl.benchmark.cases import PretrainVariant, _filled_store

    torch.set_num_threads(a.threads)
    if a.world > 1 and not a.solo:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=a.rank,
                                world_size=a.world)  # fmt: skip
    s = dict(width=a.width, batch=a.batch, bodies=a.bodies, queue=a.queue, squeue=a.squeue)
    store = _filled_store(a.workdir, a.sequences, a.bodies)
    step = PretrainVariant(store, s, "cpu", True, method="rvtclr", exclude_same_video=True, rank=a.rank,
                           world=a.world)  # fmt: skip
    step.fill_queues(a.queue)
    serve(step)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
