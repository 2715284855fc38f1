"""`skelcl pretrain | finetune | predict | demo | experiment`.

Config keys are set with trailing KEY=VALUE arguments (dotted, e.g. train.epochs=3 model.width=0.5);
--resume RUN continues the run in RUN from its last checkpoint with the config saved there.
"""

from __future__ import annotations

from pathlib import Path

from skelcl.errors import SkelclError


def _add_common(p, default_config: str, needs_data: bool = True):
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3")
    p.add_argument(
        "--config", default=default_config, help=f"config name or YAML path (default {default_config})"
    )
    if needs_data:
        p.add_argument("--data", help="cache directory (sets data.path)")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN (uses RUN/config.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines on the terminal")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="contrastive pretraining (SkeletonCLR/AimCLR-style + snippets)"
    )
    _add_common(p, "pretrain_skeletonclr")
    p.set_defaults(func=cmd_pretrain)

    what = "train the localizer (finetune.protocol: linear, frozen_fusion, finetune)"
    p = subparsers.add_parser("finetune", help=what, description=what)
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

    p = subparsers.add_parser("demo", help="pretrain + 20%% labels vs random init, synthetic data")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="demo config overrides")
    p.add_argument("--out", required=True, help="output directory (metrics.json, report.md, plots)")
    p.add_argument("--data", help="cache to use (default: generate the synthetic one into OUT/data)")
    p.add_argument("--config", default="demo")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser("experiment", help="the method table: base x snippet x protocol, several seeds")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="experiment config overrides")
    p.add_argument("--out", required=True, help="output directory (table.md, results.json, runs/)")
    p.add_argument("--data", help="cache to use (default: generate the synthetic one into OUT/data)")
    p.add_argument("--config", default="experiment")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--table-only", action="store_true", help="only collect finished runs into the table")
    p.set_defaults(func=cmd_experiment)


def _resolve(args, extra=()):
    from skelcl.train import config

    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise SkelclError("--resume RUN continues RUN; do not give another --out")
        cfg_file = Path(args.resume) / "config.yaml"
        if not cfg_file.is_file():
            raise SkelclError(f"--resume {args.resume}: no config.yaml there (not a run directory)")
        if args.overrides or extra:
            raise SkelclError("--resume uses the run's saved config; overrides are not allowed")
        return config.load_config(cfg_file), Path(args.resume)
    if not args.out:
        raise SkelclError("give --out RUN_DIR (or --resume RUN_DIR)")
    cfg = config.resolve(args.config, list(extra) + list(args.overrides))
    if getattr(args, "data", None):
        cfg = config.apply_overrides(cfg, [f"data.path={args.data}"])
    return cfg, Path(args.out)


def cmd_pretrain(args) -> int:
    from skelcl.train.pretrain import run_pretrain

    cfg, out = _resolve(args)
    from skelcl.train.distributed import is_main

    run_pretrain(cfg, out, resume=bool(args.resume), quiet=args.quiet)
    if is_main():
        print(f"pretraining run written to {out}")
    return 0


def cmd_finetune(args) -> int:
    from skelcl.train.finetune import run_finetune

    extra = [f"finetune.pretrained={args.pretrained}"] if args.pretrained else []
    cfg, out = _resolve(args, extra)
    m = run_finetune(cfg, out, resume=bool(args.resume), quiet=args.quiet)
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
    probs = predict_probs(model, store, device)
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


def cmd_demo(args) -> int:
    from skelcl.train.demo import run_demo

    m = run_demo(
        args.out, data=args.data, config_name=args.config, overrides=args.overrides, quiet=args.quiet
    )
    pre, scr = m["pretrained"]["avg_mAP_0.1:0.5"], m["scratch"]["avg_mAP_0.1:0.5"]
    print(f"avg mAP@0.1:0.5 pretrained {pre:.4f}, scratch {scr:.4f} ({m['seconds']:.0f} s) -> {args.out}")
    return 0


def cmd_experiment(args) -> int:
    from skelcl.train.experiment import run_experiment

    table = run_experiment(args.out, data=args.data, config_name=args.config, overrides=args.overrides,
                           quiet=args.quiet, table_only=args.table_only)  # fmt: skip
    print(table)
    return 0


__all__ = ["register"]
