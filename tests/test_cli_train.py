"""`skelcl pretrain / finetune / config / export` from a user's side: failed starts leave nothing behind,
config values are checked with one-line errors, logs, Ctrl-C, resume with more epochs, checkpoints kept,
export, file modes, built-in names never shadowed by the working directory."""

import json
import os
import shutil
import stat
import sys

import pytest
import torch
from helpers import FT, PRE, cli_error

from skelcl import augment
from skelcl.cli import main
from skelcl.errors import SkelclError
from skelcl.train import checkpoint
from skelcl.train import run as run_mod


@pytest.fixture(scope="module")
def pre_run(tiny, tmp_path_factory):
    """A finished 2-epoch pretraining run, kept epochs 1 and 2."""
    out = tmp_path_factory.mktemp("runs") / "pre"
    argv = ["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE, "train.epochs=2",
            "train.keep_every=1"]  # fmt: skip
    assert main(argv) == 0
    return out


# ---------------------------------------------------------------------------------------------------
# 1. Failed starts write nothing; a folder without a checkpoint is reused; --overwrite.


def test_failed_starts_leave_no_folder(tiny, pre_run, tmp_path, capsys):
    out = tmp_path / "run"
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny, damaged)
    data = (damaged / "frames.bin").read_bytes()
    (damaged / "frames.bin").write_bytes(data[:-100])
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes((pre_run / "last.pt").read_bytes()[:-50])
    cases = [
        (["pretrain", "--data", str(tmp_path / "nothing")], "nothing"),
        (["pretrain", "--data", str(damaged)], "frames.bin"),
        (["pretrain", "--data", str(tiny), "train.epoch=1"], "unknown key 'train.epoch'"),
        (["pretrain", "--data", str(tiny), "train.epochs=0"], "train.epochs must be an integer >= 1"),
        (["pretrain", "--data", str(tiny), "pretrain.recipe=nope"], "unknown augment recipe 'nope'"),
        (["finetune", "--data", str(tiny), "--pretrained", str(tmp_path / "missing")], "missing"),
        (["finetune", "--data", str(tiny), "--pretrained", str(bad_ckpt)], "corrupt"),
        (["finetune", "--data", str(damaged)], "frames.bin"),
        (["finetune", "--data", str(tiny), "--config", "nope"], "no config named 'nope'"),
    ]
    for argv, part in cases:
        cli_error(capsys, [*argv, "--out", str(out)], part)
        assert not out.exists(), argv


