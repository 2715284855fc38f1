"""A new user's second day (issue 22): inputs that used to end in a traceback, run silently or leave a
folder behind. Each test names the input it stands for; every failed start must leave no run folder."""

import pytest
from helpers import FT, PRE, cli_error

from skelcl.cli import main


@pytest.fixture(scope="module")
def pre_run(tiny, tmp_path_factory):
    """A finished 1-epoch pretraining run (width 0.125)."""
    out = tmp_path_factory.mktemp("runs") / "pre"
    assert main(["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE, "train.epochs=1"]) == 0
    return out


# ---------------------------------------------------------------------------------------------------
# 5. KEY=VALUE overrides anywhere on the line.


def test_overrides_before_and_after_options(tiny, tmp_path, capsys):
    from skelcl.cli import build_parser, parse

    out = tmp_path / "x"
    # the last override is read (its bad value is what fails), so none was left unrecognized
    argv = ["pretrain", "--config", "pretrain_cpu", "--data", str(tiny), "model.width=0.125",
            "--out", str(out), "train.epochs=0"]  # fmt: skip
    cli_error(capsys, argv, "train.epochs must be an integer >= 1, got 0")
    assert not out.exists()
    parser = build_parser()
    for argv, want in [
        (["pretrain", "a.b=1", "--data", "D", "c.d=2", "--out", "X", "e.f=3"], ["a.b=1", "c.d=2", "e.f=3"]),
        (["finetune", "--out", "X", "a.b=1", "--pretrained", "P", "c.d=2"], ["a.b=1", "c.d=2"]),
        (["demo", "a.b=1", "--out", "X", "--quiet", "c.d=2"], ["a.b=1", "c.d=2"]),
        (["experiment", "--out", "X", "a.b=1", "--quiet", "c.d=2"], ["a.b=1", "c.d=2"]),
        (["config", "show", "pretrain_cpu", "a.b=1"], ["a.b=1"]),
    ]:
        assert parse(parser, argv).overrides == want, argv
    # a command without overrides still refuses them, and options stay options
    with pytest.raises(SystemExit):
        parse(parser, ["export", "R", "--out", "X", "a.b=1"])
    with pytest.raises(SystemExit):
        parse(parser, ["pretrain", "--out", "X", "--bogus=1"])
    # config show reads overrides given after the name
    assert main(["config", "show", "pretrain_cpu", "train.epochs=7", "model.width=0.5"]) == 0
    shown = capsys.readouterr().out
    assert "train.epochs = 7" in shown and "model.width = 0.5" in shown


# ---------------------------------------------------------------------------------------------------
# 1. Choosing a pretraining method chooses its views; a recipe that cannot serve it is refused up front.


def test_method_brings_its_recipe(tiny, tmp_path, capsys):
    import yaml

    from skelcl.train import config

    out = tmp_path / "rvt"
    argv = ["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *PRE, "train.epochs=1"]
    assert main([*argv, "pretrain.method=rvtclr"]) == 0  # was: IndexError in augment/params.py
    ran = yaml.safe_load((out / "config.yaml").read_text())["pretrain"]
    assert (ran["method"], ran["recipe"]) == ("rvtclr", "rvtclr")
    for method in ("skeletonclr", "rvtclr", "aimclr"):
        for name in ("pretrain_skeletonclr", "pretrain_cpu", "pretrain_aimclr"):
            cfg = config.resolve(name, [f"pretrain.method={method}"])
            assert cfg["pretrain"]["recipe"] == method, (name, method)
    # a file that changes the method of its base gets the method's recipe too
    f = tmp_path / "mine.yaml"
    f.write_text("base: pretrain_cpu\npretrain:\n  method: aimclr\n")
    assert config.resolve(str(f))["pretrain"]["recipe"] == "aimclr"
    # a recipe given explicitly is kept
    assert (
        config.resolve("pretrain_cpu", ["pretrain.recipe=rvtclr", "pretrain.method=skeletonclr"])["pretrain"][
            "recipe"
        ]
        == "rvtclr"
    )


@pytest.mark.parametrize("method", ["rvtclr", "aimclr"])
def test_recipe_with_too_few_views_refused_before_the_folder(tiny, tmp_path, capsys, method):
    out = tmp_path / "r"
    argv = ["pretrain", "--data", str(tiny), "--out", str(out), *PRE, "train.epochs=1",
            f"pretrain.method={method}", "pretrain.recipe=skeletonclr"]  # fmt: skip
    cli_error(capsys, argv, f"pretrain.method {method} needs 3 views", "gives 2", f"pretrain.recipe={method}")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------
# 4. Export to a folder, a run resumed by the other command: one-line errors.


@pytest.fixture(scope="module")
def ft_run(tiny, pre_run, tmp_path_factory):
    """A finished 1-epoch fine-tuning run on pre_run's encoder (width 0.125; the preset says 0.25)."""
    out = tmp_path_factory.mktemp("runs") / "ft"
    ft = [a for a in FT if not a.startswith("model.width")]
    argv = ["finetune", "--config", "finetune_cpu", "--data", str(tiny), "--out", str(out), "--quiet",
            "--pretrained", str(pre_run), *ft, "train.epochs=1"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_export_to_a_folder_or_onto_its_checkpoint(pre_run, tmp_path, capsys):
    folder = tmp_path / "exported"
    folder.mkdir()
    cli_error(capsys, ["export", str(pre_run), "--out", str(folder)], f"{folder} is a folder", "encoder.pt")
    assert list(folder.iterdir()) == []
    (tmp_path / "enc.json").mkdir()
    cli_error(capsys, ["export", str(pre_run), "--out", str(tmp_path / "enc.pt")], "enc.json is a folder")
    cli_error(capsys, ["export", str(pre_run), "--out", str(tmp_path / "enc2.json")], "suffix .json")
    before = (pre_run / "last.pt").read_bytes()
    cli_error(capsys, ["export", str(pre_run), "--out", str(pre_run / "last.pt")], "is the checkpoint")
    assert (pre_run / "last.pt").read_bytes() == before
    assert main(["export", str(pre_run), "--out", str(folder / "encoder.pt")]) == 0
    assert (folder / "encoder.pt").is_file() and (folder / "encoder.json").is_file()


def test_resume_with_the_other_command(pre_run, ft_run, capsys):
    line = cli_error(capsys, ["pretrain", "--resume", str(ft_run)], "fine-tuning run")
    assert f"skelcl finetune --resume {ft_run}" in line
    line = cli_error(capsys, ["finetune", "--resume", str(pre_run)], "pretraining run")
    assert f"skelcl pretrain --resume {pre_run}" in line


# ---------------------------------------------------------------------------------------------------
# 3. Settings a pretrained encoder fixes: refused when they disagree, recorded as what ran.


def test_pretrained_encoder_settings_are_what_runs(tiny, pre_run, ft_run, tmp_path, capsys):
    import yaml

    from skelcl.train import checkpoint

    assert yaml.safe_load((pre_run / "config.yaml").read_text())["model"]["width"] == 0.125
    for f in (ft_run / "config.yaml",):
        assert yaml.safe_load(f.read_text())["model"]["width"] == 0.125  # not the preset's 0.25
    st = checkpoint.load_checkpoint(ft_run)
    assert st["config"]["model"]["width"] == 0.125 and st["backbone"]["width"] == 0.125
    out = tmp_path / "ft"
    base = [
        "finetune",
        "--data",
        str(tiny),
        "--out",
        str(out),
        "--pretrained",
        str(pre_run),
        "train.epochs=1",
    ]
    cli_error(capsys, [*base, "model.width=0.5"], "model.width=0.5", "0.125", str(pre_run))
    cli_error(capsys, [*base, "model.strides=[2,5]"], "model.strides=[2, 5]", "[2, 5, 8]")
    cli_error(capsys, [*base, "model.backbone=agcn"], "model.backbone=agcn", "stgcn")
    assert not out.exists()
    # the same value as the encoder's is fine; config show tells what would run
    assert main(["config", "show", "finetune", f"finetune.pretrained={pre_run}"]) == 0
    assert "model.width = 0.125" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# 7. A batch larger than the training set, more bodies than the cache holds: warned with the numbers.


def test_batch_and_bodies_the_data_cannot_honour(tiny, pre_run, tmp_path, capsys):
    from skelcl.data import open_cache
    from skelcl.train.pretrain import open_split

    have = open_cache(tiny).max_bodies
    n = len(open_split({"path": str(tiny), "split": "xsub", "part": "train"}))
    out = tmp_path / "pre"
    small = [a for a in PRE if not a.startswith(("data.bodies", "train.batch_size"))]
    argv = ["pretrain", "--data", str(tiny), "--out", str(out), "--quiet", *small, "train.epochs=1",
            f"train.batch_size={n + 5}", f"data.bodies={have + 3}"]  # fmt: skip
    assert main(argv) == 0
    log = (out / "log.txt").read_text()
    printed = capsys.readouterr().out
    for text in (f"train.batch_size={n + 5} is larger than the {n} training sequences",
                 f"data.bodies={have + 3}, but {tiny} holds at most {have}"):  # fmt: skip
        assert text in log and text in printed, text
    out = tmp_path / "ft"
    argv = ["finetune", "--data", str(tiny), "--out", str(out), "--quiet", "--pretrained", str(pre_run), *FT,
            "train.epochs=1", "train.batch_size=500", "finetune.val_fraction=0"]  # fmt: skip
    assert main(argv) == 0
    assert "train.batch_size=500 is larger than the" in (out / "log.txt").read_text()


# ---------------------------------------------------------------------------------------------------
# 2. One process per run folder: RUN/.lock.

HOLD = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(300)
"""


def _holder(folder):
    """A process that holds folder/.lock as a running skelcl run does, until killed."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_the_same_folder_is_refused(tiny, pre_run, tmp_path, capsys, monkeypatch):
    import shutil

    from skelcl.errors import SkelclError
    from skelcl.train import checkpoint
    from skelcl.train import run as run_mod

    run = tmp_path / "run"
    shutil.copytree(pre_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    proc = _holder(run)
    try:
        new = ["pretrain", "--data", str(tiny), "--out", str(run), "--overwrite", *PRE, "train.epochs=1"]
        for argv in (["pretrain", "--resume", str(run), "train.epochs=2"], new):
            cli_error(capsys, argv, "in use by another skelcl run", f"pid {proc.pid}")
        with pytest.raises(SkelclError, match=f"pid {proc.pid}"):  # two starts that both passed check_out
            run_mod.lock_run(run)
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
        assert after == {k: v for k, v in before.items() if k != ".lock"}  # nothing touched
        # torchrun ranks other than 0 neither take nor check the lock
        monkeypatch.setenv("RANK", "1")
        run_mod.check_unlocked(run)
        run_mod.lock_run(run)
        monkeypatch.delenv("RANK")
    finally:
        proc.kill()  # SIGKILL: the kernel drops its lock; the stale .lock file stays
        proc.wait()
    assert (run / ".lock").is_file()
    assert main(["pretrain", "--resume", str(run), "--quiet", "train.epochs=2"]) == 0
    assert checkpoint.load_checkpoint(run)["epoch"] == 2
    # the same process may run in the folder again (a run of it that ended without closing is taken over)
    run_mod.lock_run(run)
    run_mod.lock_run(run)
    run_mod.unlock_run(run)


# ---------------------------------------------------------------------------------------------------
# 10. Texts that say what runs; whole descriptions in `config list`; the licence file ships.


def _comment_block(name) -> str:
    from skelcl.train import config

    lines = []
    for line in config.config_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(x for x in lines if x)


def test_cpu_preset_texts_agree_with_the_demo(capsys):
    from skelcl.train import config

    demo = config.resolve("demo")
    method, epochs = demo["pretrain"]["pretrain"]["method"], demo["pretrain"]["train"]["epochs"]
    cpu = config.resolve("pretrain_cpu")
    same = (cpu["pretrain"]["method"], cpu["train"]["epochs"]) == (method, epochs)
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("pretrain_cpu"))
    assert f"{cpu['train']['epochs']} epochs" in line and cpu["pretrain"]["method"] in line.lower()
    for text in (line, _comment_block("pretrain_cpu")):
        if "demo" in text and not same:  # a text that names the demo says how the demo differs
            assert method in text.lower() and str(epochs) in text, text
        assert "demo's pretraining" not in text and "settings of `skelcl demo`" not in text, text


def test_config_list_shows_whole_first_sentences(capsys, monkeypatch):
    from skelcl.train import config

    monkeypatch.setenv("COLUMNS", "100")
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out.split("\n\n")[0].splitlines()
    entries, name = {}, None
    for line in out:
        if not line.startswith(" "):
            name = line.split()[0]
            entries[name] = line[len(name) :].strip()
        else:
            entries[name] += " " + line.strip()
        assert len(line) <= 100, line
    assert sorted(entries) == config.builtin_names()
    for name, shown in entries.items():
        block = _comment_block(name)
        assert block.startswith(shown), (name, shown)
        assert shown[-1] in ".?!" and block[len(shown) : len(shown) + 1] in ("", " "), (name, shown)


def test_license_file_ships_in_sdist_and_wheel(tmp_path):
    import shutil
    import subprocess
    import sys
    import tarfile
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the skelcl authors" in text
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, src / name)
    for name in ("skelcl", "kernels"):
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    code = "import sys\nfrom setuptools import build_meta as b\nout = sys.argv[1]\n"  # build_meta edits argv
    code += "b.build_sdist(out)\nb.build_wheel(out)\n"
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    sdist = next(p.name for p in (tmp_path / "dist").glob("*.tar.gz"))
    wheel = next(p.name for p in (tmp_path / "dist").glob("*.whl"))
    with tarfile.open(tmp_path / "dist" / sdist) as tar:
        names = tar.getnames()
        assert any(n.endswith("/LICENSE") and n.count("/") == 1 for n in names), names
        pkg_info = tar.extractfile(next(n for n in names if n.endswith("/PKG-INFO") and n.count("/") == 1))
        meta = pkg_info.read().decode()
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    with zipfile.ZipFile(tmp_path / "dist" / wheel) as whl:
        names = whl.namelist()
        lic = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert whl.read(lic).decode() == text
        meta = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
