"""`skelcl pretrain | finetune | predict | config | export` (demo and experiment: skelcl.study.commands).

Config keys are set with trailing KEY=VALUE arguments (dotted, e.g. train.epochs=3 model.width=0.5);
every key is checked (skelcl.train.config.KEYS) before anything is written. --resume RUN continues the run
in RUN from its last checkpoint with the config saved there; the only override it takes is train.epochs
(to extend the run). A failed start leaves no folder that blocks a rerun (skelcl.train.run.check_out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skelcl.errors import SkelclError

# Presets listed in --help: name -> what it is (the YAML files in skelcl/configs/ hold the values).
PRESETS = {
    "pretrain": (
        ("pretrain_skeletonclr", "the paper's GPU schedule: 600 epochs, width 1.0, batch 128 (default)"),
        ("pretrain_aimclr", "AimCLR-style base method, the paper's GPU schedule"),
        ("pretrain_rvtclr", "RVTCLR base method with the authors' snippet loss (feature matching)"),
        ("pretrain_cpu", "SkeletonCLR, CPU-sized: width 0.25, 10 epochs, batch 32 (demo: RVTCLR, 20 epochs)"),
    ),
    "finetune": (
        ("finetune", "the paper's schedule: 40 epochs, width 1.0 without --pretrained (default)"),
        ("finetune_cpu", "a CPU-sized run: width 0.25, 20 epochs, 150-frame windows"),
    ),
}

# Keys an override may change on --resume.
RESUME_KEYS = ("train.epochs",)


def _epilog(kind: str) -> str:
    from skelcl.train.config import builtin_names

    lines = ["built-in configs (--config NAME):"]
    lines += [f"  {name:<22}{what}" for name, what in PRESETS[kind]]
    others = [n for n in builtin_names() if n.startswith(kind) and n not in dict(PRESETS[kind])]
    if others:
        lines.append(f"  also: {', '.join(others)}")
    lines += [
        "",
        "every key with its value and allowed range: skelcl config show NAME",
        f"example: skelcl {kind} --config {PRESETS[kind][-1][0]} --data CACHE --out RUN train.epochs=5",
        f"continue or extend a run: skelcl {kind} --resume RUN [train.epochs=N]",
    ]
    return "\n".join(lines)


def _add_common(p, default_config: str, needs_data: bool = True):
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3")
    p.add_argument(
        "--config", default=default_config,
        help=f"built-in config name (listed below) or YAML path (default {default_config})",
    )  # fmt: skip
    if needs_data:
        p.add_argument("--data", help="cache directory (sets data.path)")
    p.add_argument("--out", help="run directory to create (or to reuse when it holds no checkpoint)")
    p.add_argument(
        "--resume", metavar="RUN|auto",
        help="continue the run in RUN (uses RUN/config.yaml); auto (with --out and the run's command line): "
        "start the run in --out, or continue it there if it has a checkpoint (exit 0 if it is finished)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the run files of an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the per-epoch lines stay)")


def register(subparsers) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "pretrain", help="contrastive pretraining (SkeletonCLR, RVTCLR or AimCLR-style, + snippet loss)",
        epilog=_epilog("pretrain"), formatter_class=fmt,
    )  # fmt: skip
    _add_common(p, "pretrain_skeletonclr")
    p.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="N data-parallel processes on this machine (torchrun --standalone; gloo on a CPU, one GPU each "
        "on CUDA). train.batch_size is per process, so N x batch_size sequences make a step; each process "
        "takes train.num_threads threads (default with N > 1: the CPU cores / N). On a 2-core CPU at the "
        "demo's sizes, 2 processes x 1 thread made 1.35-1.68x the steps per second of 1 x 2 threads",
    )  # fmt: skip
    p.set_defaults(func=cmd_pretrain)

    what = "train the localizer (finetune.protocol: linear, frozen_fusion, finetune)"
    p = subparsers.add_parser("finetune", help=what, description=what, epilog=_epilog("finetune"),
                              formatter_class=fmt)  # fmt: skip
    _add_common(p, "finetune")
    p.add_argument("--pretrained", help="pretraining run directory or checkpoint (sets finetune.pretrained)")
    p.set_defaults(func=cmd_finetune)

    p = subparsers.add_parser(
        "predict",
        help="write per-video segment files from a fine-tuned model",
        description="Predict action segments of the test part of the model's split (the fine-tuning run's "
        "data.split / data.test_part) and write NAME.txt files (label,start,end,score), classes.json (class "
        "names) and predict.json (what was predicted, and the files written). What is predicted is printed "
        "on stderr.",
    )
    p.add_argument("--ckpt", required=True, help="`skelcl finetune` run directory or its last.pt")
    p.add_argument("--data", required=True, help="cache directory")
    p.add_argument("--out", required=True, help="new or empty folder for the segment files")
    p.add_argument("--split", default=None, help="split scheme (default: the model's data.split)")
    p.add_argument("--part", default=None, help="split part (default: the model's data.test_part)")
    p.add_argument("--all", action="store_true", help="predict every sequence, training ones too")
    p.add_argument(
        "--overwrite", action="store_true", help="replace what an earlier `skelcl predict` wrote there"
    )
    p.add_argument("--proposals", default="sweep", choices=["sweep", "argmax"])
    p.add_argument(
        "--label-base", type=int, choices=(0, 1), default=1, help="id written for class 0 (default 1)"
    )
    p.add_argument("--gt-out", help="also write the cache's ground-truth segments here (for skelcl evaluate)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser(
        "config", help="list the built-in configs, or show one's keys with their values and allowed ranges",
        description="skelcl config list | skelcl config show NAME [KEY=VALUE ...]",
    )  # fmt: skip
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?", help="config name or YAML path (for show)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="show the config with these overrides")
    p.set_defaults(func=cmd_config)

    p = subparsers.add_parser(
        "export", help="write a run's encoder as a plain PyTorch state dict (torch.load(weights_only=True))",
        description="Writes OUT (the encoder's state dict: a pretraining run's query encoder, or a "
        "fine-tuning run's backbone) and OUT with suffix .json (Backbone kwargs, source checkpoint, epoch). "
        "Rebuild: Backbone(**json['backbone']).load_state_dict(torch.load(OUT, weights_only=True)).",
    )  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run directory (or a .pt checkpoint)")
    p.add_argument("--out", required=True, help="file to write, e.g. encoder.pt")
    p.add_argument("--which", default="last", help="last (default), best, or an epoch number (epoch_N.pt)")
    p.set_defaults(func=cmd_export)


def _resolve(args, extra=()):
    """(validated config, run folder); nothing is written. --resume takes only RESUME_KEYS overrides."""
    from skelcl.train import config
    from skelcl.train.run import check_out

    if args.resume == "auto":
        return _resolve_auto(args, extra)
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise SkelclError("--resume RUN continues RUN; do not give another --out")
        if extra or getattr(args, "data", None):
            raise SkelclError("--resume uses the run's saved config: --data and --pretrained are not allowed")
        check_out(args.resume, resume=True, overwrite=args.overwrite)
        cfg_file = Path(args.resume) / "config.yaml"
        for item in args.overrides:
            key, _ = config.parse_override(item)
            if key not in RESUME_KEYS:
                allowed = ", ".join(RESUME_KEYS)
                raise SkelclError(f"--resume: override {item!r} is not allowed (a resumed run keeps its "
                                  f"config; only {allowed} may change, to extend the run)")  # fmt: skip
        cfg = config.apply_overrides(config.load_config(cfg_file), args.overrides)
        _check_kind(cfg, args.command, args.resume)
        if args.overrides and cfg["train"].get("steps"):
            raise SkelclError("--resume: this run counts train.steps, so train.epochs cannot extend it")
        return config.validate(cfg, str(cfg_file)), Path(args.resume)
    if not args.out:
        raise SkelclError("give --out RUN_DIR (or --resume RUN_DIR)")
    overrides = list(extra) + list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.path={args.data}")
    cfg = config.resolve(args.config, overrides)
    check_out(args.out, overwrite=args.overwrite)
    return cfg, Path(args.out)


def _resolve_auto(args, extra=()):
    """--resume auto: the config of the command line, and args.resume set to the run folder when the run
    there continues (None for a new run); args.finished is set when that run is complete."""
    from skelcl.train import config
    from skelcl.train.preempt import auto_resume
    from skelcl.train.run import check_out

    if not args.out:
        raise SkelclError("--resume auto needs --out RUN_DIR (the folder to start or continue)")
    if args.overwrite:
        raise SkelclError("--resume auto continues a run and --overwrite replaces it: give one of them")
    overrides = list(extra) + list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.path={args.data}")
    cfg = config.resolve(args.config, overrides)
    what = auto_resume(args.out, cfg)
    args.resume = None if what == "new" else args.out
    args.finished = what == "finished"
    if what == "new":
        check_out(args.out)
    return cfg, Path(args.out)


def _finished(args, out) -> bool:
    """True (after saying so, on rank 0) when --resume auto found the run in `out` complete."""
    import os

    if getattr(args, "finished", False) and os.environ.get("RANK", "0") == "0":
        print(f"skelcl {args.command}: {out} holds a finished run (metrics.json written): nothing to do")
    return bool(getattr(args, "finished", False))


def _check_kind(cfg: dict, command: str, run) -> None:
    """SkelclError unless the saved config of `run` is one of `command` (pretrain / finetune)."""
    other = {"pretrain": "finetune", "finetune": "pretrain"}[command]
    if command in cfg:
        return
    if other in cfg:
        what = {"pretrain": "pretraining", "finetune": "fine-tuning"}[other]
        raise SkelclError(f"--resume {run}: that is a {what} run; continue it with: skelcl {other} --resume "
                          f"{run}")  # fmt: skip
    raise SkelclError(f"--resume {run}: its config.yaml holds no {command} section (not a {command} run)")


def _interruptible(run_fn):
    """Run run_fn(); on Ctrl-C print which epoch was saved and the resume command, then re-raise."""
    import sys

    from skelcl.train import run as run_mod

    run_mod.ACTIVE = None  # set by the RunDir this run creates
    try:
        return run_fn()
    except KeyboardInterrupt:
        print(f"skelcl: {run_mod.interrupt_message()}", file=sys.stderr, flush=True)
        raise


def _launch_local(args, nproc: int) -> int:
    """`skelcl pretrain --nproc N`: the same command as N ranks under torch.distributed.run --standalone
    (what `torchrun --standalone --nproc_per_node N -m skelcl pretrain ...` runs); returns its exit code."""
    import os
    import sys

    from skelcl.train.distributed import launch_local

    argv = ["pretrain", "--config", args.config]
    for flag in ("data", "out", "resume"):
        if getattr(args, flag, None):
            argv += [f"--{flag}", str(getattr(args, flag))]
    argv += ["--overwrite"] * bool(args.overwrite) + ["--quiet"] * bool(args.quiet)
    overrides = list(args.overrides)
    given = {str(o).split("=", 1)[0].strip() for o in overrides}
    if not args.resume and "train.num_threads" not in given:  # the cores shared among the ranks
        overrides.append(f"train.num_threads={max(1, (os.cpu_count() or 1) // nproc)}")
    print(f"skelcl pretrain: {nproc} processes (torch.distributed.run --standalone)", flush=True)
    rc = launch_local([*argv, *overrides], nproc)
    if rc != 0:
        print(f"skelcl pretrain: error: the {nproc} processes exited with code {rc} (their output is above)",
              file=sys.stderr)  # fmt: skip
    return rc


def cmd_pretrain(args) -> int:
    import os

    from skelcl.train.pretrain import run_pretrain

    nproc = int(getattr(args, "nproc", 1))
    if nproc < 1:
        raise SkelclError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and "WORLD_SIZE" in os.environ:
        raise SkelclError("--nproc starts its own processes: do not give it under torchrun")
    if nproc > 1:
        _resolve(args)  # every input checked here, once, before any process starts
        return _launch_local(args, nproc)
    cfg, out = _resolve(args)
    from skelcl.train.distributed import is_main

    if _finished(args, out):
        return 0
    _gpu_schedule_note(args, cfg)
    _interruptible(
        lambda: run_pretrain(cfg, out, resume=bool(args.resume), quiet=args.quiet, overwrite=args.overwrite)
    )
    if is_main():
        print(f"pretraining run written to {out}")
    return 0


def cmd_finetune(args) -> int:
    from skelcl.train.finetune import run_finetune

    extra = [f"finetune.pretrained={args.pretrained}"] if args.pretrained else []
    cfg, out = _resolve(args, extra)
    if _finished(args, out):
        return 0
    _gpu_schedule_note(args, cfg)
    m = _interruptible(
        lambda: run_finetune(cfg, out, resume=bool(args.resume), quiet=args.quiet, overwrite=args.overwrite)
    )
    if m.get("final"):
        f = m["final"]
        print(f"test avg mAP@0.1:0.5 {f['avg_mAP_0.1:0.5']:.4f}  mAP@0.5 {f['mAP@0.5']:.4f}  -> {out}")
    return 0


def _predict_selection(args, cache, st) -> tuple:
    """(positions, description, warning or None) of the sequences `skelcl predict` predicts: --all, else
    --split / --part, defaulting to the fine-tuning run's data.split / data.test_part."""
    import numpy as np

    data = (st.get("config") or {}).get("data", {})
    run_split, train_part = data.get("split"), data.get("train_part")
    test_part = data.get("test_part", "test")
    n = len(cache)
    if args.all:
        if args.split or args.part:
            raise SkelclError("--all predicts every sequence; do not give --split or --part with it")
        note = "training sequences of this model included" if run_split else "the model's run used all too"
        return np.arange(n), f"every sequence of {args.data} ({n}; {note})", None
    split = args.split or run_split
    if not split:
        if args.part:
            raise SkelclError("--part needs --split: the model's run had no split (data.split null)")
        what = f"every sequence of {args.data} ({n}): the model's run had no split (data.split null)"
        return np.arange(n), what, "the model was trained on these sequences too; its figures are not a test"
    part = args.part or (test_part if split == run_split else "test")
    if split not in cache.split_schemes:
        raise SkelclError(f"{args.data}: no split scheme {split!r} (has {list(cache.split_schemes)}); "
                          "give --split NAME or --all")  # fmt: skip
    positions = cache.split(split, part)
    if len(positions) == 0:
        raise SkelclError(f"{args.data}: split {split!r} part {part!r} holds no sequences")
    source = "the model's test part" if (split, part) == (run_split, test_part) else "from --split/--part"
    what = f"part {part!r} of split {split!r} ({len(positions)} of {n} sequences; {source})"
    warn = None
    if split == run_split and part == train_part:
        warn = f"{part!r} is the part this model was trained on; its figures are not a test"
    return positions, what, warn


