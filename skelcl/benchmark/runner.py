"""`skelcl bench`: run the suites, show progress and a table, write one result file.

CPU suite: the cases of skelcl.benchmark.cases run through pytest-benchmark (skelcl/benchmark/suite.py,
in a subprocess so the measurement starts from a clean interpreter), each case's variants interleaved
round by round. GPU suite: the card's ceilings (a large bf16 GEMM and a device-to-device copy) measured
first, then the backbone and pretraining-step cases on CUDA, then scripts/gpu_check.py (the kernel checks
and timings) with its records turned into this schema. GPU figures also get an H100-equivalent value:
times scaled by (this card's bf16 GEMM rate / the H100's 694 TFLOP/s), or by the copy rate (3.0 TB/s on
the H100) for records that say they are bound by memory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from skelcl.benchmark import cases
from skelcl.benchmark.record import fingerprint, make_record, new_result, write_result
from skelcl.benchmark.timing import h100_scale, measure_ceilings
from skelcl.errors import SkelclError
from skelcl.train.run import fmt_duration, show_bars

SUITE_FILE = Path(__file__).with_name("suite.py")


def finished_case(line: str):
    """(case name, "PASSED" / "FAILED" / "ERROR") from a line of pytest -v output, None for other lines."""
    if "::test_case[" not in line:
        return None
    status = next((w for w in ("PASSED", "FAILED", "ERROR") if w in line), None)
    if status is None:
        return None
    return line.split("::test_case[", 1)[1].split("]", 1)[0], status


class CaseProgress:
    """Progress of a suite's cases: a tqdm bar when `bar` (the caller decides: a terminal and progress
    wanted), otherwise one plain, flushed line per finished case on `stream` (default stderr), e.g.
    "bench cpu: 3/9 backbone done (41 s)" with the time since the suite started."""

    def __init__(self, total: int, desc: str, bar: bool, stream=None):
        self.total, self.desc, self.done = int(total), desc, 0
        self.stream = stream
        self.t0 = time.time()
        self.bar = tqdm(total=self.total, desc=desc, unit="case", dynamic_ncols=True) if bar else None

    def line(self, text: str) -> None:
        """Feed one line of pytest output; a finished case advances the progress."""
        got = finished_case(text)
        if got is None:
            return
        name, status = got
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(name)
            return
        word = "done" if status == "PASSED" else status
        out = self.stream or sys.stderr
        took = fmt_duration(time.time() - self.t0)
        print(f"{self.desc}: {self.done}/{self.total} {name} {word} ({took})", file=out, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_cases(suite: str, names, quick: bool, device: str, workdir=None, progress: bool = True) -> list:
    """Records of the named cases, timed by pytest-benchmark in a subprocess (SkelclError with the
    subprocess's output when a case fails). Progress: a bar when `progress` and the output is a terminal
    (skelcl.train.run.show_bars), else one line per finished case on stderr (a log file stays readable)."""
    from skelcl.benchmark.suite import summarize

    names = list(names)
    with tempfile.TemporaryDirectory(prefix="skelcl-bench-") as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n")  # not the repository's pytest settings (they disable benchmarks)
        out = Path(tmp) / "benchmark.json"
        env = dict(
            os.environ,
            SKELCL_BENCH_SUITE=suite,
            SKELCL_BENCH_QUICK="1" if quick else "0",
            SKELCL_BENCH_CASES=",".join(names),
            SKELCL_BENCH_DEVICE=device,
            SKELCL_BENCH_WORKDIR=str(workdir or Path(tmp) / "data"),
        )
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(SUITE_FILE),
            "-c",
            str(ini),
            "--rootdir",
            tmp,
            "-p",
            "no:cacheprovider",
            "-v",
            "--benchmark-json",
            str(out),
            "--benchmark-sort=name",
        ]
        shown = CaseProgress(len(names), f"bench {suite}", bar=progress and show_bars())
        lines = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
            for line in p.stdout:
                lines.append(line)
                shown.line(line)
        shown.close()
        if p.returncode != 0 or not out.is_file():
            tail = "".join(lines[-40:])
            raise SkelclError(f"benchmark cases failed (pytest exit {p.returncode}):\n{tail}")
        data = json.loads(out.read_text())
    records = []
    for b in data["benchmarks"]:
        records += summarize(b["extra_info"]["skelcl"])
    return records


def with_h100(rec: dict, ceilings: dict | None) -> dict:
    """rec with h100_value set from the card's ceilings (times and rates; other units unchanged)."""
    if not ceilings or rec["suite"] != "gpu" or rec.get("h100_value") is not None:
        return rec
    f = h100_scale(ceilings, rec["params"].get("bound", "compute"))
    if rec["unit"] in ("ms", "s", "us"):
        rec["h100_value"] = rec["value"] * f
    elif rec["unit"].endswith("/s") and rec["unit"] not in ("TFLOP/s", "TB/s", "GB/s"):
        rec["h100_value"] = rec["value"] / f
    return rec


# -- scripts/gpu_check.py --------------------------------------------------------------------------------
RATIO_KEYS = ("speedup_vs_eager", "speedup", "x_eager")  # not "ratio": gpu_check uses it for scales
PLAIN_KEYS = ("plain_value", "eager_value", "eager_ms")
H100_KEYS = ("h100_value", "h100_equiv_ms", "h100_equiv", "h100_equivalent")  # not "h100": the anchor
SPREAD_KEYS = ("spread", "iqr", "std")


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def adapt_gpu_records(raw: list, prefix: str = "gpu_check") -> tuple[list, list]:
    """(records in this schema, the records that are not figures) from scripts/gpu_check.py's list of
    dicts, each with at least name, unit and value. Optional fields it may carry: a spread (spread / iqr /
    std), the eager value (plain_value / eager_value / eager_ms; for times also value x speed-up), the
    speed-up over eager (speedup_vs_eager / speedup / x_eager), an H100-equivalent (h100_value /
    h100_equiv_ms / ...); every other scalar field goes into params. Records without a numeric value
    (skipped rows, notes) are returned apart; a repeated name gets a #2, #3 ... suffix."""
    out, other, seen = [], [], {}
    for r in raw:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not _num(r.get("value")):
            other.append(r)
            continue
        unit = r.get("unit") if isinstance(r.get("unit"), str) and r.get("unit") else "value"
        name = f"{prefix}/{r['name']}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"

        def first(keys, r=r):
            return next((float(r[k]) for k in keys if _num(r.get(k))), None)

        ratio = first(RATIO_KEYS)
        plain_value = first(PLAIN_KEYS)
        if plain_value is None and ratio and unit == "ms":  # the eager time, from the speed-up over it
            plain_value = float(r["value"]) * ratio
        used = {"name", "unit", "value", *RATIO_KEYS, *PLAIN_KEYS, *H100_KEYS, *SPREAD_KEYS}
        params = {k: v for k, v in r.items() if k not in used and isinstance(v, (str, int, float, bool))}
        out.append(
            make_record(
                name,
                unit,
                float(r["value"]),
                suite="gpu",
                spread=abs(first(SPREAD_KEYS) or 0.0),
                higher_is_better=r.get("higher_is_better"),
                plain=f"{name} (eager)" if ratio else None,
                plain_value=plain_value,
                ratio=ratio if ratio and ratio > 0 else None,
                h100_value=first(H100_KEYS),
                params=params,
            )
        )
    return out, other


def find_gpu_check(path=None) -> Path:
    p = Path(path) if path else Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    if not p.is_file():
        raise SkelclError(
            f"{p}: the GPU check script is not there (give --gpu-script PATH, or run from a "
            "checkout of the repository)"
        )
    return p


def run_gpu_check(path, out_json: Path, small: bool) -> list:
    """scripts/gpu_check.py's main(argv) run in this process; returns its list of records."""
    spec = importlib.util.spec_from_file_location("skelcl_gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).parent))
    try:
        spec.loader.exec_module(mod)
        argv = ["--out", str(out_json)] + (["--small"] if small else [])
        mod.main(argv)
    finally:
        sys.path.remove(str(Path(path).parent))
    return json.loads(Path(out_json).read_text()) if Path(out_json).is_file() else []


# -- the command -----------------------------------------------------------------------------------------
def run(
    suite: str = "cpu",
    quick: bool = False,
    out=None,
    names=None,
    gpu_script=None,
    progress: bool = True,
    skip_gpu_check: bool = False,
) -> dict:
    """Run the suite(s), write the result file (when out is given) and return the result."""
    if suite not in ("cpu", "gpu", "all"):
        raise SkelclError(f"--suite must be cpu, gpu or all, got {suite!r}")
    machine = fingerprint()
    t0 = time.time()
    records, extra = [], {}
    if suite in ("cpu", "all"):
        sel = _check_names(names, cases.CPU_CASES)
        records += run_cases("cpu", sel, quick, "cpu", progress=progress)
    if suite in ("gpu", "all"):
        import torch

        if not torch.cuda.is_available():
            raise SkelclError("--suite gpu needs a CUDA device (torch.cuda.is_available() is false)")
        ceilings = measure_ceilings()
        torch.cuda.empty_cache()  # the cases run in a subprocess: leave it the card's memory
        machine["ceilings"] = ceilings
        recs = run_cases("gpu", _check_names(names, cases.GPU_CASES), quick, "cuda", progress=progress)
        if not skip_gpu_check:
            with tempfile.TemporaryDirectory() as tmp:
                raw = run_gpu_check(find_gpu_check(gpu_script), Path(tmp) / "gpu_check.json", small=False)
            adapted, other = adapt_gpu_records(raw)
            recs += adapted
            extra["gpu_check_other"] = other
        records += [with_h100(r, ceilings) for r in recs]
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    res = new_result(suite, quick, records, machine)
    res["seconds"] = round(time.time() - t0, 1)
    res.update(extra)
    if out:
        res["file"] = str(write_result(result_path(out, res), res))
    return res


def result_path(out, res: dict) -> Path:
    """out itself, or for a directory (existing, or given with a trailing /) a new file in it named
    <suite>[-quick]_<UTC date>_<revision>.json, so that runs add up to a history."""
    p = Path(out)
    if not (p.is_dir() or str(out).endswith(("/", os.sep))):
        return p
    rev = (res["git"].get("revision") or "norev")[:10] + ("-dirty" if res["git"].get("dirty") else "")
    stamp = res["created"].replace(":", "").replace("-", "")
    return p / f"{res['suite']}{'-quick' if res['quick'] else ''}_{stamp}_{rev}.json"


def _check_names(names, known):
    if not names:
        return list(known)
    bad = [n for n in names if n not in known]
    if bad:
        raise SkelclError(f"--case {', '.join(bad)}: unknown (known: {', '.join(known)})")
    return list(names)


def _fmt(x) -> str:
    if x is None:
        return "-"
    a = abs(x)
    return f"{x:,.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 0.1 else f"{x:.3g}"


def table(res: dict) -> str:
    """The result as a text table: figure, value, spread, unit, plain-path value, ratio (x faster)."""
    m = res["machine"]
    head = (
        f"{m.get('cpu')}, {m.get('cores')} cores, load {m.get('load_average')}"
        + (f", {m['card']}" if m.get("card") else "")
        + f"; git {str(res['git'].get('revision'))[:10]}"
        + (" (dirty)" if res["git"].get("dirty") else "")
        + (", quick sizes" if res.get("quick") else "")
    )
    rows = [("figure", "value", "+-", "unit", "plain", "x plain", "H100-eq")]
    for r in res["records"]:
        rows.append(
            (
                r["name"],
                _fmt(r["value"]),
                _fmt(r["spread"]),
                r["unit"],
                _fmt(r["plain_value"]),
                "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                _fmt(r.get("h100_value")),
            )
        )
    w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head]
    for j, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w[i]) if i in (0, 3) else c.rjust(w[i]) for i, c in enumerate(row)))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)
