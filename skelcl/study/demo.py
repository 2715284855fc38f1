"""`skelcl demo`: the comparison of `skelcl experiment` in miniature, on generated synthetic data.

One pretraining run (seed 0), then for each label-subset seed in `label_seeds` and each protocol of the
config: the pretrained encoder against random init under the same protocol and the same fixed number of
optimizer steps (few labels: fine-tuned vs trained from scratch; linear probe: the pretrained encoder vs a
frozen random one whose BatchNorm statistics are calibrated on the training sequences). Prints each
paired difference with the step counts. With a single pretraining seed this is a smoke test of the whole
pipeline, not evidence for or against pretraining.

Writes into OUT: data/ (the generated cache, unless --data), pretrain/, runs/<protocol>_<init>_s<seed>/
(run directories), metrics.json, report.md, curves.png, segments.png. Settings: skelcl/configs/demo.yaml.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from skelcl.errors import SkelclError
from skelcl.study import report
from skelcl.study.report import DESCRIBE, SMOKE, comparison_lines  # noqa: F401 (re-exported)
from skelcl.train import config as config_mod


def _as_experiment(demo: dict) -> dict:
    """The sections skelcl.study.experiment's config builders read."""
    return {"data": demo["data"], "model": demo["model"], "pretrain": demo["pretrain"],
            "finetune": demo["finetune"]}  # fmt: skip


def _pretrain_ranks(pre_cfg: dict, out: Path, nproc: int, quiet: bool) -> None:
    """The demo's pretraining as nproc data-parallel processes (`skelcl pretrain --config FILE` under
    torch.distributed.run): pre_cfg already holds the per-process batch and threads."""
    from skelcl.train.distributed import launch_local

    cfg_file = out / "pretrain_config.yaml"
    cfg_file.write_text(config_mod.dump(pre_cfg))
    argv = ["pretrain", "--config", str(cfg_file), "--out", str(out / "pretrain")] + ["--quiet"] * quiet
    rc = launch_local(argv, nproc)
    if rc != 0:
        raise SkelclError(f"demo: the pretraining in {nproc} processes exited with code {rc} (its output is "
                          f"above; log: {out / 'pretrain' / 'log.txt'})")  # fmt: skip