def cmd_predict(args) -> int:
    import sys

    from skelcl.data import open_cache
    from skelcl.eval import proposals_from_scores, segments_from_labels
    from skelcl.eval.io import CLASSES_FILE, files_to_replace, write_manifest, write_segments_dir
    from skelcl.train.data import SequenceStore
    from skelcl.train.distributed import setup
    from skelcl.train.finetune import load_localizer, predict_probs

    outs = [("--out", args.out)] + ([("--gt-out", args.gt_out)] if args.gt_out else [])
    if args.gt_out and Path(args.gt_out).resolve() == Path(args.out).resolve():
        raise SkelclError("--gt-out must be another folder than --out")
    stale = {flag: files_to_replace(path, args.overwrite, flag) for flag, path in outs}  # before any work
    device = setup(args.device)
    model, st = load_localizer(args.ckpt, device)
    cache = open_cache(args.data)
    if cache.classes != st["classes"]:
        raise SkelclError(f"{args.data}: its classes differ from those the model was trained on")
    positions, what, warn = _predict_selection(args, cache, st)
    print(f"skelcl predict: predicting {what}", file=sys.stderr)
    if warn:
        print(f"skelcl predict: warning: {warn}", file=sys.stderr)
    cache = cache.subset(positions)
    store = SequenceStore(cache, st.get("bodies"))
    probs = predict_probs(model, store, device, int(st["config"]["eval"]["batch_size"]))
    segs = {str(n): proposals_from_scores(p, method=args.proposals) for n, p in zip(cache.names, probs)}
    bg = cache.num_classes - 1
    actions = list(cache.classes[:bg])
    info = {"format": "skelcl-predict", "ckpt": str(args.ckpt), "data": str(args.data), "selection": what,
            "label_base": args.label_base, "sequences": len(segs)}  # fmt: skip
    for flag, path in outs:
        for f in stale[flag]:
            f.unlink()
        kind, proposals = "prediction", args.proposals
        if flag == "--gt-out":
            kind, proposals = "ground truth", None
            segs = {str(n): segments_from_labels(store.get(i)[1], bg) for i, n in enumerate(cache.names)}
        # the manifest first: an interrupted write still lists every file --overwrite may remove
        files = [f"{name}.txt" for name in segs] + [CLASSES_FILE]
        write_manifest(path, files, {**info, "kind": kind, "proposals": proposals})
        write_segments_dir(path, segs, label_base=args.label_base, classes=actions)
    print(f"wrote segments of {len(cache)} sequences to {args.out} (class names in {CLASSES_FILE})")
    if args.gt_out:
        print(f"wrote ground-truth segments to {args.gt_out}")
    return 0