def test_folder_without_checkpoint_is_reused_and_resume_says_so(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("stale: true\n")  # what a start stopped before its first epoch leaves
    (out / "log.txt").write_text("old line\n")
    (out / "notes.md").write_text("mine\n")
    cli_error(capsys, ["pretrain", "--resume", str(out)], "no checkpoint last.pt", "without --resume")
    assert main(["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE, "train.epochs=1"]) == 0
    assert "old line" not in (out / "log.txt").read_text()  # a fresh log
    assert "stale" not in (out / "config.yaml").read_text()
    assert (out / "notes.md").read_text() == "mine\n"  # files that are not run files stay
    assert checkpoint.load_checkpoint(out)["epoch"] == 1


def test_folder_with_checkpoint_needs_resume_or_overwrite(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE]
    assert main([*argv, "train.epochs=2", "train.keep_every=1"]) == 0
    assert (out / "epoch_2.pt").is_file()
    cli_error(capsys, [*argv, "train.epochs=1"], "already holds a run", f"--resume {out}", "--overwrite")
    assert main([*argv, "train.epochs=1", "--overwrite"]) == 0
    assert checkpoint.load_checkpoint(out)["epoch"] == 1
    assert not (out / "epoch_2.pt").exists()  # the old run's files are gone
    cli_error(capsys, ["pretrain", "--resume", str(out), "--overwrite"], "give one of them")
    (tmp_path / "file").write_text("x")
    cli_error(capsys, [*argv, "train.epochs=1", "--out", str(tmp_path / "file")], "is a file")


# ---------------------------------------------------------------------------------------------------
# 2. Config values.


@pytest.mark.parametrize(
    "item, part",
    [
        ("model.strides=5", "model.strides must be a list of integers each in [2, 10], got 5"),
        ("data.bodies=1.5", "data.bodies must be an integer >= 1, got 1.5"),
        ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
        ("train.epochs=-1", "train.epochs must be an integer >= 1, got -1"),
        ("train.schedule=linear", "train.schedule must be one of cosine, step, constant"),
        ("pretrain.method=simclr", "pretrain.method must be one of"),
    ],
)
def test_bad_config_values_are_one_line_errors(tiny, tmp_path, capsys, item, part):
    cli_error(capsys, ["pretrain", "--data", str(tiny), "--out", str(tmp_path / "r"), item], part)
    assert not (tmp_path / "r").exists()


def test_auto_queue_sizes_override_an_integer_preset(tiny, tmp_path, capsys):
    """pretrain_cpu holds integer queue sizes; `auto` (one epoch of keys) is a valid value for both."""
    import yaml

    from skelcl.data import open_cache

    out = tmp_path / "run"
    small = [a for a in PRE if "queue_size" not in a]
    argv = ["pretrain", "--config", "pretrain_cpu", "--data", str(tiny), "--out", str(out), "--quiet", *small,
            "train.epochs=1", "pretrain.queue_size=auto", "pretrain.snippet_queue_size=auto"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())["pretrain"]
    assert saved["queue_size"] == "auto" and saved["snippet_queue_size"] == "auto"
    state = checkpoint.load_checkpoint(out)["model"]
    keys = len(open_cache(tiny).split("xsub", "train")) // 6 * 6  # batch 6, the partial batch dropped
    assert state["queue.data"].shape[0] == keys
    assert state["squeue.data"].shape[0] == keys * 19
    assert main(["config", "show", "pretrain_cpu", "pretrain.queue_size=auto"]) == 0
    assert any(
        line.startswith("pretrain.queue_size = auto ") for line in capsys.readouterr().out.splitlines()
    )
    cli_error(capsys, ["config", "show", "pretrain_cpu", "pretrain.queue_size=big"], "pretrain.queue_size")


def test_reflect_recipe_reports_reversed_frames(tiny, tmp_path, capsys):
    """A recipe asking for reflect padding: the history's reversed_frames is the share of frames mirrored
    in time (> 0 here: every tiny sequence is shorter than the 300-frame window)."""
    import yaml

    from skelcl.augment.recipe import BUILTIN_PATH

    raw = yaml.safe_load(BUILTIN_PATH.read_text())["skeletonclr"]
    for view in raw["views"]:
        view["ops"]["crop"]["pad"] = "reflect"
    path = tmp_path / "reflect.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE, "train.epochs=1",
            f"pretrain.recipe={path}"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    (h,) = json.loads((out / "metrics.json").read_text())["history"]
    assert 0.05 < h["reversed_frames"] < 0.95


def test_cuda_without_cuda_is_a_clear_error(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cmd in ("pretrain", "finetune"):
        cli_error(capsys, [cmd, "--data", str(tiny), "--out", str(tmp_path / "r"), "train.device=cuda"],
             "train.device=cuda but CUDA is not available", "train.device=cpu")  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_help_lists_presets_and_config_command_shows_keys(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    for name in ("pretrain_cpu", "pretrain_skeletonclr", "pretrain_aimclr", "skelcl config show"):
        assert name in out
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    assert "finetune_cpu" in out and "semi" not in out and "scratch" not in out
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    assert "pretrain_cpu" in out and "finetune_cpu" in out and "augment" not in out.split()
    assert main(["config", "show", "pretrain_cpu", "train.epochs=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("train.epochs = 3 ") and "an integer >= 1" in line for line in lines)
    assert any(line.startswith("model.width = 0.25 ") for line in lines)  # from the preset, over its base
    cli_error(capsys, ["config", "show", "pretrain_cpu", "train.epochs=x"], "expected a number")


def test_cpu_presets_are_small_versions_of_the_paper_schedules():
    from skelcl.train import config

    cpu, gpu = config.resolve("pretrain_cpu"), config.resolve("pretrain_skeletonclr")
    assert cpu["train"]["epochs"] < gpu["train"]["epochs"] and cpu["model"]["width"] < gpu["model"]["width"]
    assert set(cpu) == set(gpu) and set(cpu["pretrain"]) == set(gpu["pretrain"])  # same keys as the base
    # the default snippet matching is the aligned variant, not feature matching
    assert (
        gpu["pretrain"]["match"] == "aligned"
        and config.resolve("pretrain_aimclr")["pretrain"]["match"] == "aligned"
    )
    assert config.resolve("finetune_cpu")["train"]["epochs"] < config.resolve("finetune")["train"]["epochs"]


# ---------------------------------------------------------------------------------------------------
# 4. Logs, Ctrl-C, resume with more epochs.


def test_log_header_and_plain_epoch_lines(pre_run, capsys):
    log = (pre_run / "log.txt").read_text().splitlines()
    assert "command: skelcl pretrain --data" in log[0]
    head = "\n".join(log[:6])
    for part in ("skelcl 0.1.0", "git revision", "torch ", "triton ", "device: cpu", "seeds: train.seed=0"):
        assert part in head, head
    epochs = [line for line in log if "] epoch " in line]
    assert len(epochs) == 2 and "ETA" in epochs[0] and "lr " in epochs[0] and "run time" in epochs[1]
    assert all("\r" not in line for line in log)


def test_epoch_lines_printed_without_bars_when_not_a_terminal(tiny, tmp_path, capsys):
    for quiet in ([], ["--quiet"]):
        out = tmp_path / f"run{len(quiet)}"
        assert main(["pretrain", "--data", str(tiny), "--out", str(out), *quiet, *PRE, "train.epochs=1"]) == 0
        cap = capsys.readouterr()
        assert "epoch 1/1: loss" in cap.out and "command: skelcl pretrain" in cap.out
        assert "\r" not in cap.out + cap.err and "it/s" not in cap.err  # no tqdm bar off a terminal


def _interrupt_at(monkeypatch, epoch):
    """Ctrl-C while logging `epoch` (after its training, before its checkpoint)."""
    orig = run_mod.RunDir.log_epoch

    def log_epoch(self, done, text, seconds):
        if done == epoch:
            raise KeyboardInterrupt
        return orig(self, done, text, seconds)

    monkeypatch.setattr(run_mod.RunDir, "log_epoch", log_epoch)


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE, "train.epochs=3"]
    _interrupt_at(monkeypatch, 1)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "nothing saved" in err and "run the same command again" in err
    monkeypatch.undo()
    _interrupt_at(monkeypatch, 2)
    assert main(argv) == 130  # the folder of the first attempt is reused
    err = capsys.readouterr().err
    assert "last checkpoint: epoch 1/3" in err and f"skelcl pretrain --resume {out}" in err
    assert "interrupted" in (out / "log.txt").read_text()
    monkeypatch.undo()
    assert main(["pretrain", "--resume", str(out), "--quiet"]) == 0
    st = checkpoint.load_checkpoint(out)
    assert st["epoch"] == 3 and [h["epoch"] for h in st["history"]] == [1, 2, 3]


def test_resume_extends_epochs(pre_run, tmp_path, capsys):
    run = tmp_path / "ext"
    shutil.copytree(pre_run, run)
    cli_error(capsys, ["pretrain", "--resume", str(run), "train.epochs=1"], "below the 2 epochs done")
    cli_error(capsys, ["pretrain", "--resume", str(run), "model.width=1"], "is not allowed", "train.epochs")
    cli_error(
        capsys, ["pretrain", "--resume", str(run), "train.epochs=-3"], "train.epochs must be an integer"
    )
    assert main(["pretrain", "--resume", str(run), "--quiet", "train.epochs=3"]) == 0
    st = checkpoint.load_checkpoint(run)
    assert st["epoch"] == 3 and len(st["history"]) == 3
    assert "epochs: 3" in (run / "config.yaml").read_text()
    assert "extended from 2 to 3" in (run / "log.txt").read_text()


# ---------------------------------------------------------------------------------------------------
# 5. Checkpoints, validation, history, export, file modes.


def test_kept_checkpoints_history_and_export(pre_run, tmp_path, capsys):
    assert {p.name for p in pre_run.glob("*.pt")} == {"last.pt", "epoch_1.pt", "epoch_2.pt"}
    from skelcl.train import load_checkpoint  # the documented loader

    assert load_checkpoint(pre_run, 1)["epoch"] == 1 and load_checkpoint(pre_run / "epoch_2.pt")["epoch"] == 2
    with pytest.raises(SkelclError, match="no best.pt"):
        checkpoint.load_checkpoint(pre_run, "best")  # pretraining has no validation
    hist = json.loads((pre_run / "metrics.json").read_text())["history"]
    assert all("lr" in h and "snippet_match_acc" in h and "loss" in h for h in hist)
    assert all(h["reversed_frames"] == 0 for h in hist)  # default recipes never play time backwards

    enc = tmp_path / "encoder.pt"
    assert main(["export", str(pre_run), "--out", str(enc)]) == 0
    state = torch.load(enc, weights_only=True)
    info = json.loads(enc.with_suffix(".json").read_text())
    from skelcl.models import Backbone

    net = Backbone(**info["backbone"])
    net.load_state_dict(state)  # every key matches
    want = checkpoint.load_checkpoint(pre_run)["model"]
    assert state and all(torch.equal(v, want["encoder_q." + k]) for k, v in state.items())
    assert info["epoch"] == 2 and info["kind"] == "pretrain"
    cli_error(
        capsys, ["export", str(pre_run), "--out", str(tmp_path / "e.pt"), "--which", "best"], "no best.pt"
    )


def test_finetune_validation_best_checkpoint_and_file_modes(tiny, pre_run, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "ft"
        argv = ["finetune", "--data", str(tiny), "--out", str(out), "--pretrained", str(pre_run), "--quiet",
                *FT, "train.epochs=2", "finetune.val_fraction=0.3"]  # fmt: skip
        assert main(argv) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    hist = m["history"]
    assert all("val_avg_mAP" in h and "val_avg_mAP_0.1:0.5" in h and "lr" in h for h in hist)
    assert m["val_sequences"] >= 1 and m["best_epoch"] in (1, 2)
    best = checkpoint.load_checkpoint(out, "best")
    assert best["epoch"] == m["best_epoch"]
    assert best["history"][-1]["val_avg_mAP"] == max(h["val_avg_mAP"] for h in hist)
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.json", "log.txt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    # the encoder of a fine-tuning run exports too
    assert main(["export", str(out), "--out", str(tmp_path / "ft_enc.pt"), "--which", "best"]) == 0
    assert torch.load(tmp_path / "ft_enc.pt", weights_only=True)


def test_validation_part_is_carved_from_the_labeled_training_sequences():
    import numpy as np

    from skelcl.train.finetune import holdout

    labeled = np.array([3, 5, 8, 9, 12, 15, 20, 21, 30, 31])
    tr, va = holdout(labeled, 0.2, seed=0)
    assert len(va) == 2 and len(tr) == 8 and set(tr) | set(va) == set(labeled) and not set(tr) & set(va)
    assert np.array_equal(va, holdout(labeled, 0.2, seed=0)[1])  # seeded
    assert any(not np.array_equal(va, holdout(labeled, 0.2, seed=s)[1]) for s in range(1, 6))
    assert len(holdout(labeled, 0.0, 0)[1]) == 0 and len(holdout(labeled[:3], 0.01, 0)[1]) == 1
    with pytest.raises(SkelclError, match="val_fraction"):
        holdout(labeled[:2], 1.0, 0)


def test_without_tensorboard_runs_still_work(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE, "train.epochs=1"]) == 0
    assert "tensorboard is not installed" in (out / "log.txt").read_text()
    assert not (out / "tb").exists() and json.loads((out / "metrics.json").read_text())["history"]


def test_checkpoint_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = checkpoint.save(tmp_path / "a.pt", {"x": 1}, copies=[tmp_path / "b.pt"])
    finally:
        os.umask(old)
    assert (
        stat.S_IMODE(p.stat().st_mode) == 0o640 and stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o640
    )
    assert checkpoint.load(tmp_path / "b.pt") == {"x": 1}


# ---------------------------------------------------------------------------------------------------
# 9. Built-in names are never shadowed by the working directory.


def test_builtin_recipe_not_shadowed_by_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aimclr").mkdir()  # a folder named like a built-in recipe
    (tmp_path / "skeletonclr").write_text("garbage: [")  # and a file
    assert len(augment.load_recipe("aimclr").views) == 3
    assert augment.load_recipe("skeletonclr").views
    mine = augment.load_recipe("finetune")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.yaml").write_text(
        "window: null\nviews:\n  - name: input\n    frames: null\n    ops:\n      flip: {p: 1.0}\n"
    )
    r = augment.load_recipe("sub/r.yaml")
    assert len(r.views) == 1 and r != mine
    with pytest.raises(SkelclError, match="unknown augment recipe 'r'"):
        augment.load_recipe("r")
    with pytest.raises(SkelclError, match="cannot read"):
        augment.load_recipe("missing.yaml")


# ---------------------------------------------------------------------------------------------------
# 10. Install size: a CPU run needs neither triton nor tensorboard (both are extras).

_BLOCKED_RUN = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("triton", "tensorboard"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import torch
import skelcl.cli, skelcl.train.finetune, skelcl.train.pretrain
from skelcl.train import config
from skelcl.train.pretrain import build_moco
cfg = config.resolve("pretrain_cpu", ["model.width=0.125", "pretrain.queue_size=8",
                                      "pretrain.snippet_queue_size=40"])
torch.manual_seed(0)
model = build_moco(cfg, 16)
x = torch.randn(4, 150, 1, 25, 3)
align = torch.arange(model.num_snippets).repeat(4, 1)  # query snippet i <-> key snippet i
loss, stats = model([x, x.flip(1)], epoch=0, align=align)
loss.backward()
assert torch.isfinite(loss)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("triton", "tensorboard")))
"""


def test_cpu_training_step_needs_neither_triton_nor_tensorboard():
    import subprocess

    res = subprocess.run([sys.executable, "-c", _BLOCKED_RUN], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_git_revision_of_a_checkout_or_unknown(tmp_path):
    import re

    rev = run_mod.git_revision()
    assert re.fullmatch(r"[0-9a-f]{12}( \+ uncommitted changes)?", rev), rev
    assert run_mod.git_revision(tmp_path) == "unknown"  # not a checkout (an installed copy)
    (tmp_path / ".git").mkdir()  # a folder named .git that git does not accept, or another project
    assert run_mod.git_revision(tmp_path) == "unknown"
    head = run_mod.run_header("auto", {"train.seed": 3})
    assert head[0].startswith("command: ") and "seeds: train.seed=3" in head[-1]


def test_bars_only_on_a_terminal_and_never_with_quiet(tmp_path, monkeypatch, capsys):
    cfg = {"train": {"seed": 0, "epochs": 2}}
    monkeypatch.setattr(run_mod, "show_bars", lambda: True)
    assert run_mod.RunDir(tmp_path / "a", cfg).bars
    assert not run_mod.RunDir(tmp_path / "b", cfg, quiet=True).bars
    monkeypatch.setattr(run_mod, "show_bars", lambda: False)
    r = run_mod.RunDir(tmp_path / "c", cfg)
    assert not r.bars
    r.start_epochs(0, 2)
    r.log_epoch(1, "loss 1.0", 0.5)
    r.close()
    out = capsys.readouterr().out
    assert "epoch 1/2: loss 1.0 (0.5 s, ETA" in out  # printed, not only written to log.txt
    assert "epoch 1/2: loss 1.0" in (tmp_path / "c" / "log.txt").read_text()


def test_json_and_segment_outputs_follow_the_umask(tmp_path, capsys):
    from skelcl.eval import Segment
    from skelcl.eval.io import write_segments_dir, write_segments_json

    segs = {"v1": [Segment(0, 0, 5, 0.9)]}
    old = os.umask(0o022)
    try:
        write_segments_dir(tmp_path / "gt", segs)
        write_segments_json(tmp_path / "pred.json", segs)
        js = tmp_path / "ev.json"
        assert main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred.json"),
                     "--classes", "1", "--json", str(js)]) == 0  # fmt: skip
    finally:
        os.umask(old)
    capsys.readouterr()
    for p in (tmp_path / "gt" / "v1.txt", tmp_path / "pred.json", js):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_full_scale_schedule_on_a_cpu_gets_a_note(capsys, monkeypatch):
    import argparse

    from skelcl.train import config
    from skelcl.train.commands import _gpu_schedule_note

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = argparse.Namespace(command="pretrain", config="pretrain_skeletonclr", resume=None)
    _gpu_schedule_note(args, config.resolve("pretrain_skeletonclr"))
    assert "--config pretrain_cpu" in capsys.readouterr().err
    _gpu_schedule_note(args, config.resolve("pretrain_cpu"))
    assert capsys.readouterr().err == ""


def test_ctrl_c_before_the_run_folder_exists(tiny, tmp_path, capsys, monkeypatch):
    import skelcl.train.pretrain as pre

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pre, "open_split", stop)
    assert main(["pretrain", "--data", str(tiny), "--out", str(tmp_path / "r"), *PRE]) == 130
    assert "before the run folder was created: nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
