"""scripts/gpu_check.py, a thin entry point over skelcl.benchmark.gpu: the plan fits the 7-minute window,
the CPU dry run (--small) exercises every section, the hard budget stops it with its JSON intact, and a missed
target never reads as "met"."""

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
ORDER = ["setup", "ceilings", "check_infonce", "check_graph_conv", "headline", "eager", "sweeps", "fp32",
         "compile", "extra_shapes", "peers"]  # fmt: skip


def load():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(*args, timeout=600):
    cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_plan_sums_to_at_most_420_seconds_in_the_required_order():
    r = run("--plan", timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    sections = {row[0]: int(row[1]) for row in rows if row and row[0] != "total"}
    assert list(sections) == ORDER
    total = int(next(row for row in rows if row and row[0] == "total")[1])
    assert total == sum(sections.values()) <= 420
    mod = load()
    assert mod.BUDGET_S <= 420 and [name for name, _, _ in mod.PLAN] == ORDER
    from skelcl.benchmark.gpu.sweeps import DW_SWEEP

    assert DW_SWEEP[0][3] == 4  # the dW sweep times the 4-warp variant without spills first


def test_script_is_a_thin_entry_point_with_one_module_per_section():
    from skelcl.benchmark.gpu import check

    assert len(SCRIPT.read_text().splitlines()) < 150
    for name, _, _ in check.PLAN:
        module = importlib.import_module(f"skelcl.benchmark.gpu.{check.MODULES[name]}")
        assert callable(module.run), name


def _records(path):
    recs = json.loads(Path(path).read_text())
    assert isinstance(recs, list) and all({"name", "unit", "value"} <= set(r) for r in recs)
    return recs


@pytest.mark.slow
def test_small_dry_run_exercises_every_section(tmp_path):
    out = tmp_path / "small.json"
    r = run("--small", "--out", str(out))
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    recs = _records(out)
    by_name = {x["name"]: x for x in recs}
    for name in ORDER:  # every section ran to its end
        sec = by_name[f"section/{name}"]
        assert "error" not in sec and sec["unit"] == "s", sec
    checks = [x for x in recs if x["name"].startswith("check/") and "ok" in x]
    assert len(checks) == 5 and all(x["ok"] for x in checks), checks
    assert set(by_name["check/infonce/inbatch_65536"]["rel_err"]) == {"loss", "dq", "dk"}
    assert by_name["ceiling/bf16_gemm"]["value"] > 0 and by_name["ceiling/d2d_copy"]["value"] > 0
    head = by_name["infonce/inbatch_65536/bf16/triton"]
    assert head["section"] == "headline" and head["h100_equiv_ms"] > 0 and "meets_time_target" in head
    assert head["kernel_variant"] == "16bit" and head["speedup_vs_eager"] > 0
    assert by_name["backbone/backbone_N256_T64/bf16/noop"]["value"] > 0
    assert "derived/backbone_bf16/graph_conv_share_of_eager_step" in by_name
    sections = [x["section"] for x in recs if "section" in x]
    assert sections == sorted(sections, key=ORDER.index)  # records come in section order
    dw = [x for x in recs if x["name"].startswith("sweep/graph_conv/") and x["kind"] == "dw"]
    assert dw and "error" not in dw[0]
    assert r.stdout.rstrip().splitlines()[-1].startswith("wall ")  # the table comes last
    assert "family/case" in r.stdout[-6000:]


@pytest.mark.slow
def test_budget_stops_the_run_and_keeps_the_json(tmp_path):
    out = tmp_path / "cut.json"
    r = run("--small", "--budget-s", "20", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    recs = _records(out)
    assert recs[-1]["name"] == "done" and recs[-1]["value"] < 60
    errors = [x.get("error", "") for x in recs if x["name"].startswith("section/")]
    assert any("time budget" in e or "stopped" in e for e in errors)
    assert [x["name"] for x in recs if x["name"] == "env"]  # what ran before the cut is kept


def test_missed_targets_never_read_as_met(monkeypatch, capsys):
    """Targets are H100 figures: on a card twice as fast (scale 2), 10 ms is 20 H100-ms, a time miss
    against 14 ms; 200 MiB extra misses the 128 MiB memory target."""
    from skelcl.benchmark.gpu.check import print_table
    from skelcl.benchmark.gpu.common import Bench, C, time_row

    bench = Bench(None, "cpu", 100.0, __import__("time").time())
    monkeypatch.setattr(bench, "bench_ms", lambda fn, rep_ms=200: 10.0)
    monkeypatch.setattr(bench, "peak_extra_mib", lambda fn: 200.0)
    C.bench, C.small, C.scale = bench, False, {"compute": 2.0}
    rec = time_row("infonce", "inbatch_65536", "bf16", "triton", lambda: None)
    assert rec["value"] == 10.0 and rec["h100_equiv_ms"] == 20.0
    assert rec["meets_time_target"] is False and rec["meets_memory_target"] is False
    monkeypatch.setattr(bench, "peak_extra_mib", lambda fn: 100.0)
    C.scale = {"compute": 1.0}
    ok = time_row("infonce", "inbatch_65536", "bf16", "triton", lambda: None)
    assert ok["meets_time_target"] is True and ok["meets_memory_target"] is True
    print_table()
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if line.startswith("infonce/inbatch_65536")]
    assert "time MISSED, memory MISSED" in lines[0] and "met" not in lines[0].replace("MISSED", "")
    assert "time met, memory met" in lines[1]
