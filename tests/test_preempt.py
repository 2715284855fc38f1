"""Runs that stop at any moment: mid-epoch checkpoints, SIGTERM / SIGUSR1, --resume auto, bad resumes."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from skelcl.errors import SkelclError
from skelcl.models import MoCo
from skelcl.train import config
from skelcl.train.checkpoint import load
from skelcl.train.finetune import run_finetune
from skelcl.train.preempt import EXIT_PREEMPTED, Preempted
from skelcl.train.pretrain import run_pretrain

PRE = ["data.bodies=1", "model.width=0.125", "train.epochs=2", "train.batch_size=6", "train.num_threads=2",
       "train.lr=0.05", "pretrain.queue_size=8", "pretrain.snippet_queue_size=40",
       "pretrain.momentum=0.9"]  # fmt: skip


def _cfg(data, *extra):
    return config.resolve("pretrain_skeletonclr", [f"data.path={data}", *PRE, *extra])


def _same_model(a, b):
    sa, sb = load(a)["model"], load(b)["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _strip(history):
    """The history without timings (seconds, probe_seconds, data_wait_share)."""
    return [{k: v for k, v in h.items() if not k.endswith(("seconds", "data_wait_share"))} for h in history]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run_pretrain(_cfg(tiny), out, quiet=True)
    return out


def _fault_at(monkeypatch, call, action):
    """Run action() in the n-th MoCo.flush_queues call made after an optimizer step (1-based)."""
    orig, count = MoCo.flush_queues, [0]

    def patched(self):
        after_step = bool(self._pending)  # the loop's flush after the step (forward's finds none)
        orig(self)
        if after_step:
            count[0] += 1
            if count[0] == call:
                action()

    monkeypatch.setattr(MoCo, "flush_queues", patched)
    return count


def test_step_checkpoints_resume_exactly(tiny, reference, tmp_path, monkeypatch):
    """A crash after step 5 (epoch 2, step 2 of 3) with a checkpoint every 2 steps: last.pt holds epoch 2
    step 1 (global step 4), and the resumed run ends with the uninterrupted run's weights and history."""

    def crash():
        raise RuntimeError("node lost")

    _fault_at(monkeypatch, 5, crash)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node lost"):
        run_pretrain(_cfg(tiny, "train.ckpt_every_steps=2"), out, quiet=True)
    monkeypatch.undo()
    st = load(out / "last.pt")
    assert (st["epoch"], st["step"]) == (1, 1) and len(st["history"]) == 1
    run_pretrain(_cfg(tiny, "train.ckpt_every_steps=2"), out, resume=True, quiet=True)
    _same_model(reference / "last.pt", out / "last.pt")
    assert _strip(load(out / "last.pt")["history"]) == _strip(load(reference / "last.pt")["history"])
    assert "resumed from" in (out / "log.txt").read_text()


