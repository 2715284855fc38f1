"""`skelcl demo` and `skelcl experiment` end to end at toy sizes (output files and keys)."""

import json

import numpy as np
import yaml

from skelcl.cli import main

TINY_DEMO = [
    "data.sequences=14", "model.width=0.125", "pretrain.train.epochs=1", "pretrain.train.batch_size=6",
    "finetune.train.epochs=1", "finetune.finetune.label_fraction=0.5", "report.sequences=2",
]  # fmt: skip


def test_demo_writes_metrics_report_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", *TINY_DEMO]) == 0
    assert "pretrained" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    for who in ("pretrained", "scratch"):
        for key in ("mAP@0.1", "mAP@0.5", "avg_mAP_0.1:0.5", "frame_accuracy"):
            assert 0.0 <= m[who][key] <= 1.0
    assert m["label_fraction"] == 0.5 and m["seconds"] > 0
    report = (out / "report.md").read_text()
    assert "pretrained" in report and "scratch" in report and "curves.png" in report
    for name in ("curves.png", "segments.png"):
        assert (out / name).stat().st_size > 1000
    for run in ("pretrain", "finetune_pretrained", "finetune_scratch"):
        assert (out / run / "last.pt").is_file() and (out / run / "config.yaml").is_file()
    # the same output directory is not reused
    assert main(["demo", "--out", str(out), "--quiet", *TINY_DEMO]) == 2
    assert "already holds a demo" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d2"), "pretrain.train.epoch=1"]) == 2
    assert "pretrain.train.epoch" in capsys.readouterr().err


def test_experiment_table(tmp_path, capsys):
    out = tmp_path / "exp"
    snippets = "true, {label: all negs, match: aligned, exclude_same_video: false}"
    args = [
        "experiment", "--out", str(out), "--quiet", "data.sequences=14", "seeds=[0]", "methods=[skeletonclr]",
        f"snippet=[{snippets}]", "model.width=0.125", "pretrain.train.epochs=1",
        "pretrain.train.batch_size=6", "finetune.train.epochs=1",
        "protocols={linear: {protocol: linear, label_fraction: 1.0}, "
        "semi50: {protocol: finetune, label_fraction: 0.5}}",
    ]  # fmt: skip
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "SkeletonCLR + snippet" in table and "random init" in table and "semi50" in table
    assert (out / "table.png").stat().st_size > 10_000  # the per-seed plot
    res = json.loads((out / "results.json").read_text())["results"]
    assert {(r["row"], r["protocol"]) for r in res} == {
        ("SkeletonCLR + snippet", "linear"), ("SkeletonCLR + snippet", "semi50"), ("random init", "semi50"),
        ("SkeletonCLR + snippet (all negs)", "linear"), ("SkeletonCLR + snippet (all negs)", "semi50"),
    }  # fmt: skip
    # a mapping entry sets its pretrain keys (and only for its own runs)
    runs = out / "runs"
    variant_cfg = yaml.safe_load((runs / "pre_skeletonclr_snipall-negs_s0" / "config.yaml").read_text())
    default_cfg = yaml.safe_load((runs / "pre_skeletonclr_snip_s0" / "config.yaml").read_text())
    assert variant_cfg["pretrain"]["match"] == "aligned" and not variant_cfg["pretrain"]["exclude_same_video"]
    assert default_cfg["pretrain"]["match"] == "feature" and default_cfg["pretrain"]["exclude_same_video"]
    # a second call reuses the finished runs
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["results"] == res
    # --table-only collects finished runs and runs nothing (the aligned cells do not exist)
    assert main([args[0], "--table-only", *args[1:], f"snippet=[{snippets}, aligned]"]) == 0
    assert json.loads((out / "results.json").read_text())["results"] == res
    assert not list((out / "runs").glob("*snipaligned*"))
    assert main([args[0], *args[1:], "snippet=[{match: aligned}]"]) == 2
    assert "label" in capsys.readouterr().err


def test_paired_differences_pair_rows_by_seed_and_protocol():
    from skelcl.train.experiment import paired_differences

    m = "avg_mAP_0.1:0.5"
    base = {0: 0.30, 1: 0.50, 2: 0.40}
    snip = {0: 0.35, 1: 0.52, 2: 0.37}  # differences +5, +2, -3 points
    results = [{"row": "SkeletonCLR", "protocol": "linear", "seed": s, m: v} for s, v in base.items()]
    results += [
        {"row": "SkeletonCLR + snippet (x)", "protocol": "linear", "seed": s, m: v} for s, v in snip.items()
    ]
    results += [{"row": "random init", "protocol": "linear", "seed": 0, m: 0.9}]
    results += [{"row": "AimCLR-style + snippet", "protocol": "linear", "seed": 0, m: 0.1}]  # no base: "-"
    table = paired_differences(results, m, ["linear"])
    d = np.array([5.0, 2.0, -3.0])
    assert f"| SkeletonCLR + snippet (x) | {d.mean():+.1f} ± {d.std(ddof=1):.1f} (2/3 ahead) |" in table
    assert "| AimCLR-style + snippet | - |" in table
    assert "random init" not in table and "| SkeletonCLR |" not in table
