"""Reader speed: our PKU-MMD and NTU parsers against np.loadtxt on the same generated files, side by side.

    python bench/bench_readers.py [--files 8] [--repeats 5] [--out bench/results/readers.json]

Files are written with skelcl.data.emit in the real formats at release-like precision (7 significant
digits): PKU-MMD skeleton files of 3000 frames (one or two bodies) and NTU .skeleton files of 300 frames
(one or two bodies, some frames with none). Baselines:
  pku  np.loadtxt(path) -> (T, 150)
  ntu  the line structure walked in Python, then one np.loadtxt call on all joint lines of the file
       (the most favourable use of loadtxt: a file with 1-, 10- and 12-value lines cannot be loaded whole),
       plus a line-by-line float() reader for reference.
Each repeat times every method on every file in turn (interleaved, so load changes hit all alike); the
figure per method is the median over repeats of the total over files. Target: ours >= 5x faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skelcl.benchmark.cases import make_reader_files, ntu_loadtxt, pku_loadtxt
from skelcl.data import ntu, pkummd


def make_files(root: Path, n: int, seed: int = 0):
    return make_reader_files(root, n, seed=seed)


def ntu_floats(path):
    lines = Path(path).read_text().splitlines()
    i, out = 1, []
    for _ in range(int(lines[0])):
        nb = int(lines[i])
        i += 1
        for _ in range(nb):
            nj = int(lines[i + 1])
            out.append([[float(v) for v in lines[i + 2 + k].split()[:3]] for k in range(nj)])
            i += 2 + nj
    return np.asarray(out)


def timed(fn, files):
    t0 = time.perf_counter()
    for f in files:
        fn(f)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "readers.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pku_files, ntu_files = make_files(Path(tmp), args.files)
        # correctness first (and numba compilation out of the timings)
        for f in pku_files:
            np.testing.assert_allclose(pkummd.read_skeleton(f), pku_loadtxt(f), rtol=1e-6)
        for f in ntu_files:
            ours = ntu.read_skeleton(f)
            ref, _ = ntu_loadtxt(f)
            np.testing.assert_allclose(ours.joints[ours.present], ref.astype(np.float32), rtol=1e-6)
        methods = {
            "pku_ours": (pkummd.read_skeleton, pku_files),
            "pku_loadtxt": (pku_loadtxt, pku_files),
            "ntu_ours": (ntu.read_skeleton, ntu_files),
            "ntu_loadtxt": (ntu_loadtxt, ntu_files),
            "ntu_float_lines": (ntu_floats, ntu_files),
        }
        times = {k: [] for k in methods}
        for _ in range(args.repeats):
            for key, (fn, files) in methods.items():
                times[key].append(timed(fn, files))
        mb = {
            "pku": sum(f.stat().st_size for f in pku_files) / 1e6,
            "ntu": sum(f.stat().st_size for f in ntu_files) / 1e6,
        }
    med = {k: float(np.median(v)) for k, v in times.items()}
    best = {k: float(np.min(v)) for k, v in times.items()}
    result = {
        "files_each": args.files,
        "repeats": args.repeats,
        "megabytes": mb,
        "median_seconds": med,
        "min_seconds": best,
        "ratio_pku_loadtxt_over_ours": med["pku_loadtxt"] / med["pku_ours"],
        "ratio_ntu_loadtxt_over_ours": med["ntu_loadtxt"] / med["ntu_ours"],
        "ratio_ntu_float_lines_over_ours": med["ntu_float_lines"] / med["ntu_ours"],
        "ratio_of_minima": {k: best[f"{k}_loadtxt"] / best[f"{k}_ours"] for k in ("pku", "ntu")},
        "ours_mb_per_s": {"pku": mb["pku"] / med["pku_ours"], "ntu": mb["ntu"] / med["ntu_ours"]},
        "machine": {"python": sys.version.split()[0], "numpy": np.__version__, "cpu": platform.processor()},
        "target": "ours >= 5x faster than np.loadtxt",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for key in ("pku", "ntu"):
        print(
            f"{key}: ours {med[key + '_ours'] * 1e3:.1f} ms, np.loadtxt {med[key + '_loadtxt'] * 1e3:.1f} ms "
            f"({mb[key]:.1f} MB): {result[f'ratio_{key}_loadtxt_over_ours']:.1f}x"
        )
    print(f"ntu line-by-line float(): {med['ntu_float_lines'] * 1e3:.1f} ms")
    print(f"written {out}")
    ok = min(result["ratio_pku_loadtxt_over_ours"], result["ratio_ntu_loadtxt_over_ours"]) >= 5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
