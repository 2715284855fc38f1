"""The result schema of `skelcl bench`, one for every figure, and what is recorded about the machine.

A result file is one JSON object:

    {"schema": "skelcl-bench/1", "created": ISO time (UTC), "suite": "cpu" | "gpu" | "all", "quick": bool,
     "machine": fingerprint(), "versions": versions(), "git": git_info(), "records": [record, ...]}

and a record is

    {"name": "augment/numba",            case/variant (case/variant/phase for the phases of a step)
     "suite": "cpu" | "gpu",
     "unit": "sequences/s" | "ms" | ...   what value counts
     "value": float,                     median over rounds
     "spread": float,                    interquartile range over rounds, in the same unit
     "higher_is_better": bool,           true for rates, false for times
     "plain": "augment/numpy" | null,    the plain path this figure is measured beside (same process,
                                         rounds interleaved)
     "plain_value": float | null,        its median, same unit
     "ratio": float | null,              median over rounds of (plain time / this time): > 1 is faster
     "h100_value": float | null,         GPU figures: the value scaled to an H100 (card ceilings measured
                                         in the same run); null on the CPU
     "rounds": int, "params": {...}}     sizes and settings of the case

Ratios are the portable figures: two machines of different speed give the same ratio when the code is the
same, so `skelcl bench compare` compares ratios (and H100-equivalent values for GPU figures).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

from skelcl.errors import SkelclError

SCHEMA = "skelcl-bench/1"
RECORD_KEYS = ("name", "suite", "unit", "value", "spread", "higher_is_better", "plain", "plain_value",
               "ratio", "h100_value", "rounds", "params")  # fmt: skip


def make_record(
    name: str,
    unit: str,
    value: float,
    *,
    suite: str = "cpu",
    spread: float = 0.0,
    higher_is_better: bool | None = None,
    plain: str | None = None,
    plain_value: float | None = None,
    ratio: float | None = None,
    h100_value: float | None = None,
    rounds: int = 1,
    params: dict | None = None,
) -> dict:
    """One figure in the schema (see the module docstring); higher_is_better defaults to "unit is a rate"."""
    if higher_is_better is None:
        higher_is_better = "/s" in unit or unit in ("x", "TFLOP/s", "GB/s")
    rec = {
        "name": name, "suite": suite, "unit": unit, "value": float(value), "spread": float(spread),
        "higher_is_better": bool(higher_is_better), "plain": plain,
        "plain_value": None if plain_value is None else float(plain_value),
        "ratio": None if ratio is None else float(ratio),
        "h100_value": None if h100_value is None else float(h100_value),
        "rounds": int(rounds), "params": dict(params or {}),
    }  # fmt: skip
    check_record(rec)
    return rec


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_record(rec, where: str = "record") -> None:
    """Raise SkelclError naming the field when rec does not follow the schema."""
    if not isinstance(rec, dict):
        raise SkelclError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        raise SkelclError(f"{where}: missing field(s) {', '.join(missing)}")
    name = rec["name"]
    if not isinstance(name, str) or not name:
        raise SkelclError(f"{where}: field 'name' must be a non-empty string, got {name!r}")
    where = f"{where} {name!r}"
    if rec["suite"] not in ("cpu", "gpu"):
        raise SkelclError(f"{where}: field 'suite' must be 'cpu' or 'gpu', got {rec['suite']!r}")
    if not isinstance(rec["unit"], str) or not rec["unit"]:
        raise SkelclError(f"{where}: field 'unit' must be a non-empty string")
    if not _number(rec["value"]) or not _number(rec["spread"]) or rec["spread"] < 0:
        raise SkelclError(f"{where}: fields 'value' and 'spread' must be finite numbers (spread >= 0)")
    if not isinstance(rec["higher_is_better"], bool):
        raise SkelclError(f"{where}: field 'higher_is_better' must be true or false")
    for key in ("plain_value", "ratio", "h100_value"):
        if rec[key] is not None and not _number(rec[key]):
            raise SkelclError(f"{where}: field {key!r} must be a finite number or null, got {rec[key]!r}")
    if rec["ratio"] is not None and rec["ratio"] <= 0:
        raise SkelclError(f"{where}: field 'ratio' must be > 0, got {rec['ratio']}")
    if rec["plain"] is not None and not isinstance(rec["plain"], str):
        raise SkelclError(f"{where}: field 'plain' must be a record name or null")
    if not isinstance(rec["rounds"], int) or rec["rounds"] < 1:
        raise SkelclError(f"{where}: field 'rounds' must be an integer >= 1")
    if not isinstance(rec["params"], dict):
        raise SkelclError(f"{where}: field 'params' must be an object")


def check_result(res, where: str = "result") -> None:
    """Raise SkelclError when res is not a result file's content (every record checked)."""
    if not isinstance(res, dict):
        raise SkelclError(f"{where}: a result must be a JSON object")
    if res.get("schema") != SCHEMA:
        raise SkelclError(f"{where}: field 'schema' must be {SCHEMA!r}, got {res.get('schema')!r}")
    for key in ("machine", "versions", "git"):
        if not isinstance(res.get(key), dict):
            raise SkelclError(f"{where}: field {key!r} must be an object")
    if not isinstance(res.get("records"), list):
        raise SkelclError(f"{where}: field 'records' must be a list")
    seen = set()
    for i, rec in enumerate(res["records"]):
        check_record(rec, f"{where}: records[{i}]")
        if rec["name"] in seen:
            raise SkelclError(f"{where}: records[{i}]: name {rec['name']!r} appears twice")
        seen.add(rec["name"])


