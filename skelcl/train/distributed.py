"""torch.distributed helpers (torchrun-compatible; gloo on CPU, nccl on CUDA).

Under torchrun the environment holds RANK / WORLD_SIZE / LOCAL_RANK; setup() initializes the default
process group from it (no-op for a single process). Rank 0 alone writes logs and checkpoints.
shard() gives each rank an equal share of an epoch's permutation (the tail that does not divide evenly is
dropped), so every rank runs the same number of steps.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world_info()[0] == 0


def setup(device: str) -> torch.device:
    """Init the process group when launched by torchrun; returns this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend)
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(device)


def shard(order: np.ndarray) -> np.ndarray:
    rank, world = world_info()
    if world == 1:
        return order
    n = len(order) // world * world
    return order[:n][rank::world]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP wrapper when world size > 1, else the model itself."""
    if world_info()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def barrier() -> None:
    if world_info()[1] > 1:
        dist.barrier()


def launch_local(argv: list[str], nproc: int) -> int:
    """Run `skelcl ARGV` as nproc data-parallel processes on this machine (python -m torch.distributed.run
    --standalone --nproc_per_node nproc -m skelcl ARGV) and wait; returns the launcher's exit code. Each
    process runs with OMP_NUM_THREADS=1 unless the environment sets it (train.num_threads decides the
    torch threads)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "skelcl", *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(cmd, env=env).returncode


def mean_scalar(x: float) -> float:
    """Mean of a float over ranks (for logging)."""
    if world_info()[1] == 1:
        return x
    dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([x], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return float(t) / world_info()[1]
