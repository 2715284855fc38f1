"""One directory per run: resolved config, log, metrics, TensorBoard events, checkpoints.

    RUN/config.yaml      the resolved config (what actually ran)
    RUN/log.txt          the log lines (also printed)
    RUN/metrics.json     {"history": [one dict per epoch], "final": {...}}  (rewritten atomically)
    RUN/tb/              TensorBoard events
    RUN/last.pt          checkpoint after the latest completed epoch (skelcl.train.checkpoint)

Only rank 0 writes; other ranks get a RunDir whose methods do nothing.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from skelcl.errors import SkelclError
from skelcl.train import config as config_mod
from skelcl.train.distributed import is_main


class RunDir:
    def __init__(self, path, cfg: dict, resume: bool = False, quiet: bool = False):
        self.path = Path(path)
        self.main = is_main()
        self.quiet = quiet
        self._tb = None
        if resume:
            if not (self.path / "last.pt").is_file():
                raise SkelclError(f"--resume {self.path}: no checkpoint last.pt there to continue from")
        elif (self.path / "config.yaml").exists():
            raise SkelclError(f"run directory {self.path} already holds a run; use --resume or another --out")
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.path / "config.yaml", config_mod.dump(cfg))

    @property
    def checkpoint(self) -> Path:
        return self.path / "last.pt"

    def log(self, msg: str) -> None:
        if not self.main:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if not self.quiet:
            tqdm.write(line)
        with open(self.path / "log.txt", "a") as f:
            f.write(line + "\n")

    def scalars(self, tag: str, values: dict, step: int) -> None:
        if not self.main:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(f"{tag}/{k}", v, step)
        self._tb.flush()

    def write_metrics(self, metrics: dict) -> None:
        if self.main:
            _write_atomic(self.path / "metrics.json", json.dumps(metrics, indent=2))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_optimizer(params, t: dict):
    name = t["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(params, lr=t["lr"], weight_decay=t["weight_decay"])
    raise SkelclError(f"train.optimizer must be 'sgd' or 'adam', got {name!r}")


def make_scheduler(optimizer, t: dict):
    """Per-epoch LambdaLR: "cosine" (to 0 at train.epochs), "step" (x gamma per milestone), "constant"."""
    name, epochs = t["schedule"], int(t["epochs"])
    if name == "cosine":
        fn = lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / max(1, epochs)))
    elif name == "step":
        ms, gamma = list(t["milestones"]), float(t["gamma"])
        fn = lambda e: gamma ** sum(e >= m for m in ms)
    elif name == "constant":
        fn = lambda e: 1.0
    else:
        raise SkelclError(f"train.schedule must be 'cosine', 'step' or 'constant', got {name!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op context on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def resume_state(run, kind: str, model, optimizer, scheduler, device) -> tuple[int, list]:
    """Restore model, optimizer, scheduler and RNG state from `run`'s checkpoint of the given kind
    ("pretrain" or "localizer"); returns (epochs done, metric history)."""
    from skelcl.train import checkpoint

    st = checkpoint.load(run.checkpoint, map_location=device)
    if st.get("kind") != kind:
        raise SkelclError(f"{run.checkpoint} is a {st.get('kind')!r} checkpoint, expected {kind!r}")
    model.load_state_dict(st["model"])
    optimizer.load_state_dict(st["optimizer"])
    scheduler.load_state_dict(st["scheduler"])
    set_rng_state(st["rng"])
    start = int(st["epoch"])
    run.log(f"resumed from {run.checkpoint} after epoch {start}")
    return start, list(st["history"])


def set_threads(n: int) -> None:
    if n and n > 0:
        torch.set_num_threads(int(n))


def compile_modules(enabled: bool, *modules) -> None:
    """train.compile: torch.compile each module in place (nn.Module.compile, so parameter names and
    checkpoints are unchanged); the graph convolution and InfoNCE custom ops compile with them. The first
    steps take longer (compilation); on a CPU the inductor backend needs a C++ compiler."""
    if not enabled:
        return
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")) and not torch.cuda.is_available():
        raise SkelclError("train.compile: torch.compile on the CPU needs a C++ compiler (g++) on PATH")
    for m in modules:
        m.compile()
