"""One directory per run: resolved config, log, metrics, TensorBoard events, checkpoints.

    RUN/config.yaml      the resolved config (what actually ran; --resume with train.epochs=N updates it)
    RUN/log.txt          the log lines (also printed): first the run header (run_header), then one line
                         per epoch with an ETA for the whole run, last the final numbers (write_metrics)
    RUN/metrics.json     {"history": [one dict per epoch], "final": {...}}  (rewritten atomically)
    RUN/tb/              TensorBoard events (same scalars as the history; needs the tensorboard package)
    RUN/last.pt          checkpoint after the latest saved epoch (every train.ckpt_every epochs and the last)
    RUN/epoch_N.pt       kept every train.keep_every epochs (0: none)
    RUN/best.pt          fine-tuning: the epoch with the best validation avg mAP (skelcl.train.checkpoint)

A folder is checked before anything is written (check_out): a new or empty folder, or one that holds no
checkpoint (a run that failed or was stopped before its first checkpoint), is used as it is; a folder with
a checkpoint is refused unless --overwrite (its run files are then removed first) or --resume.
A run holds RUN/.lock (lock_run: an exclusive fcntl.flock, taken by rank 0 only, before any run file is
touched, until the run closes): a second process given the same folder is refused with the holder's pid.
The kernel drops the lock when its process ends, so a killed run never blocks its own resume.
Progress bars show only on a terminal and without --quiet; the per-epoch lines are always printed.
Only rank 0 writes; other ranks get a RunDir whose methods do nothing.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from skelcl.errors import SkelclError
from skelcl.progress import show_bars  # the rule for bars, shared with bench, synth and prepare
from skelcl.train import config as config_mod
from skelcl.train.distributed import is_main

try:
    import fcntl
except ImportError:  # not on POSIX: run folders are not locked
    fcntl = None

# Files and folders a run writes (removed from a reused or overwritten folder; nothing else is touched).
RUN_ENTRIES = ("config.yaml", "log.txt", "metrics.json", "tb", "last.pt", "best.pt")

# The RunDir of the run in progress in this process (for the message after Ctrl-C: interrupt_message).
ACTIVE: RunDir | None = None


def checkpoints_in(path) -> list[Path]:
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted([*(p / n for n in ("last.pt", "best.pt") if (p / n).is_file()), *p.glob("epoch_*.pt")])


LOCK_FILE = ".lock"
_LOCKS: dict[str, int] = {}  # run folders this process holds the lock of: resolved path -> open descriptor


def _locks_here() -> bool:
    """Only rank 0 (by torchrun's RANK and by the process group) takes or probes run-folder locks."""
    return int(os.environ.get("RANK", "0") or 0) == 0 and is_main()


def _in_use(p: Path, fd: int) -> SkelclError:
    try:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        pid = ""
    who = f"pid {pid}" if pid.isdigit() else "another process"
    return SkelclError(f"{p} is in use by another skelcl run ({who} holds {p / LOCK_FILE}); wait for it to "
                       "end, or give another --out")  # fmt: skip


def check_unlocked(path) -> None:
    """SkelclError when another process holds the lock of run folder `path`; writes nothing."""
    f = Path(path) / LOCK_FILE
    if fcntl is None or not _locks_here() or not f.is_file() or str(f.resolve()) in _LOCKS:
        return
    fd = os.open(f, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(Path(path), fd) from None
    finally:
        os.close(fd)


def lock_run(path) -> None:
    """Take the lock of run folder `path` (RUN/.lock, which gets this process's pid) until unlock_run or
    the end of the process; SkelclError naming the holder when another process has it. A lock this process
    already holds (a run of it that ended without closing) is taken over. No-op on ranks other than 0."""
    if fcntl is None or not _locks_here():
        return
    f = Path(path) / LOCK_FILE
    unlock_run(path)
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        err = _in_use(Path(path), fd)
        os.close(fd)
        raise err from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[str(f.resolve())] = fd


def unlock_run(path) -> None:
    """Release the lock of run folder `path` if this process holds it (the file stays)."""
    fd = _LOCKS.pop(str((Path(path) / LOCK_FILE).resolve()), None)
    if fd is not None:
        os.close(fd)


def check_out(path, resume: bool = False, overwrite: bool = False) -> None:
    """Raise SkelclError unless `path` can take this run; writes nothing.

    New run: path must not be a file; a folder with a checkpoint needs overwrite. Resume: path must hold
    config.yaml and last.pt. Either: no other process may hold the folder's lock (check_unlocked)."""
    p = Path(path)
    if resume and overwrite:
        raise SkelclError("--resume continues a run and --overwrite replaces it: give one of them")
    if p.exists() and not p.is_dir():
        raise SkelclError(f"{p} is a file, not a run folder")
    check_unlocked(p)
    if resume:
        if not (p / "config.yaml").is_file():
            raise SkelclError(f"--resume {p}: no config.yaml there (not a run folder)")
        if not (p / "last.pt").is_file():
            raise SkelclError(
                f"--resume {p}: no checkpoint last.pt (the run stopped before its first checkpoint): "
                "nothing to resume; run the same command without --resume (the folder is reused)"
            )
        return
    if checkpoints_in(p) and not overwrite:
        raise SkelclError(
            f"{p} already holds a run with checkpoints ({', '.join(c.name for c in checkpoints_in(p))}); "
            f"continue it with --resume {p}, replace it with --overwrite, or give another --out"
        )


def clear_run(path) -> None:
    """Remove the run files (RUN_ENTRIES, epoch_*.pt) of a folder; other files stay."""
    p = Path(path)
    for name in RUN_ENTRIES:
        q = p / name
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q)
        elif q.exists() or q.is_symlink():
            q.unlink()
    for q in p.glob("epoch_*.pt"):
        q.unlink()


def remove_partial_writes(path) -> list[str]:
    """Remove the temporary files of checkpoint writes cut short by a kill (.NAME.pt.XXXX.tmp; the
    checkpoint they were to replace is intact); returns their names."""
    gone = []
    for q in Path(path).glob(".*.pt.*.tmp"):
        q.unlink(missing_ok=True)
        gone.append(q.name)
    return gone


def git_revision(root=None) -> str:
    """The commit of the skelcl checkout this code runs from (root: the repository folder, default the
    one holding this file; "+ uncommitted changes" when tracked files differ from the commit), or
    "unknown" (an installed copy, or git missing)."""
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)
    if not (root / ".git").exists() or not (root / "skelcl" / "train" / "run.py").is_file():
        return "unknown"
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)  # fmt: skip
        if rev.returncode != 0 or not rev.stdout.strip():
            return "unknown"
        st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = " + uncommitted changes" if st.returncode == 0 and st.stdout.strip() else ""
    return rev.stdout.strip() + dirty


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """The command being run: `skelcl ...` as given to skelcl.cli.main, else sys.argv."""
    cli = sys.modules.get("skelcl.cli")
    argv = getattr(cli, "ARGV", None) or sys.argv
    return shlex.join(str(a) for a in argv)


