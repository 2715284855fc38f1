"""`skelcl demo`: synthetic data -> pretraining -> localization with 20 % labels, vs random init.

Writes into OUT: data/ (the generated cache, unless --data), pretrain/, finetune_pretrained/,
finetune_scratch/ (run directories), metrics.json ({"pretrained": ..., "scratch": ...} test figures,
timings, settings), report.md, curves.png, segments.png. Settings: skelcl/configs/demo.yaml (sizes chosen
so the whole demo runs in a few minutes on a 2-core CPU).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from skelcl.errors import SkelclError
from skelcl.train import config as config_mod
from skelcl.train import report


def demo_configs(demo: dict, data_path) -> tuple[dict, dict, dict]:
    """(pretrain config, pretrained fine-tune config, scratch fine-tune config) from a demo config."""
    pre = config_mod.merge(config_mod.load_config("pretrain_skeletonclr"), demo["pretrain"], "demo.pretrain")
    pre["model"] = dict(demo["model"])
    pre["data"]["path"] = str(data_path)
    pre["data"]["bodies"] = int(demo["data"]["bodies"])
    ft = config_mod.merge(config_mod.load_config("finetune"), demo["finetune"], "demo.finetune")
    ft["data"]["path"] = str(data_path)
    ft["data"]["bodies"] = int(demo["data"]["bodies"])
    ft["model"] = dict(demo["model"])
    scratch = config_mod.merge(ft, {"finetune": {"pretrained": None}})
    return pre, ft, scratch


def run_demo(out, data=None, config_name="demo", overrides=(), quiet=False) -> dict:
    from skelcl.data import open_cache
    from skelcl.data.synthetic import generate_cache
    from skelcl.train.data import SequenceStore
    from skelcl.train.finetune import load_localizer, predict_probs, run_finetune
    from skelcl.train.pretrain import open_split, run_pretrain

    demo = config_mod.resolve(config_name, overrides)
    out = Path(out)
    if (out / "metrics.json").exists() or (out / "pretrain").exists():
        raise SkelclError(f"{out} already holds a demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if data is None:
        data = out / "data"
        generate_cache(data, int(demo["data"]["sequences"]), int(demo["data"]["seed"]), progress=not quiet)
    else:
        open_cache(data)  # fail early on a bad path
    pre, ft, scratch = demo_configs(demo, data)
    ft["finetune"]["pretrained"] = str(out / "pretrain")
    run_pretrain(pre, out / "pretrain", quiet=quiet)
    t_pre = time.time() - t0
    m_pre = run_finetune(ft, out / "finetune_pretrained", quiet=quiet)
    m_scr = run_finetune(scratch, out / "finetune_scratch", quiet=quiet)

    keep = lambda r: {k: v for k, v in r.items() if k != "per_class"}
    metrics = {
        "pretrained": keep(m_pre["final"]),
        "scratch": keep(m_scr["final"]),
        "pretrained_per_class": m_pre["final"]["per_class"],
        "scratch_per_class": m_scr["final"]["per_class"],
        "label_fraction": float(ft["finetune"]["label_fraction"]),
        "labeled_sequences": m_pre["labeled_sequences"],
        "train_sequences": m_pre["train_sequences"],
        "test_sequences": m_pre["test_sequences"],
        "data": str(data),
    }
    # Plots: curves, and predicted vs true frame labels for a few test sequences.
    pre_hist = json.loads((out / "pretrain" / "metrics.json").read_text())["history"]
    curves = report.plot_curves(out / "curves.png", pre_hist,
                                {"pretrained": m_pre["history"], "scratch": m_scr["history"]})  # fmt: skip
    test = SequenceStore(open_split(ft["data"], "test_part"), ft["data"]["bodies"])
    k = min(int(demo["report"]["sequences"]), len(test))
    pick = np.linspace(0, len(test) - 1, k).round().astype(int)
    sub = SequenceStore(test.cache.subset(pick), ft["data"]["bodies"])
    preds = {}
    for name, run in (("pretrained", "finetune_pretrained"), ("scratch", "finetune_scratch")):
        model, _ = load_localizer(out / run)
        preds[name] = [p.argmax(axis=1) for p in predict_probs(model, sub, "cpu")]
    truths = [sub.get(i)[1] for i in range(len(sub))]
    seg = report.plot_segments(out / "segments.png", [str(n) for n in sub.cache.names], truths, preds,
                               sub.cache.classes)  # fmt: skip
    metrics["seconds"] = time.time() - t0
    metrics["seconds_pretrain"] = t_pre
    settings = config_mod.dump(demo)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report.write_demo_report(out, metrics, settings, [curves, seg])
    return metrics