def read_result(path) -> dict:
    """A checked result file (SkelclError naming the file otherwise)."""
    p = Path(path)
    try:
        res = json.loads(p.read_text())
    except FileNotFoundError:
        raise SkelclError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SkelclError(f"{p}: not a JSON result file ({err})") from None
    check_result(res, str(p))
    return res


def write_json(path, obj) -> Path:
    """obj as indented JSON, written atomically (a temporary file renamed into place), so a reader never
    sees half a file; values JSON does not know are written as their str()."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, p)
    return p


def write_result(path, res: dict) -> Path:
    """Check res and write it atomically."""
    check_result(res, str(path))
    return write_json(path, res)


def new_result(suite: str, quick: bool, records: list, machine: dict | None = None) -> dict:
    return {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "suite": suite,
        "quick": bool(quick), "machine": machine if machine is not None else fingerprint(),
        "versions": versions(), "git": git_info(), "records": records,
    }  # fmt: skip


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict:
    """The machine: CPU model, cores (and those this process may use), load average, memory, platform, the
    thread environment variables set, and the CUDA card when there is one (the card's GEMM / copy ceilings
    come from the GPU suite)."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }
    # thread settings that change CPU figures (OpenMP's active spin-wait costs a lot on a shared machine)
    keys = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "KMP_BLOCKTIME")
    info["thread_env"] = {k: os.environ[k] for k in keys if k in os.environ}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["card"] = torch.cuda.get_device_name(0)
            info["card_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except ImportError:
        pass
    return info


def versions() -> dict:
    """Versions of Python and of the libraries the hot paths use (null when not importable)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("skelcl", "torch", "numpy", "numba", "triton", "nvidia-dali-cuda120", "pytest-benchmark"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def git_info(path=None) -> dict:
    """{"revision": full hash or null, "dirty": bool or null, "date": commit time} of the checkout the
    package runs from (nulls when it is not a git checkout)."""
    root = Path(path) if path else Path(__file__).resolve().parents[2]

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)

    try:
        rev = git("rev-parse", "HEAD")
        if rev.returncode != 0:
            return {"revision": None, "dirty": None, "date": None}
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
        date = git("show", "-s", "--format=%cI", "HEAD").stdout.strip() or None
        return {"revision": rev.stdout.strip(), "dirty": dirty, "date": date}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None, "date": None}