def run_header(device=None, seeds: dict | None = None) -> list[str]:
    """The lines that open log.txt and report.md: command, skelcl version, git revision, torch / triton
    versions, device (a torch.device, "cpu", "cuda" or "auto"; with the GPU name), CPU threads and seeds
    ({"train.seed": 0, ...})."""
    from skelcl import __version__

    if device == "auto":  # as train.device=auto resolves it
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = "not set" if device is None else str(device)
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        dev += f" ({torch.cuda.get_device_name(torch.device(device))})"
    seed_text = ", ".join(f"{k}={v}" for k, v in (seeds or {}).items()) or "none"
    return [
        f"command: {command_line()}",
        f"skelcl {__version__}, git revision {git_revision()}",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), triton {_version('triton')}, "
        f"python {sys.version.split()[0]}",
        f"device: {dev}, CPU threads {torch.get_num_threads()}",
        f"seeds: {seed_text}",
    ]


def announce(log_file, device=None, seeds: dict | None = None) -> list[str]:
    """Print run_header(device, seeds) and append it to log_file (demo, experiment); returns the lines."""
    lines = run_header(device, seeds)
    print("\n".join(lines), flush=True)
    with open(log_file, "a") as f:
        f.write("".join(f"[{time.strftime('%H:%M:%S')}] {x}\n" for x in lines))
    return lines