def test_sigterm_saves_after_the_step_and_exits(tiny, reference, tmp_path, monkeypatch):
    """SIGTERM in step 2: the step finishes, last.pt holds epoch 1 step 2, the run raises Preempted (exit
    code 143) with the resume line; the resumed run equals the uninterrupted one."""
    _fault_at(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "run"
    with pytest.raises(Preempted) as err:
        run_pretrain(_cfg(tiny), out, quiet=True)
    monkeypatch.undo()
    assert err.value.code == EXIT_PREEMPTED == 143
    assert "SIGTERM" in err.value.message and "--resume auto" in err.value.message
    st = load(out / "last.pt")
    assert (st["epoch"], st["step"]) == (0, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the run
    run_pretrain(_cfg(tiny), out, resume=True, quiet=True)
    _same_model(reference / "last.pt", out / "last.pt")


def test_sigusr1_at_an_epoch_end_keeps_the_epoch_checkpoint(tiny, reference, tmp_path, monkeypatch):
    _fault_at(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGUSR1))  # the last step of epoch 1
    out = tmp_path / "run"
    with pytest.raises(Preempted) as err:
        run_pretrain(_cfg(tiny), out, quiet=True)
    monkeypatch.undo()
    assert "SIGUSR1" in err.value.message
    st = load(out / "last.pt")
    assert (st["epoch"], st["step"]) == (1, 0)
    run_pretrain(_cfg(tiny), out, resume=True, quiet=True)
    _same_model(reference / "last.pt", out / "last.pt")


def _cli_args(data, out, *extra):
    return ["pretrain", "--config", "pretrain_skeletonclr", "--data", str(data), "--out", str(out), "--quiet",
            *PRE, *extra]  # fmt: skip


def test_resume_auto_new_continue_finished_and_refused(tiny, reference, tmp_path, monkeypatch, capsys):
    from skelcl.cli import main

    out = tmp_path / "run"
    _fault_at(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(SystemExit) as err:  # a new folder: a new run (stopped in epoch 2)
        main(_cli_args(tiny, out, "--resume", "auto"))
    monkeypatch.undo()
    assert err.value.code == EXIT_PREEMPTED
    assert (load(out / "last.pt")["epoch"], load(out / "last.pt")["step"]) == (1, 1)
    capsys.readouterr()
    assert main(_cli_args(tiny, out, "--resume", "auto", "train.lr=0.1")) == 2
    msg = capsys.readouterr().err
    assert "another config (train.lr: 0.05 -> 0.1)" in msg and len(msg.strip().splitlines()) == 1
    assert main(_cli_args(tiny, out, "--resume", "auto")) == 0  # continues
    _same_model(reference / "last.pt", out / "last.pt")
    capsys.readouterr()
    mtime = (out / "last.pt").stat().st_mtime_ns
    assert main(_cli_args(tiny, out, "--resume", "auto")) == 0  # finished: says so, changes nothing
    assert "finished run" in capsys.readouterr().out
    assert (out / "last.pt").stat().st_mtime_ns == mtime
    assert main(_cli_args(tiny, tmp_path / "other", "--resume", "auto", "--overwrite")) == 2
    assert main(["pretrain", "--config", "pretrain_skeletonclr", "--resume", "auto"]) == 2  # needs --out


def test_resume_auto_after_a_kill_before_the_first_checkpoint(tiny, reference, tmp_path):
    """A folder with config.yaml, a log and a partial checkpoint write but no last.pt: a new run."""
    from skelcl.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: {}\n")
    (out / ".last.pt.abc123.tmp").write_bytes(b"SKELCK01 half")
    assert main(_cli_args(tiny, out, "--resume", "auto")) == 0
    _same_model(reference / "last.pt", out / "last.pt")
    assert not list(out.glob(".*.tmp"))


def test_bad_resumes_are_refused(tiny, reference, tmp_path, monkeypatch):
    import shutil

    from skelcl.train.checkpoint import save

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    st = load(out / "last.pt")
    save(out / "last.pt", {**st, "world_size": 2})
    with pytest.raises(SkelclError, match="trained on 2 process"):
        run_pretrain(_cfg(tiny, "train.epochs=3"), out, resume=True, quiet=True)
    save(out / "last.pt", {**st, "sequences": 99})
    with pytest.raises(SkelclError, match="data now holds 19 sequences and the run was trained on 99"):
        run_pretrain(_cfg(tiny, "train.epochs=3"), out, resume=True, quiet=True)
    save(out / "last.pt", st)
    ft = config.resolve("finetune", [f"data.path={tiny}", "data.bodies=1", "model.width=0.125"])
    with pytest.raises(SkelclError, match="'pretrain' checkpoint, expected 'localizer'"):
        run_finetune(ft, out, resume=True, quiet=True)
    assert load(out / "last.pt")["epoch"] == 2  # nothing saved was lost


def _start(args, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "skelcl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)  # fmt: skip


def _wait_for(proc, text):
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never printed: {''.join(lines)}")


def test_sigterm_to_a_cli_run_then_resume_auto(tiny, tmp_path):
    """SIGTERM right after epoch 1 of 3 (4 steps each): exit 143 after a mid-epoch checkpoint, the line
    says how to continue; the same command + --resume auto ends with the uninterrupted run's weights."""
    from skelcl.cli import main

    extra = ["train.epochs=3", "train.batch_size=4"]
    assert main(_cli_args(tiny, tmp_path / "ref", *extra)) == 0
    out = tmp_path / "run"
    proc = _start(_cli_args(tiny, out, *extra, "--resume", "auto"), tmp_path)
    _wait_for(proc, "epoch 1/3")
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == EXIT_PREEMPTED, rest
    st = load(out / "last.pt")
    assert st["epoch"] == 1 and 0 < st["step"] < 4, (st["epoch"], st["step"])
    assert "continue with the same command plus --resume auto" in rest
    assert main(_cli_args(tiny, out, *extra, "--resume", "auto")) == 0
    _same_model(tmp_path / "ref" / "last.pt", out / "last.pt")


def test_second_sigterm_exits_at_once(tiny, tmp_path):
    out = tmp_path / "run"
    proc = _start(_cli_args(tiny, out, "train.epochs=3", "train.batch_size=4"), tmp_path)
    _wait_for(proc, "epoch 2/3")  # epoch 1's checkpoint is written
    proc.send_signal(signal.SIGTERM)
    _wait_for(proc, "SIGTERM received")  # two signals sent at once would merge into one
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == EXIT_PREEMPTED, rest
    assert "second SIGTERM: exiting now" in rest
    assert load(out / "last.pt")["epoch"] >= 1  # an older checkpoint or the new one, never a partial one


def test_finetune_sigterm_mid_epoch_resumes_exactly(tiny, tmp_path, monkeypatch):
    """Fine-tuning: SIGTERM in step 2 of epoch 1 (4 steps), checkpoint, resume: the uninterrupted weights."""
    from skelcl.models.fusion import Localizer

    cfg = config.resolve("finetune", [f"data.path={tiny}", "data.bodies=1", "model.width=0.125",
                                      "train.epochs=2", "train.batch_size=6", "train.num_threads=2",
                                      "train.lr=0.003", "finetune.val_fraction=0"])  # fmt: skip
    ref = run_finetune(cfg, tmp_path / "ref", quiet=True)
    orig, calls = Localizer.forward, [0]

    def forward(self, *a, **k):
        calls[0] += 1
        if calls[0] == 2 and self.training:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, *a, **k)

    monkeypatch.setattr(Localizer, "forward", forward)
    out = tmp_path / "run"
    with pytest.raises(Preempted):
        run_finetune(cfg, out, quiet=True)
    monkeypatch.undo()
    st = load(out / "last.pt")
    assert (st["epoch"], st["step"]) == (0, 2)
    res = run_finetune(cfg, out, resume=True, quiet=True)
    _same_model(tmp_path / "ref" / "last.pt", out / "last.pt")
    assert res["final"] == ref["final"]
    keep = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "data_wait_share")} for r in h]  # noqa: E731
    assert keep(res["history"]) == keep(ref["history"])


