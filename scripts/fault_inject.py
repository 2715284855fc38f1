"""Fault injection: kill a small pretraining at K random moments, resume each time, compare the weights.

    python scripts/fault_inject.py --kills 20 --work /tmp/fi       # the figures of docs/scale.md
    python scripts/fault_inject.py --kills 3 --work /tmp/fi --quick

Episodes, each a small CPU pretraining (tiny width, a few steps, a checkpoint every step) restarted with
the same command line plus `--resume auto` after every kill until it finishes; its final weights are
compared (torch.equal, every tensor) with an uninterrupted run of the same world size:

    random   SIGKILL to the whole process group at a random moment of the run (one process)
    write    SIGKILL in the middle of a checkpoint write (half the bytes in the temporary file)
    rank     two ranks under torchrun, one rank SIGKILLs itself after a random step (torchrun then stops
             the other; the job is started again with --resume auto)

After every kill each checkpoint file of the run folder is loaded (magic, length, sha256): a file that
fails is counted as corrupt. "time lost per fault" = (wall time of the episode - that of the
uninterrupted run) / kills: the restart (imports, model build) plus the steps redone since the checkpoint.
Then two write failures: a file-size limit (RLIMIT_FSIZE, as a full disk) and an unwritable run folder (a
read-only tmpfs remount when running as root with mount rights, else chmod): each must end with a
one-line error, exit code 2 and the previous checkpoint intact.

`python scripts/fault_inject.py worker ARGS...` runs `skelcl ARGS...` with the faults asked for in the
environment (SKELCL_FI_KILL_STEP=RANK:STEP:MARKER, SKELCL_FI_KILL_WRITE=N:MARKER: done once, when MARKER
does not exist yet); tests/test_torchrun.py starts it under torchrun.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
OVERRIDES = ["data.bodies=1", "model.width=0.125", "train.batch_size=4", "train.num_threads=1",
             "train.lr=0.05", "pretrain.queue_size=16", "pretrain.snippet_queue_size=64",
             "pretrain.momentum=0.9", "train.ckpt_every_steps=1"]  # fmt: skip


# ---------------------------------------------------------------- worker (the process that gets killed)


def _once(marker: str) -> bool:
    """True the first time (creates marker)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def worker(argv: list[str]) -> int:
    kill_step = os.environ.get("SKELCL_FI_KILL_STEP")
    if kill_step:
        rank, step, marker = kill_step.split(":", 2)
        from skelcl.models import MoCo

        orig, count = MoCo.flush_queues, [0]

        def flush(self):
            after_step = bool(self._pending)  # the loop's flush after the optimizer step
            orig(self)
            if after_step and os.environ.get("RANK", "0") == rank:
                count[0] += 1
                if count[0] == int(step) and _once(marker):
                    _die()

        MoCo.flush_queues = flush
    kill_write = os.environ.get("SKELCL_FI_KILL_WRITE")
    if kill_write:
        nth, marker = kill_write.split(":", 1)
        from skelcl.train import checkpoint

        orig_write, calls = checkpoint.write_bytes_atomic, [0]

        def write(path, chunks):
            calls[0] += 1
            if calls[0] != int(nth) or not _once(marker):
                return orig_write(path, chunks)

            def half():  # magic, digest, then half the payload: the kill lands inside the write
                chunks_ = list(chunks)
                yield from chunks_[:-1]
                yield chunks_[-1][: len(chunks_[-1]) // 2]
                _die()

            return orig_write(path, half())

        checkpoint.write_bytes_atomic = write
    from skelcl.cli import main

    return main(argv)


# ---------------------------------------------------------------- harness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(data, out, epochs: int, ranks: int) -> list[str]:
    args = ["pretrain", "--config", "pretrain_skeletonclr", "--data", str(data), "--out", str(out), "--quiet",
            *OVERRIDES, f"train.epochs={epochs}", "--resume", "auto"]  # fmt: skip
    if ranks == 1:
        return [sys.executable, str(SCRIPT), "worker", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(ranks),
            "--max-restarts", "0", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
            str(SCRIPT), "worker", *args]  # fmt: skip


def start(cmd, env=None, log=None, preexec=None):
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec)  # fmt: skip