def results_text(values: dict) -> str:
    """The numbers of a metrics dict as one line: "loss 1.234, epoch 2" (floats to 4 significant digits;
    anything that is not a number, and counts named num_*, are left out)."""
    parts = []
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or "num_" in k:
            continue
        parts.append(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4g}")
    return ", ".join(parts) or "no results"


def fmt_duration(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class RunDir:
    """The run folder of a pretraining or fine-tuning run (see the module docstring).

    command: "pretrain" or "finetune" (for the resume hint after Ctrl-C). Create it only after every
    input has been checked: creating it writes config.yaml and the header into log.txt."""

    def __init__(self, path, cfg: dict, resume: bool = False, quiet: bool = False, overwrite: bool = False,
                 command: str = "pretrain", device=None):  # fmt: skip
        global ACTIVE
        self.path = Path(path)
        self.main = is_main()
        self.quiet = quiet
        self.cfg = cfg
        self.command = command
        self._tb = None
        self._tb_missing = False
        t = cfg.get("train", {})
        self.ckpt_every = max(1, int(t.get("ckpt_every", 1)))
        self.keep_every = int(t.get("keep_every", 0) or 0)
        self.epochs = int(t.get("epochs", 0))
        self.saved_epoch: int | None = None
        self.saved_step = 0  # steps of epoch saved_epoch + 1 in last.pt (a mid-epoch checkpoint)
        self.resume_step, self.resume_partial = 0, {}  # set by resume_state
        self.bars = self.main and not quiet and show_bars()
        self._t0, self._start = time.time(), 0
        check_out(self.path, resume, overwrite)
        if self.main:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                lock_run(self.path)  # before any run file is touched
                remove_partial_writes(self.path)
                if not resume:
                    clear_run(self.path)
                    _write_atomic(self.path / "config.yaml", config_mod.dump(cfg))
                seeds = {"train.seed": t.get("seed")}
                for line in run_header(device, seeds):
                    self.log(line)
            except OSError as err:  # a read-only or full file system, no permission
                msg = err.strerror or str(err)
                raise SkelclError(f"cannot write to the run folder {self.path}: {msg}") from None
        ACTIVE = self

    @property
    def checkpoint(self) -> Path:
        return self.path / "last.pt"

    def log(self, msg: str) -> None:
        if not self.main:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.bars:
            tqdm.write(line)
        else:
            print(line, flush=True)
        with open(self.path / "log.txt", "a") as f:
            f.write(line + "\n")

    def bar(self, iterable, desc: str):
        """tqdm over iterable, shown only on a terminal without --quiet (never one long line in a file)."""
        return tqdm(iterable, desc=desc, leave=False, disable=not self.bars, dynamic_ncols=True)

    def start_epochs(self, start: int, epochs: int) -> None:
        """Call before the epoch loop (start: epochs already done) for the ETA."""
        self._t0, self._start, self.epochs = time.time(), int(start), int(epochs)

    def eta(self, done: int) -> str:
        """Time left for the whole run from the mean epoch time of this session."""
        n = done - self._start
        if n <= 0:
            return "ETA unknown"
        if done >= self.epochs:
            return f"run time {fmt_duration(time.time() - self._t0)}"
        return f"ETA {fmt_duration((time.time() - self._t0) / n * (self.epochs - done))}"

    def log_epoch(self, done: int, text: str, seconds: float) -> None:
        """One line per epoch: "epoch 3/10: <text> (12.3 s, ETA 1 min 26 s)"."""
        self.log(f"epoch {done}/{self.epochs}: {text} ({seconds:.1f} s, {self.eta(done)})")

    def save_checkpoint(self, state: dict, epoch: int, last: bool, best: bool = False) -> None:
        """last.pt every train.ckpt_every epochs and at the end, epoch_N.pt every train.keep_every epochs,
        best.pt when `best`; one serialization, each file written atomically."""
        if not self.main:
            return
        from skelcl.train import checkpoint

        paths = []
        if epoch % self.ckpt_every == 0 or last:
            paths.append(self.path / "last.pt")
        if self.keep_every and epoch % self.keep_every == 0:
            paths.append(self.path / f"epoch_{epoch}.pt")
        if best:
            paths.append(self.path / "best.pt")
        if not paths:
            return
        checkpoint.save(paths[0], state, copies=paths[1:])
        if paths[0].name == "last.pt":
            self.saved_epoch, self.saved_step = epoch, 0

    def save_step_checkpoint(self, state: dict, epoch: int, step: int) -> None:
        """last.pt in the middle of an epoch: `epoch` epochs and `step` steps of the next one done (state
        holds them as "epoch" and "step")."""
        if not self.main:
            return
        from skelcl.train import checkpoint

        checkpoint.save(self.path / "last.pt", state)
        self.saved_epoch, self.saved_step = epoch, step

    def saved_text(self) -> str:
        """Where last.pt stands: "epoch 3/10" or "epoch 4/10 step 120"."""
        if self.saved_step:
            return f"epoch {self.saved_epoch + 1}/{self.epochs} step {self.saved_step}"
        return f"epoch {self.saved_epoch}/{self.epochs}"

    def write_config(self, cfg: dict) -> None:
        self.cfg = cfg
        if self.main:
            _write_atomic(self.path / "config.yaml", config_mod.dump(cfg))

    def interrupt_message(self) -> str:
        if self.saved_epoch is None:
            return (f"stopped before the first checkpoint: nothing saved; run the same command again "
                    f"(the folder {self.path} is reused)")  # fmt: skip
        ck = self.path / "last.pt"
        return (f"stopped; last checkpoint: {self.saved_text()} in {ck}; "
                f"continue with: skelcl {self.command} --resume {shlex.quote(str(self.path))}")  # fmt: skip

    def scalars(self, tag: str, values: dict, step: int) -> None:
        """TensorBoard scalars tag/key (finite numbers only); a no-op without the tensorboard package."""
        if not self.main or self._tb_missing:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tb_missing = True
                self.log("tensorboard is not installed: no TensorBoard events (pip install 'skelcl[tb]'); "
                         "metrics.json holds the same numbers")  # fmt: skip
                return
            self._tb = SummaryWriter(str(self.path / "tb"))
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self._tb.add_scalar(f"{tag}/{k}", v, step)
        self._tb.flush()

    def write_metrics(self, metrics: dict, title: str = "final") -> None:
        """Write metrics.json, then log the numbers of metrics["final"] as "<title>: key value, ..." so that
        log.txt ends with the results too."""
        if self.main:
            _write_atomic(self.path / "metrics.json", json.dumps(metrics, indent=2))
            self.log(f"{title}: {results_text(metrics.get('final') or {})}")

    def close(self) -> None:
        global ACTIVE
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.main:
            unlock_run(self.path)
        if ACTIVE is self:
            ACTIVE = None


def interrupt_message() -> str:
    """What was saved by the run this process was running when Ctrl-C came, and how to continue."""
    run = ACTIVE
    if run is None:
        return "stopped before the run folder was created: nothing was written"
    msg = run.interrupt_message()
    if run.main:
        with open(run.path / "log.txt", "a") as f:
            f.write(f"[{time.strftime('%H:%M:%S')}] interrupted: {msg}\n")
    run.close()
    return msg


def _write_atomic(path: Path, text: str) -> None:
    """Write text via a temporary file and os.replace (the usual file mode: open() honours the umask)."""
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


SCHEDULE_KIND = "optimizer steps"  # what the scheduler counts; its state_dict carries it as "counts"


def lr_factor(step: int, t: dict, total_steps: int) -> float:
    """The LR multiplier of optimizer step `step` (0-based) of a run of total_steps steps.

    Warm-up: the first w = round(train.warmup * total_steps) steps run at (step + 1) / w. After it, with
    p = (step - w) / (total_steps - w): "cosine" 0.5 (1 + cos(pi p)) (1 at the first step after the
    warm-up, towards 0 at the end); "step" gamma^(milestones passed), a milestone m (in epochs of
    train.epochs) falling at step round(m * total_steps / train.epochs); "constant" 1."""
    total = max(1, int(total_steps))
    w = int(round(float(t.get("warmup") or 0.0) * total))
    if step < w:
        return (step + 1) / w
    name = t["schedule"]
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step - w, total - w) / max(1, total - w)))
    if name == "step":
        epochs = max(1, int(t["epochs"]))
        ms = [round(int(m) * total / epochs) for m in t["milestones"]]
        return float(t["gamma"]) ** sum(step >= m for m in ms)
    if name == "constant":
        return 1.0
    raise SkelclError(f"train.schedule must be 'cosine', 'step' or 'constant', got {name!r}")