def test_minutes_checkpoints_and_the_probe_survive_a_mid_epoch_resume(tiny, tmp_path, monkeypatch):
    """train.ckpt_every_minutes (a tiny interval: after every step) saves mid-epoch; a crash in step 5 and
    a resume give the uninterrupted weights, and the online probe's history keys too."""
    extra = ["train.ckpt_every_minutes=0.00001", "pretrain.probe_every=4", "pretrain.probe_sequences=2"]
    ref = run_pretrain(_cfg(tiny, *extra), tmp_path / "ref", quiet=True)

    def crash():
        raise RuntimeError("node lost")

    _fault_at(monkeypatch, 6, crash)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node lost"):
        run_pretrain(_cfg(tiny, *extra), out, quiet=True)
    monkeypatch.undo()
    st = load(out / "last.pt")
    assert (st["epoch"], st["step"]) == (1, 2)  # saved after step 5, by the clock alone
    res = run_pretrain(_cfg(tiny, *extra), out, resume=True, quiet=True)
    _same_model(tmp_path / "ref" / "last.pt", out / "last.pt")
    assert "probe_step" in ref["history"][1]
    assert _strip(res["history"]) == _strip(ref["history"])


def test_unwritable_run_folder_is_a_one_line_error(tiny, reference, tmp_path, monkeypatch):
    """A run folder that cannot be written (read-only file system): SkelclError, last.pt untouched."""
    import errno
    import shutil

    from skelcl.train import run as run_mod

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "last.pt").read_bytes()

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(run_mod, "remove_partial_writes", read_only)
    with pytest.raises(SkelclError, match=r"cannot write to the run folder .*: Read-only file system$"):
        run_pretrain(_cfg(tiny, "train.epochs=3"), out, resume=True, quiet=True)
    assert (out / "last.pt").read_bytes() == before
