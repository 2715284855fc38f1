"""`skelcl synth`, `skelcl info` and `skelcl show`: make, summarize and draw a cache."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from skelcl import progress
from skelcl.errors import SkelclError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="generate the built-in synthetic dataset into a cache")
    p.add_argument("--out", required=True, help="cache directory to write")
    p.add_argument("--sequences", type=_positive_int, default=1000, help="number of sequences (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same data (default 0)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="frame storage type")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache at --out")
    p.set_defaults(func=run_synth)

    p = subparsers.add_parser("info", help="print counts, lengths and the class histogram of a cache")
    p.add_argument("cache", help="cache directory")
    p.set_defaults(func=run_info)

    p = subparsers.add_parser("show", help="draw a few frames and the label timeline of one sequence")
    p.add_argument("cache", help="cache directory")
    p.add_argument("--index", type=int, default=0, help="sequence index (default 0)")
    p.add_argument("--out", required=True, help="image file to write (.png, .pdf or .svg)")
    p.add_argument("--frames", type=_positive_int, default=6, help="number of skeleton frames to draw")
    p.set_defaults(func=run_show)


def run_synth(args) -> int:
    from skelcl.data.synthetic import generate_cache

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SkelclError(f"{out}: already exists (use --overwrite to replace it)")
    bar = progress.show_bars()  # a bar on a terminal only; redirected output gets the last line alone
    generate_cache(out, args.sequences, args.seed, dtype=args.dtype, overwrite=args.overwrite, progress=bar)
    print(f"wrote {args.sequences} sequences to {out}")
    return 0


def summarize(ds) -> str:
    """A plain-text summary of a cache: counts, length statistics, splits and the class histogram."""
    lengths = ds.lengths
    lines = [
        f"cache      {ds.path}",
        f"sequences  {len(ds)}",
        f"frames     {int(lengths.sum())} ({ds.meta['dtype']}, up to {ds.max_bodies} bodies, {ds.fps:g} fps)",
    ]
    if len(ds):
        q = np.percentile(lengths, [0, 50, 100])
        lines.append(
            f"length     min {q[0]:.0f}  median {q[1]:.0f}  max {q[2]:.0f}  mean {lengths.mean():.1f}"
        )
        body_counts = np.bincount(ds.bodies, minlength=ds.max_bodies + 1)
        lines.append("bodies     " + "  ".join(f"{m}: {c}" for m, c in enumerate(body_counts) if c))
    for scheme, parts in ds.split_schemes.items():
        sizes = "  ".join(f"{part} {len(ds.split(scheme, part))}" for part in parts)
        lines.append(f"split      {scheme}: {sizes}")
    labels = np.asarray(ds.frame_labels)
    counts = (
        np.bincount(labels[labels >= 0], minlength=ds.num_classes)
        if labels.size
        else np.zeros(ds.num_classes)
    )
    unlabeled = int((labels < 0).sum())
    total = max(int(labels.size), 1)
    lines.append("classes    (frames, share)")
    width = max(len(c) for c in ds.classes) if ds.classes else 0
    for name, count in zip(ds.classes, counts):
        bar = "#" * int(round(40 * count / total))
        lines.append(f"  {name:<{width}}  {int(count):>9}  {100 * count / total:5.1f}%  {bar}")
    if unlabeled:
        lines.append(f"  {'(unlabeled)':<{width}}  {unlabeled:>9}  {100 * unlabeled / total:5.1f}%")
    return "\n".join(lines)


def run_info(args) -> int:
    from skelcl.data import open_cache

    print(summarize(open_cache(args.cache)))
    return 0


def run_show(args) -> int:
    from skelcl.data import open_cache
    from skelcl.data.plot import draw_sequence

    ds = open_cache(args.cache)
    if not -len(ds) <= args.index < len(ds):
        raise SkelclError(f"--index {args.index} is out of range: {args.cache} holds {len(ds)} sequences")
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise SkelclError(f"--out {out}: use a .png, .pdf or .svg file name")
    draw_sequence(ds[args.index], ds.classes, out, num_frames=args.frames)
    print(f"wrote {out}")
    return 0