def make_scheduler(optimizer, t: dict, total_steps: int):
    """LambdaLR over optimizer steps (call scheduler.step() after every optimizer step): lr_factor."""
    lr_factor(0, t, total_steps)  # an unknown schedule fails here, before the run starts
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t, total_steps))
    scheduler.counts = SCHEDULE_KIND  # saved with state_dict() (older checkpoints: none, per epoch)
    return scheduler


def autocast(device: torch.device, enabled: bool, cpu: bool = False):
    """bf16 autocast: on CUDA when `enabled` (train.amp), on a CPU when `cpu` (train.cpu_amp); otherwise a
    no-op context. CPU bf16 is fast only where the CPU has bf16 dot products (AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu and device.type == "cpu")


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
    ("pretrain" or "localizer"); returns (epochs done, metric history).

    When run.cfg asks for more train.epochs than the saved config (`--resume RUN train.epochs=N`), the
    run goes on to N epochs: the saved config.yaml is updated and the learning-rate schedule continues
    from the current epoch as defined for N epochs (a cosine schedule then ends at N)."""
    from skelcl.train import checkpoint

    st = checkpoint.load(run.checkpoint, map_location=device)
    if st.get("kind") != kind:
        raise SkelclError(f"{run.checkpoint} is a {st.get('kind')!r} checkpoint, expected {kind!r}")
    from skelcl.train.distributed import world_info

    saved_world, world = int(st.get("world_size", 1)), world_info()[1]
    if saved_world != world:
        raise SkelclError(
            f"--resume {run.path}: the run was trained on {saved_world} process(es) and this start has "
            f"{world}; a resume needs the same world size (the data order is sharded by rank): restart it "
            f"with {saved_world} process(es)"
        )
    start = int(st["epoch"])
    want = int(run.cfg["train"]["epochs"])
    if want < start and not run.cfg["train"].get("steps"):
        raise SkelclError(f"--resume {run.path}: train.epochs={want} is below the {start} epochs done")
    if st["scheduler"].get("counts") != SCHEDULE_KIND:
        raise SkelclError(
            f"--resume {run.path}: the checkpoint was saved by an older skelcl whose learning-rate schedule "
            "stepped once per epoch; this one steps it per optimizer step, so the run cannot continue "
            "exactly: start it again (--overwrite) or finish it with the older version"
        )
    model.load_state_dict(st["model"])
    optimizer.load_state_dict(st["optimizer"])
    scheduler.load_state_dict(st["scheduler"])
    set_rng_state(st["rng"])
    run.saved_epoch = start
    run.saved_step = run.resume_step = int(st.get("step", 0))  # mid-epoch: steps of epoch start + 1 done
    run.resume_partial = dict(st.get("partial") or {})
    run.resume_sequences = st.get("sequences")
    old = int(st["config"]["train"]["epochs"]) if "config" in st else want
    if want != old:
        run.write_config(run.cfg)
        run.log(f"train.epochs extended from {old} to {want} (config.yaml updated)")
    where = f"epoch {start + 1} step {run.resume_step}" if run.resume_step else f"epoch {start}"
    run.log(f"resumed from {run.checkpoint} after {where}")
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