def weights(path) -> dict:
    from skelcl.train.checkpoint import load

    return load(path)["model"]


def equal(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def corrupt_files(folder) -> list[str]:
    from skelcl.errors import SkelclError
    from skelcl.train.checkpoint import load

    bad = []
    for f in sorted(Path(folder).glob("*.pt")):
        try:
            load(f)
        except SkelclError:
            bad.append(f.name)
    return bad


def reference(data, work, epochs, ranks) -> tuple[dict, float]:
    out = work / f"ref{ranks}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    with open(work / f"ref{ranks}.log", "w") as log:
        rc = start(command(data, out, epochs, ranks), log=log).wait()
    if rc != 0:
        raise SystemExit(f"the uninterrupted {ranks}-rank run failed (rc {rc}); see {work}/ref{ranks}.log")
    return weights(out / "last.pt"), time.time() - t0


def episode(kind, data, work, epochs, kills, ref, ref_s, rng, name) -> dict:
    """One run killed `kills` times (kind: random, write, rank), resumed after each kill."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    ranks = 2 if kind == "rank" else 1
    done_kills, corrupt, restarts, t0 = 0, [], 0, time.time()
    log = open(work / f"{name}.log", "w")
    while True:
        env, want = {}, done_kills < kills
        marker = str(work / f"{name}.marker{done_kills}")
        if want and kind == "write":
            env["SKELCL_FI_KILL_WRITE"] = f"{rng.randint(1, 3)}:{marker}"
        if want and kind == "rank":
            env["SKELCL_FI_KILL_STEP"] = f"{rng.randint(0, 1)}:{rng.randint(1, 3)}:{marker}"
        proc = start(command(data, out, epochs, ranks), env=env, log=log)
        try:  # random: a moment within what the uninterrupted run takes (start-up included)
            rc = proc.wait(timeout=rng.uniform(0.3, 0.9) * ref_s if want and kind == "random" else None)
        except subprocess.TimeoutExpired:
            rc = None
        if rc != 0:  # killed: by us (random), by itself (write, rank: torchrun then stops the other)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            done_kills += 1
            corrupt += corrupt_files(out)
            restarts += 1
            if restarts > 3 * kills + 5:
                break
            continue
        break  # finished (when a fault never came, with fewer kills)
    log.close()
    final = out / "last.pt"
    same = final.is_file() and equal(weights(final), ref)
    wall = time.time() - t0
    done = (out / "metrics.json").is_file()
    return {"kind": kind, "kills": done_kills, "survived": done, "equal": same, "corrupt": corrupt,
            "wall_s": round(wall, 1),
            "lost_per_kill_s": round((wall - ref_s) / max(1, done_kills), 1)}  # fmt: skip


def write_failures(data, work, epochs) -> list[dict]:
    """A file-size limit (as a full disk) and an unwritable run folder, each after a first checkpoint."""
    from skelcl.train.checkpoint import load

    results = []
    for case in ("file-size limit", "unwritable folder"):
        out = work / ("fsize" if case.startswith("file") else "rofs")
        shutil.rmtree(out, ignore_errors=True)
        mounted = False
        if case == "unwritable folder" and os.geteuid() == 0:
            out.mkdir(parents=True)
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(out)],
                                     capture_output=True).returncode == 0  # fmt: skip
        # a first run, stopped after its first checkpoints by a file-size limit / a read-only folder
        env = {"SKELCL_FI_KILL_STEP": f"0:2:{work / (out.name + '.marker')}"}
        Path(work / (out.name + ".marker")).unlink(missing_ok=True)
        start(command(data, out, epochs, 1), env=env).wait()
        before = load(out / "last.pt")
        size = (out / "last.pt").stat().st_size
        preexec = None
        if case == "file-size limit":

            def preexec(limit=size // 2):
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        elif mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        else:
            os.chmod(out, 0o555)
        with open(work / f"{out.name}.log", "w") as log:
            rc = start(command(data, out, epochs, 1), log=log, preexec=preexec).wait()
        text = (work / f"{out.name}.log").read_text()
        errors = [line for line in text.splitlines() if "error:" in line]
        after = load(out / "last.pt")
        intact = equal(before["model"], after["model"]) and (before["epoch"], before["step"]) == (
            after["epoch"], after["step"])  # fmt: skip
        if mounted:
            subprocess.run(["umount", str(out)], check=False)
        else:
            os.chmod(out, 0o755) if out.exists() else None
        results.append({"case": case + (" (read-only tmpfs)" if mounted else ""), "rc": rc,
                        "error": errors[-1] if errors else text[-300:], "previous_checkpoint_intact": intact,
                        "traceback": "Traceback" in text})  # fmt: skip
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="K: faults injected in all (>= 3)")
    ap.add_argument("--work", default="/tmp/skelcl_fault_inject", help="scratch folder (removed first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="skip the full-disk and unwritable-folder cases")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--kinds", default="write,rank,random", help="fault kinds to inject (comma-separated)")
    args = ap.parse_args(argv)
    from skelcl.data.synthetic import SynthConfig, generate_cache

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    cfg = SynthConfig(length=(60, 80), num_subjects=8, test_every=4)
    data = generate_cache(work / "data", 20, 3, config=cfg, progress=False)  # 15 training sequences
    kinds = [k for k in ("write", "rank", "random") if k in args.kinds.split(",")]
    ref1, s1 = reference(data, work, args.epochs, 1)
    ref2, s2 = reference(data, work, args.epochs, 2) if "rank" in kinds else (None, 0.0)
    print(f"uninterrupted runs: 1 process {s1:.1f} s, 2 ranks {s2:.1f} s", flush=True)
    # K kills over the kinds: with all three, half at random moments, a quarter in checkpoint writes, a
    # quarter on one DDP rank; at most 3 kills per episode
    share = {"write": 0.25, "rank": 0.25, "random": 0.5}
    plan = [(k, max(1, round(args.kills * share[k] / sum(share[x] for x in kinds)))) for k in kinds]
    rows = []
    for kind, k in plan:
        i = 0
        while k > 0:
            n = min(3, k)
            ref, ref_s = (ref2, s2) if kind == "rank" else (ref1, s1)
            row = episode(kind, data, work, args.epochs, n, ref, ref_s, rng, f"{kind}{i}")
            rows.append(row)
            print(json.dumps(row), flush=True)
            k -= max(1, row["kills"])
            i += 1
    total = sum(r["kills"] for r in rows)
    lost = [r["lost_per_kill_s"] for r in rows if r["kills"]]
    summary = {
        "faults_injected": total,
        "episodes": len(rows),
        "episodes_survived": sum(r["survived"] for r in rows),
        "episodes_equal_final_weights": sum(r["equal"] for r in rows),
        "faults_in_survived_episodes": sum(r["kills"] for r in rows if r["survived"]),
        "corrupt_checkpoints": sum(len(r["corrupt"]) for r in rows),
        "time_lost_per_fault_s": {"mean": round(sum(lost) / max(1, len(lost)), 1),
                                  "min": min(lost, default=0), "max": max(lost, default=0)},
        "uninterrupted_s": {"1 process": round(s1, 1), "2 ranks": round(s2, 1) if ref2 else None},
    }  # fmt: skip
    if not args.quick:
        summary["write_failures"] = write_failures(data, work, args.epochs)
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "episodes": rows}, indent=2))
    ok = summary["corrupt_checkpoints"] == 0 and summary["episodes_equal_final_weights"] == len(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(worker(sys.argv[2:]))
    sys.exit(main())
