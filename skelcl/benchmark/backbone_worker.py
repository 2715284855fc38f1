"""One backbone configuration in its own process, stepped by the CPU `backbone` benchmark case.

The allocator setting (skelcl.train.malloc) holds for a whole process, so the CPU case runs each variant
in a worker: the parent writes "step" lines and the worker answers "ok" after one forward + backward,
rounds interleaved across workers as for every other case. Started as

    python -m skelcl.benchmark.backbone_worker --path joints --malloc tuned --amp fp32 \
        --batch 32 --frames 150 --bodies 1 --width 0.25 --threads 2 [--strides 2,5,8] [--compile]

path: frames (the frames-major reference graph conv: the eager path before the CPU fast path) or joints
(joints-major, graph_conv_ncvt); malloc: default (glibc as started) or tuned (keep_freed_memory); amp:
fp32 or bf16 (CPU autocast around the forward). The worker prints "ready" after two warm-up steps.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m skelcl.benchmark.backbone_worker")
    p.add_argument("--path", choices=("frames", "joints"), required=True)
    p.add_argument("--malloc", choices=("default", "tuned"), required=True)
    p.add_argument("--amp", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--bodies", type=int, required=True)
    p.add_argument("--width", type=float, required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--strides", default="2,5,8", help="1-based layers with stride 2, comma-separated")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    os.environ["SKELCL_MALLOC"] = "tuned" if a.malloc == "tuned" else "default"
    os.environ["SKELCL_GRAPH_CONV"] = "auto" if a.path == "joints" else "reference"
    from skelcl.train.malloc import keep_freed_memory

    if a.malloc == "tuned" and not keep_freed_memory():
        print("error: could not tune malloc (not glibc?)", file=sys.stderr)
        return 2
    import torch

    from skelcl.models import Backbone

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.frames, a.bodies, 25, 3)
    model = Backbone("stgcn", a.width, tuple(int(v) for v in a.strides.split(",")))
    if a.compile:
        model.compile()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.amp == "bf16"):
            out, _ = model(x)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    serve(step)
    return 0


def serve(step, warmup: int = 2) -> None:
    """The worker side of the stepping protocol: `warmup` steps, "ready", then one step and "ok" for every
    "step" line on stdin, until another line or the end of stdin."""
    for _ in range(warmup):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        step()
        print("ok", flush=True)


if __name__ == "__main__":
    sys.exit(main())