def _gpu_schedule_note(args, cfg) -> None:
    """A note on stderr when a full-scale schedule is about to run on a CPU."""
    import sys

    import torch

    t = cfg["train"]
    on_cpu = t["device"] == "cpu" or (t["device"] == "auto" and not torch.cuda.is_available())
    if on_cpu and not args.resume and int(t["epochs"]) >= 100 and float(cfg["model"]["width"]) >= 1.0:
        kind = args.command
        print(f"skelcl {kind}: note: {args.config} is a full-scale GPU schedule ({t['epochs']} epochs) and "
              f"this runs on the CPU; for a CPU-sized run use --config {kind}_cpu (skelcl {kind} --help)",
              file=sys.stderr, flush=True)  # fmt: skip


def cmd_config(args) -> int:
    from skelcl.train import config

    if args.action == "list":
        if args.name or args.overrides:
            raise SkelclError("config list takes no arguments")
        import shutil
        import textwrap

        width = max(60, shutil.get_terminal_size((100, 24)).columns - 1)
        for name in config.builtin_names():
            what = first_sentence(config.config_path(name).read_text())
            print(textwrap.fill(what or "-", width, initial_indent=f"{name:<22}", subsequent_indent=" " * 22,
                                break_on_hyphens=False, break_long_words=False))  # fmt: skip
        print("\nskelcl config show NAME: every key of NAME with its value and allowed range")
        return 0
    if not args.name:
        raise SkelclError("config show NAME: give a config name (skelcl config list) or a YAML path")
    cfg = config.resolve(args.name, args.overrides)
    print("\n".join(config.describe_keys(cfg)))
    return 0


def first_sentence(text: str) -> str:
    """The first sentence of the comment block that opens a YAML file (lines starting with #), whole."""
    import re

    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    block = " ".join(x for x in lines if x)
    end = re.search(r"[.?!](?=\s|$)", block)
    return block[: end.end()] if end else block


def cmd_export(args) -> int:
    from skelcl.train.checkpoint import export_encoder

    out, side = export_encoder(args.run, args.out, args.which)
    print(f"wrote the encoder state dict to {out} and its settings to {side}")
    return 0


__all__ = ["register"]
