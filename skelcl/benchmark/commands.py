"""The `skelcl bench` command group: run, compare, history."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Measure the hot paths, each fast path beside its plain PyTorch / NumPy path in the same process, rounds
interleaved; median and interquartile range per figure, ratio to the plain path, machine fingerprint,
versions and git revision, in one JSON schema (skelcl.benchmark.record).

  skelcl bench [--suite cpu|gpu|all] [--quick] [--out FILE.json] [--case NAME ...]
  skelcl bench compare BASE.json NEW.json [--threshold 0.1] [--absolute]   exit 1 on a regression
  skelcl bench history [DIR] [--out PNG_DIR]                      figures over revisions
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmarks: run, compare two results, history",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--suite", default="cpu", choices=("cpu", "gpu", "all"), help="default: cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (CI): checks the harness, not figures")
    p.add_argument(
        "--out",
        metavar="FILE.json|DIR/",
        help="write the result here (a directory: a new file named by suite, date and git revision)",
    )
    p.add_argument("--case", nargs="+", metavar="NAME", help="only these cases (default: all of the suite)")
    p.add_argument(
        "--gpu-script", metavar="PATH", help="scripts/gpu_check.py of the checkout (default: found)"
    )
    p.add_argument("--no-gpu-check", action="store_true", help="GPU suite without scripts/gpu_check.py")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (one plain line per finished case instead, as when stderr is not a terminal)",
    )
    p.set_defaults(func=_run)
    sub = p.add_subparsers(dest="bench_command", metavar="{compare,history}")
    c = sub.add_parser("compare", help="compare two results; exit 1 when a figure regressed")
    c.add_argument("base", metavar="BASE.json")
    c.add_argument("new", metavar="NEW.json")
    c.add_argument("--threshold", type=float, default=0.1, help="relative loss that counts (default 0.1)")
    c.add_argument("--absolute", action="store_true", help="same machine: raw values count too")
    c.set_defaults(func=_compare)
    h = sub.add_parser("history", help="draw each figure over the committed results (PNG per figure)")
    h.add_argument("root", nargs="?", default="bench/results", metavar="DIR", help="default: bench/results")
    h.add_argument("--out", metavar="PNG_DIR", help="default: DIR/history")
    h.add_argument("--match", metavar="REGEX", help="only figures whose name matches")
    h.set_defaults(func=_history)


def _run(args) -> int:
    from skelcl.benchmark import runner

    res = runner.run(
        args.suite,
        quick=args.quick,
        out=args.out,
        names=args.case,
        gpu_script=args.gpu_script,
        progress=not args.no_progress,
        skip_gpu_check=args.no_gpu_check,
    )
    print(runner.table(res))
    if args.out:
        print(f"wrote {res['file']} ({len(res['records'])} figures, {res['seconds']:.0f} s)")
    return 0


def _compare(args) -> int:
    from skelcl.benchmark import compare
    from skelcl.errors import SkelclError

    if not 0 <= args.threshold < 1:
        raise SkelclError(f"--threshold must be in [0, 1), got {args.threshold}")
    return compare.main(args.base, args.new, args.threshold, args.absolute)


def _history(args) -> int:
    from skelcl.benchmark import history

    return history.main(args.root, args.out, args.match)
