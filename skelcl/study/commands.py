"""`skelcl demo | experiment`: the studies built on the training commands."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="one pretraining, then pretrained vs random init (few labels, linear probe), synthetic data",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="demo config overrides")
    p.add_argument("--out", required=True, help="output directory (metrics.json, report.md, plots)")
    p.add_argument("--data", help="cache to use (default: generate the synthetic one into OUT/data)")
    p.add_argument("--config", default="demo")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="pretrain as N data-parallel processes sharing each step (batch and CPU threads split N ways; "
        "on 2 cores, --nproc 2 runs the pretraining steps 1.35-1.68x faster)",
    )  # fmt: skip
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser(
        "experiment",
        help="pretraining rows x protocols over seeds: paired differences with 95 %% t-intervals (resumable)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="experiment config overrides")
    p.add_argument("--out", required=True, help="output directory (table.md, results.json, runs/)")
    p.add_argument("--data", help="cache to use (default: generate the synthetic one into OUT/data)")
    p.add_argument("--config", default="experiment")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--table-only", action="store_true", help="only collect finished runs into the table")
    p.add_argument("--plan", action="store_true", help="only count the runs of the plan (runs nothing)")
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="runs at a time, each in its own process with CPU threads / N threads (default 1)",
    )  # fmt: skip
    p.set_defaults(func=cmd_experiment)


def cmd_demo(args) -> int:
    from skelcl.study.demo import run_demo

    m = run_demo(
        args.out,
        data=args.data,
        config_name=args.config,
        overrides=args.overrides,
        quiet=args.quiet,
        nproc=args.nproc,
    )
    from skelcl.study.report import SMOKE, comparison_lines

    for c in m["comparisons"]:
        print("\n".join(comparison_lines(c)))
    print(SMOKE)
    print(f"total {m['seconds']:.0f} s (pretraining {m['seconds_pretrain']:.0f} s) -> {args.out}")
    return 0


def cmd_experiment(args) -> int:
    from skelcl.study.experiment import run_experiment

    if args.plan:
        from skelcl.study.experiment import check_comparisons, plan_lines
        from skelcl.train import config

        exp = config.resolve(args.config, args.overrides)
        check_comparisons(exp)
        print("\n".join(plan_lines(exp)))
        return 0

    table = run_experiment(args.out, data=args.data, config_name=args.config, overrides=args.overrides,
                           quiet=args.quiet, table_only=args.table_only, workers=args.jobs)  # fmt: skip
    print(table)
    return 0
