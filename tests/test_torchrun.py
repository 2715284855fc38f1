"""Training started by torchrun itself (python -m torch.distributed.run, gloo on CPU): an elastic restart
after a killed rank, and a two-node job formed by a c10d rendezvous on localhost."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from skelcl.data.synthetic import SynthConfig, generate_cache
from skelcl.train.checkpoint import load
from skelcl.train.pretrain import open_split

WORKER = Path(__file__).resolve().parents[1] / "scripts" / "fault_inject.py"  # `worker`: skelcl + faults
ARGS = ["data.bodies=1", "model.width=0.125", "train.batch_size=3", "train.num_threads=1", "train.lr=0.05",
        "pretrain.queue_size=16", "pretrain.snippet_queue_size=64", "pretrain.momentum=0.9",
        "train.ckpt_every_steps=1"]  # fmt: skip

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = SynthConfig(length=(60, 80), num_subjects=8, test_every=4)
    return generate_cache(tmp_path_factory.mktemp("data") / "d", 24, 3, config=cfg, progress=False)


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*launcher, out, data, epochs, env=None, log=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, str(WORKER), "worker", "pretrain",
           "--config", "pretrain_skeletonclr", "--data", str(data), "--out", str(out), "--quiet",
           *ARGS, f"train.epochs={epochs}", "--resume", "auto"]  # fmt: skip
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def _reap(out: Path) -> None:
    """SIGKILL every process still running for the run folder `out` (workers a failed launch left
    behind would otherwise outlive the test, and the CI job with it)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if proc.name.isdigit() and str(out).encode() in cmd:
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # gone already, or not ours


def _wait(procs, logs, out, timeout=400):
    try:
        return [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("torchrun did not finish: " + "".join(Path(f).read_text()[-3000:] for f in logs))
    finally:
        _reap(out)


def test_killed_rank_restarts_and_resumes(data, tmp_path):
    """Rank 1 SIGKILLs itself after step 5 (epoch 2, step 2 of 3): torchrun (--max-restarts 1) stops rank
    0, starts both again, --resume auto continues from the checkpoint after step 4 and the job finishes."""
    out, marker, log = tmp_path / "run", tmp_path / "killed", tmp_path / "torchrun.log"
    launcher = ["--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.5",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_port()}"]  # fmt: skip
    with open(log, "w") as f:
        # torch shares the rendezvous TCP store with the workers' process group by default, and a restarted
        # worker can then read the previous round's peer address (pytorch/pytorch#135712): turned off
        env = {"SKELCL_FI_KILL_STEP": f"1:5:{marker}", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
        proc = _torchrun(*launcher, out=out, data=data, epochs=2, env=env, log=f)
        (rc,) = _wait([proc], [log], out)
    assert rc == 0, log.read_text()[-3000:]
    assert marker.exists()  # the kill happened
    text = (out / "log.txt").read_text()
    assert "resumed from" in text and "after epoch 2 step 1" in text, text
    st = load(out / "last.pt")
    assert st["epoch"] == 2 and st["step"] == 0 and st["world_size"] == 2
    assert (out / "metrics.json").is_file()


def test_two_nodes_with_a_c10d_rendezvous(data, tmp_path):
    """Two torchrun launches (one process each) with --nnodes 2 and the same rendezvous form one job of
    world size 2; rank 0 (on whichever node) writes the run."""
    out, port = tmp_path / "run", _port()
    logs = [tmp_path / f"node{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        launcher = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "job1",
                    "--rdzv-endpoint", f"127.0.0.1:{port}",
                    "--rdzv-conf", f"is_host={int(i == 0)}"]  # fmt: skip
        with open(log, "w") as f:
            procs.append(_torchrun(*launcher, out=out, data=data, epochs=1, log=f))
    assert _wait(procs, logs, out) == [0, 0], "".join(f.read_text()[-3000:] for f in logs)
    st = load(out / "last.pt")
    assert st["world_size"] == 2 and st["epoch"] == 1
    n = len(open_split(st["config"]["data"]))  # each rank reads its half of the training sequences
    assert st["history"][0]["steps"] == (n // 2) // 3 >= 2


def test_pretrain_nproc_starts_data_parallel_ranks(data, tmp_path, capfd):
    """`skelcl pretrain --nproc 2` runs the command as 2 gloo ranks (torch.distributed.run --standalone):
    the checkpoint says world size 2, each rank took the cores / 2 threads, and an epoch of 2 ranks x
    batch 3 has as many steps as one process with batch 6."""
    from helpers import cli_error

    from skelcl.cli import main

    out = tmp_path / "ranks"
    args = ["pretrain", "--config", "pretrain_skeletonclr", "--data", str(data), "--out", str(out), "--quiet",
            *[a for a in ARGS if not a.startswith("train.num_threads")], "train.epochs=2"]  # fmt: skip
    try:
        assert main([*args, "--nproc", "2"]) == 0
    finally:
        _reap(out)
    printed = capfd.readouterr().out
    assert "2 processes" in printed and f"pretraining run written to {out}" in printed
    st = load(out / "last.pt")
    assert st["world_size"] == 2 and st["epoch"] == 2
    assert st["config"]["train"]["num_threads"] == max(1, (os.cpu_count() or 1) // 2)
    n_train = len(open_split(st["config"]["data"]))
    assert st["history"][-1]["steps"] == 2 * (n_train // 6)
    cli_error(capfd, [*args, "--nproc", "0"], "--nproc must be >= 1")
