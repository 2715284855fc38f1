"""`skelcl demo` end to end at toy sizes: paired comparisons per protocol with step counts, the smoke-test
note, output files, and its error paths."""

import json

from skelcl.cli import main

TINY_DEMO = [
    "data.sequences=14", "model.width=0.125", "pretrain.train.epochs=1", "pretrain.train.batch_size=6",
    "finetune.train.steps=3", "report.sequences=2",
    "protocols={few: {protocol: finetune, label_fraction: 0.5}, "
    "linear: {protocol: linear, label_fraction: 1.0}}",
]  # fmt: skip


def test_demo_prints_paired_differences_with_step_counts(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", *TINY_DEMO]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    few, lin = m["comparisons"]
    assert (few["name"], few["reference"]) == ("few", "random init (trainable)")
    assert (lin["name"], lin["reference"]) == ("linear", "random init (frozen)")
    for c in (few, lin):
        assert c["seeds"] == [0, 1] and c["steps"] == 3
        assert all(0 <= v <= 100 for v in c["pretrained"] + c["random"])
        for s, p, r in zip(c["seeds"], c["pretrained"], c["random"]):
            assert (
                f"label seed {s}: pretrained {p:.1f}, {c['reference']} {r:.1f}: {p - r:+.1f} points"
                in printed
            )
    assert "3 optimizer steps per run" in printed and "smoke test" in printed
    # every run exists with the protocol it claims; the frozen reference is a random, frozen encoder
    runs = out / "runs"
    cases = [("few_pretrained_s1", "finetune", True), ("few_random_s1", "finetune", False),
             ("linear_pretrained_s0", "linear", True), ("linear_random_s0", "linear", False)]  # fmt: skip
    for name, proto, pre in cases:
        cfg = json.loads((runs / name / "metrics.json").read_text())
        assert cfg["protocol"] == proto and (cfg["encoder"] != "random init") == pre
    report = (out / "report.md").read_text()
    # the command, versions and revision come first, on the terminal, in log.txt and in report.md
    assert printed.startswith("command: skelcl demo --out") and "git revision" in printed.splitlines()[1]
    assert (out / "log.txt").read_text().split("\n")[0].endswith(printed.splitlines()[0])
    assert "command: skelcl demo" in report.split("## ")[0] and "torch " in report.split("## ")[0]
    assert "smoke test" in report and "label seed 1" in report and "curves.png" in report
    for name in ("curves.png", "segments.png"):
        assert (out / name).stat().st_size > 1000
    # the same output directory is not reused; a bad key is named
    assert main(["demo", "--out", str(out), "--quiet", *TINY_DEMO]) == 2
    assert "already holds a demo" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d2"), "pretrain.train.epoch=1"]) == 2
    assert "pretrain.train.epoch" in capsys.readouterr().err


def test_demo_nproc_pretrains_in_data_parallel_processes(tmp_path, capfd):
    """--nproc 2: the pretraining runs as 2 processes with half the batch each (the global batch stays) and
    half the threads; the rest of the demo is unchanged. A batch that does not split is refused first."""
    from helpers import cli_error

    from skelcl.train.checkpoint import load

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", "--nproc", "2", *TINY_DEMO]) == 0
    st = load(out / "pretrain" / "last.pt")
    assert st["world_size"] == 2 and st["config"]["train"]["batch_size"] == 3
    assert st["config"]["train"]["num_threads"] == 1  # the demo's 2 threads, split
    m = json.loads((out / "metrics.json").read_text())
    assert m["pretrain_processes"] == 2 and [c["steps"] for c in m["comparisons"]] == [3, 3]
    assert "smoke test" in capfd.readouterr().out
    odd = tmp_path / "odd"
    cli_error(capfd, ["demo", "--out", str(odd), "--quiet", "--nproc", "4", *TINY_DEMO], "must split evenly")
    assert not odd.exists()
