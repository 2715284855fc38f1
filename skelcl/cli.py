"""The `skelcl` command.

Each group of subcommands lives beside the code it drives, in a module with a `register(subparsers)`
function that adds its parsers and sets `func` (called with the parsed arguments, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from skelcl import __version__
from skelcl.errors import SkelclError

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "skelcl.data.commands",  # synth, info, show
    "skelcl.data.prepare",  # prepare
    "skelcl.train.commands",  # pretrain, finetune, predict, config, export
    "skelcl.study.commands",  # demo, experiment
    "skelcl.eval.commands",  # evaluate
    "skelcl.benchmark.commands",  # bench, bench compare, bench history
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skelcl",
        description="Snippet contrastive pretraining and action localization on skeleton sequences.",
    )
    parser.add_argument("--version", action="version", version=f"skelcl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:  # a command group not built yet
            continue
        importlib.import_module(name).register(subparsers)
    return parser


def is_override(token: str) -> bool:
    """A KEY=VALUE config override (not an option such as --out=X)."""
    return "=" in token and not token.startswith("-") and bool(token.split("=", 1)[0].strip())


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parser.parse_args(argv), except that KEY=VALUE overrides may stand anywhere on the line (before,
    between or after the options) for the subcommands that take them; their order is kept."""
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list):
        args.overrides += [t for t in extra if is_override(t)]
        extra = [t for t in extra if not is_override(t)]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# The command being run, as given (run headers in log.txt / report.md show it).
ARGV: list[str] | None = None


def main(argv=None) -> int:
    global ARGV
    argv = sys.argv[1:] if argv is None else list(argv)
    ARGV = ["skelcl", *argv]
    parser = build_parser()
    args = parse(parser, argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from skelcl.train.malloc import keep_freed_memory

    keep_freed_memory()  # CPU steps re-use their freed activations instead of faulting pages back in
    try:
        return int(args.func(args) or 0)
    except SkelclError as err:
        print(f"skelcl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skelcl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