def split_over_processes(pre_cfg: dict, nproc: int) -> dict:
    """pre_cfg for one of nproc processes that share each step: train.batch_size / nproc sequences (the
    global batch stays train.batch_size) and train.num_threads / nproc threads (at least 1)."""
    t = pre_cfg["train"]
    bs = int(t["batch_size"])
    if nproc < 1 or bs % nproc:
        raise SkelclError(f"--nproc {nproc}: the pretraining batch (pretrain.train.batch_size={bs}) must "
                          "split evenly over the processes")  # fmt: skip
    import torch

    threads = int(t["num_threads"]) or torch.get_num_threads()
    return {**pre_cfg, "train": {**t, "batch_size": bs // nproc, "num_threads": max(1, threads // nproc)}}


def run_demo(out, data=None, config_name="demo", overrides=(), quiet=False, nproc=1) -> dict:
    from skelcl.data import open_cache
    from skelcl.data.synthetic import generate_cache
    from skelcl.study.experiment import (
        FROZEN_REF,
        TRAINABLE,
        finetune_config,
        pretrain_config,
        reference_protocols,
    )
    from skelcl.train.data import SequenceStore
    from skelcl.train.finetune import FROZEN, load_localizer, predict_probs, run_finetune
    from skelcl.train.pretrain import open_split, run_pretrain
    from skelcl.train.run import announce, show_bars

    demo = config_mod.resolve(config_name, overrides)
    out = Path(out)
    if (out / "metrics.json").exists() or (out / "pretrain").exists():
        raise SkelclError(f"{out} already holds a demo; choose another --out")
    exp = _as_experiment(demo)
    method = demo["pretrain"]["pretrain"].get("method", "skeletonclr")
    pre_cfg = pretrain_config(exp, method, {}, data or out / "data", 0)  # checks the config before any work
    if nproc != 1:
        pre_cfg = split_over_processes(pre_cfg, nproc)
    out.mkdir(parents=True, exist_ok=True)
    seeds = {"data.seed": demo["data"]["seed"], "train.seed": pre_cfg["train"]["seed"],
             "label_seeds": demo["label_seeds"]}  # fmt: skip
    header = announce(out / "log.txt", pre_cfg["train"]["device"], seeds)  # command, versions, seeds first
    t0 = time.time()
    if data is None:
        data = out / "data"
        generate_cache(data, int(demo["data"]["sequences"]), int(demo["data"]["seed"]),
                       progress=not quiet and show_bars())  # fmt: skip
    else:
        open_cache(data)  # fail early on a bad path
    if nproc > 1:
        _pretrain_ranks(pre_cfg, out, nproc, quiet)
    else:
        run_pretrain(pre_cfg, out / "pretrain", quiet=quiet)
    t_pre = time.time() - t0

    comps, histories, first = [], {}, {}
    for pname, proto in demo["protocols"].items():
        frozen = proto["protocol"] in FROZEN
        ref_name = FROZEN_REF if frozen else TRAINABLE
        ref_proto = reference_protocols(proto)[ref_name]
        c = {"name": pname, "protocol": proto["protocol"], "label_fraction": float(proto["label_fraction"]),
             "reference": ref_name, "seeds": [], "pretrained": [], "random": [], "steps": None,
             "labeled_sequences": None}  # fmt: skip
        for seed in demo["label_seeds"]:
            vals = {}
            for who, pr, pre in (("pretrained", proto, out / "pretrain"), ("random", ref_proto, None)):
                run = out / "runs" / f"{pname}_{who}_s{seed}"
                m = run_finetune(finetune_config(exp, pr, pre, data, seed), run, quiet=quiet)
                vals[who] = 100 * m["final"]["avg_mAP_0.1:0.5"]
                steps = m["steps"]
                if c["steps"] not in (None, steps):
                    raise SkelclError(
                        f"demo: runs of {pname} took different step counts ({c['steps']}, {steps})"
                    )
                c["steps"], c["labeled_sequences"] = steps, m["labeled_sequences"]
                if seed == demo["label_seeds"][0]:
                    histories[f"{pname} {who}"] = m["history"]
                    first[(pname, who)] = run
            c["seeds"].append(int(seed))
            c["pretrained"].append(vals["pretrained"])
            c["random"].append(vals["random"])
        comps.append(c)

    # Plots: curves; predicted vs true frame labels of a few test sequences (first protocol, first seed).
    pre_hist = json.loads((out / "pretrain" / "metrics.json").read_text())["history"]
    curves = report.plot_curves(out / "curves.png", pre_hist, histories, pre_cfg)
    ft = finetune_config(exp, next(iter(demo["protocols"].values())), None, data, 0)
    test = SequenceStore(open_split(ft["data"], "test_part"), ft["data"]["bodies"])
    k = min(int(demo["report"]["sequences"]), len(test))
    pick = np.linspace(0, len(test) - 1, k).round().astype(int)
    sub = SequenceStore(test.cache.subset(pick), ft["data"]["bodies"])
    pname = next(iter(demo["protocols"]))
    preds = {}
    for who in ("pretrained", "random"):
        model, _ = load_localizer(first[(pname, who)])
        preds[f"{pname}, {who}"] = [p.argmax(axis=1) for p in predict_probs(model, sub, "cpu")]
    truths = [sub.get(i)[1] for i in range(len(sub))]
    chosen = f"{k} of the {len(test)} test sequences, evenly spaced in cache order; first label seed"
    seg = report.plot_segments(out / "segments.png", [str(n) for n in sub.cache.names], truths, preds,
                               sub.cache.classes, selection=chosen)  # fmt: skip
    metrics = {
        "comparisons": comps,
        "pretrain": {k: v for k, v in pre_hist[-1].items() if isinstance(v, (int, float))},
        "pretrain_method": method
        + (f" + snippet ({pre_cfg['pretrain']['match']} matching)" if pre_cfg["pretrain"]["snippet"] else ""),
        "data": str(data),
        "seconds": time.time() - t0,
        "seconds_pretrain": t_pre,
        "pretrain_processes": nproc,
        "note": SMOKE,
        "header": header,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report.write_demo_report(out, metrics, config_mod.dump(demo), [curves, seg])
    return metrics
