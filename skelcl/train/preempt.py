"""Stopping a run at any moment: step checkpoints, SIGTERM / SIGUSR1, and the exit code that says so.

StepClock decides after every optimizer step whether to write a mid-epoch checkpoint (every
train.ckpt_every_steps steps, and/or every train.ckpt_every_minutes minutes of wall clock) and whether to
stop (a SIGTERM or SIGUSR1 reached this process). Under torch.distributed the decision is one small
all-reduce per step, so every rank saves and stops after the same step even when only one rank got the
signal or the clocks differ.

On the first SIGTERM / SIGUSR1 the run finishes its current step, writes one checkpoint (last.pt, atomic),
logs how to continue and exits with EXIT_PREEMPTED (143, the shell's code for "terminated by SIGTERM",
also after SIGUSR1). A second signal exits at once with the same code: checkpoint writes are atomic
(skelcl.train.checkpoint), so last.pt is then the previous checkpoint or the new one, never a partial file.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time

import torch

from skelcl.errors import SkelclError
from skelcl.train.distributed import barrier, world_info

EXIT_PREEMPTED = 143
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[int] = []  # signals received since the active StepClock started


class Preempted(SystemExit):
    """Raised (all ranks) after the checkpoint of a stop requested by a signal; exits the process with
    EXIT_PREEMPTED."""

    def __init__(self, message: str):
        super().__init__(EXIT_PREEMPTED)
        self.message = message


def _handler(signum, frame):
    if _received:  # the second signal: no more waiting for the step to end
        print(f"skelcl: second {signal.Signals(signum).name}: exiting now (last.pt holds the previous "
              "checkpoint)", file=sys.stderr, flush=True)  # fmt: skip
        os._exit(EXIT_PREEMPTED)
    _received.append(signum)
    print(f"skelcl: {signal.Signals(signum).name} received: finishing the current step, then a checkpoint "
          "and exit (a second signal exits at once)", file=sys.stderr, flush=True)  # fmt: skip


def restores_signals(fn):
    """Decorator: the SIGTERM / SIGUSR1 handlers are put back as they were when fn returns or raises."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        saved = {s: signal.getsignal(s) for s in SIGNALS}
        try:
            return fn(*args, **kwargs)
        finally:
            for s, h in saved.items():
                signal.signal(s, h)
            _received.clear()

    return inner


class StepClock:
    """When to checkpoint mid-epoch and whether to stop (see the module docstring).

    every_steps 0 and every_minutes 0: no mid-epoch checkpoints (signals still stop the run). Installs the
    signal handlers (main thread only); use inside a function decorated with restores_signals."""

    def __init__(self, every_steps: int = 0, every_minutes: float = 0.0):
        self.every_steps = int(every_steps or 0)
        self.every_s = float(every_minutes or 0) * 60.0
        self.last_save = time.monotonic()
        _received.clear()
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, _handler)

    def saved(self) -> None:
        """Call after a checkpoint is written (the minutes count from there)."""
        self.last_save = time.monotonic()

    def check(self, steps_done: int) -> tuple[bool, bool]:
        """(save, stop) after the optimizer step that makes steps_done steps of the run; all ranks must
        call it after every step (one all-reduce under torch.distributed)."""
        save = bool(self.every_steps and steps_done % self.every_steps == 0)
        if self.every_s and time.monotonic() - self.last_save >= self.every_s:
            save = True
        stop = bool(_received)
        if world_info()[1] > 1:
            import torch.distributed as dist

            dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
            flags = torch.tensor([float(save), float(stop)], device=dev)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            save, stop = bool(flags[0] > 0), bool(flags[1] > 0)
        return save or stop, stop

    def after_step(self, run, steps_done: int, epoch: int, step: int, steps_in_epoch: int, state, partial):
        """After optimizer step `step` (0-based) of an epoch of steps_in_epoch steps, the run's steps_done-th:
        a mid-epoch checkpoint of state(epoch, step + 1, partial) when one is due, then Preempted raised if
        a signal came. On the epoch's last step nothing is written here (the epoch's own checkpoint
        follows); returns whether to stop after it."""
        save, stop = self.check(steps_done)
        if step + 1 == steps_in_epoch:
            return stop
        if save:
            run.save_step_checkpoint(state(epoch, step + 1, partial), epoch, step + 1)
            self.saved()
            barrier()
            if stop:
                raise preempted(run)
        return False

    @staticmethod
    def signal_name() -> str:
        return signal.Signals(_received[0]).name if _received else "a signal on another rank"


def check_sequences(run, n: int) -> None:
    """A resumed run must see the data it was trained on (the data order is a permutation of it)."""
    saved = getattr(run, "resume_sequences", None)
    if saved is not None and int(saved) != n:
        raise SkelclError(f"--resume {run.path}: its data now holds {n} sequences and the run was trained on "
                          f"{saved}: the data at data.path changed; resume with the same data")  # fmt: skip


def preempted(run) -> Preempted:
    """Log where the run stopped and how to continue; the Preempted exit to raise."""
    msg = (f"stopped by {StepClock.signal_name()}: checkpoint at {run.saved_text()} in {run.checkpoint}; "
           f"continue with the same command plus --resume auto, or skelcl {run.command} --resume "
           f"{run.path} (exit code {EXIT_PREEMPTED})")  # fmt: skip
    run.log(msg)
    run.close()
    return Preempted(msg)


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """Lines "key: old -> new" for every leaf key whose value differs ("missing" where a side lacks it)."""
    a, b = _flat(old), _flat(new)
    keys = [*a, *(k for k in b if k not in a)]
    return [f"{k}: {a.get(k, 'missing')} -> {b.get(k, 'missing')}" for k in keys
            if a.get(k, "missing") != b.get(k, "missing")]  # fmt: skip


def auto_resume(out, cfg: dict) -> str:
    """What `--resume auto` does with run folder `out` for the resolved config cfg: "new" (no checkpoint
    there: a new run, the folder is reused), "resume" (an unfinished run of the same config) or "finished"
    (its metrics.json is written). A run of another config raises SkelclError with the keys that differ."""
    from pathlib import Path

    import yaml

    p = Path(out)
    if not (p / "last.pt").is_file():
        return "new"
    if not (p / "config.yaml").is_file():
        raise SkelclError(f"--resume auto: {p} holds last.pt but no config.yaml (not a skelcl run folder)")
    saved = yaml.safe_load((p / "config.yaml").read_text())  # as RunDir wrote it (config.dump)
    diff = config_diff(saved if isinstance(saved, dict) else {}, cfg)
    if diff:
        raise SkelclError(
            f"--resume auto: {p} holds a run of another config ({'; '.join(diff)}); give the command line "
            "of that run, another --out, or --overwrite to replace it"
        )
    return "finished" if (p / "metrics.json").is_file() else "resume"


__all__ = [
    "EXIT_PREEMPTED", "Preempted", "StepClock", "auto_resume", "check_sequences", "config_diff", "preempted",
    "restores_signals",
]  # fmt: skip
