"""`skelcl bench`: the schema, the interleaved-round summary, compare, history, the GPU-record adapter and
the quick CPU suite end to end (sizes only; no timing is asserted)."""

import json
import os
import subprocess

import numpy as np
import pytest

from skelcl.benchmark import compare, history, runner
from skelcl.benchmark.record import SCHEMA, check_result, make_record, new_result, read_result, write_result
from skelcl.benchmark.suite import summarize
from skelcl.cli import main
from skelcl.errors import SkelclError

MACHINE = {"cpu": "Test CPU", "cores": 2}


def _result(records, machine=MACHINE, rev="a" * 40, date="2026-01-01T00:00:00+00:00", quick=False):
    res = new_result("cpu", quick, records, machine=dict(machine))
    res["git"] = {"revision": rev, "dirty": False, "date": date}
    return res


def _pair(name, plain_ms, fast_ms, unit="ms", **kw):
    """A plain record and a fast record with ratio plain / fast (times in ms)."""
    plain = make_record(f"{name}/plain", unit, plain_ms, **kw)
    fast = make_record(
        f"{name}/fast",
        unit,
        fast_ms,
        plain=f"{name}/plain",
        plain_value=plain_ms,
        ratio=plain_ms / fast_ms,
        **kw,
    )
    return [plain, fast]


def test_summarize_interleaved_rounds():
    """Values, spreads and ratios from known per-round seconds (computed by hand here)."""
    info = {
        "case": "c",
        "unit": "sequences/s",
        "suite": "cpu",
        "plain": {"fast": "slow"},
        "items": {"slow": 2, "fast": 8},
        "params": {"steps": 2},
        "seconds": {"slow": [1.0, 2.0, 1.0, 1.0], "fast": [1.0, 1.0, 2.0, 0.5]},
        "phases": {
            "fast": [
                {"data": 0.1, "compute": 0.4},
                {"data": 0.2, "compute": 0.3},
                {"data": 0.2, "compute": 0.8},
                {"data": 0.05, "compute": 0.2},
            ]
        },
    }
    recs = {r["name"]: r for r in summarize(info)}
    slow, fast = recs["c/slow"], recs["c/fast"]
    assert slow["value"] == 2.0 and slow["ratio"] is None  # median of 2/[1, 2, 1, 1]
    assert fast["value"] == 8.0  # median of 8/[1, 1, 2, 0.5] = median(8, 8, 4, 16)
    # per-round per-item ratios: (8/1)/(2/1)=4, (8/1)/(2/2)=8, (8/2)/(2/1)=2, (8/0.5)/(2/1)=8 -> median 6
    assert fast["ratio"] == 6.0 and fast["plain"] == "c/slow" and fast["plain_value"] == 2.0
    assert fast["spread"] == pytest.approx(
        np.percentile([8, 8, 4, 16], 75) - np.percentile([8, 8, 4, 16], 25)
    )
    assert recs["c/fast/data"]["value"] == pytest.approx(150.0) and recs["c/fast/data"]["unit"] == "ms"
    # data share of a step: data / (round seconds / steps) = [0.1/0.5, 0.2/0.5, 0.2/1, 0.05/0.25] -> 20 %
    assert recs["c/fast/data_share"]["value"] == pytest.approx(20.0)
    assert not recs["c/fast/data_share"]["higher_is_better"]


def test_record_schema_errors_name_the_field(tmp_path):
    rec = make_record("a/b", "ms", 1.0)
    assert rec["higher_is_better"] is False and make_record("a/c", "sequences/s", 1.0)["higher_is_better"]
    with pytest.raises(SkelclError, match="'value'"):
        make_record("a/b", "ms", float("nan"))
    with pytest.raises(SkelclError, match="'ratio'"):
        make_record("a/b", "ms", 1.0, ratio=-2.0)
    res = _result([rec, dict(rec)])
    with pytest.raises(SkelclError, match="appears twice"):
        check_result(res)
    bad = _result([rec])
    del bad["records"][0]["unit"]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(SkelclError, match="bad.json.*missing field.*unit"):
        read_result(p)
    p.write_text("{not json")
    with pytest.raises(SkelclError, match="bad.json: not a JSON result"):
        read_result(p)


def test_compare_flags_planted_regression(tmp_path, capsys):
    base = _result(_pair("augment", 100.0, 5.0) + _pair("eval", 50.0, 10.0))
    clean = _result(
        _pair("augment", 80.0, 4.2) + _pair("eval", 60.0, 11.5), machine={"cpu": "Other CPU", "cores": 16}
    )
    planted = _result(_pair("augment", 100.0, 5.0) + _pair("eval", 50.0, 14.0))  # ratio 5 -> 3.57
    paths = {}
    for name, res in (("base", base), ("clean", clean), ("planted", planted)):
        paths[name] = write_result(tmp_path / f"{name}.json", res)
    # a faster machine with the same ratios (within 10 %) passes
    assert main(["bench", "compare", str(paths["base"]), str(paths["clean"])]) == 0
    out = capsys.readouterr().out
    assert "0 figure(s) regressed" in out and "different machines" in out
    assert main(["bench", "compare", str(paths["base"]), str(paths["planted"]), "--threshold", "0.1"]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("eval/fast"))
    assert "regressed" in row and "-28.6 %" in row
    assert "1 figure(s) regressed" in out
    # a looser threshold lets it pass
    assert main(["bench", "compare", str(paths["base"]), str(paths["planted"]), "--threshold", "0.4"]) == 0
    rows = {r["name"]: r for r in compare.compare(base, clean)}
    assert rows["augment/plain"]["status"] == "not comparable"  # absolute ms from another machine


def test_compare_gpu_h100_and_same_machine_values():
    def gpu(name, ms, h100):
        return make_record(name, "ms", ms, suite="gpu", h100_value=h100)

    base = _result([gpu("step", 40.0, 50.0), make_record("phase", "ms", 10.0)])
    new = _result([gpu("step", 30.0, 70.0), make_record("phase", "ms", 13.0), make_record("extra", "ms", 1)])
    rows = {r["name"]: r for r in compare.compare(base, new, 0.1)}
    assert rows["step"]["status"] == "regressed" and rows["step"]["basis"].startswith("H100-eq")
    assert rows["step"]["change"] == pytest.approx(50 / 70 - 1)  # a time: lower is better
    assert rows["phase"]["status"] == "slower"  # same machine, raw value: information only
    assert compare.compare(base, new, 0.1, absolute=True)[1]["status"] == "regressed"
    assert rows["extra"]["status"] == "only in new"


def test_history_draws_png(tmp_path, capsys):
    root = tmp_path / "results"
    for i, (ratio_eval, day) in enumerate([(5.0, 3), (7.0, 1), (6.0, 2)]):
        recs = _pair("augment", 100.0, 5.0) + _pair("eval", 50.0, 50.0 / ratio_eval)
        res = _result(recs, rev=f"{i}" * 40, date=f"2026-01-0{day}T00:00:00+00:00")
        write_result(root / f"r{i}" / "bench.json", res)
    (root / "old_format.json").write_text(json.dumps({"sequences_per_s": 3}))  # not the schema: skipped
    assert main(["bench", "history", str(root), "--out", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert "3 result file(s), 4 figure(s)" in out
    line = next(x for x in out.splitlines() if x.startswith("eval/fast:"))
    # ordered by commit date: r1 (day 1, x7), r2 (day 2, x6), r0 (day 3, x5): best r1, latest r0
    assert (
        "best 7.143 ms (x7.00 plain) at 11111111" in line and "latest 10 ms (x5.00 plain) at 00000000" in line
    )
    png = tmp_path / "png" / "eval__fast.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    with pytest.raises(SkelclError, match="no result files"):
        history.main(tmp_path / "png")


def test_gpu_records_adapter_and_h100_scaling():
    # shaped like scripts/gpu_check.py's records (name, unit, value, section, t_s and fields of their own)
    raw = [
        {"name": "env", "unit": "card", "value": "NVIDIA H200", "section": "setup", "t_s": 1.0},
        {"name": "ceiling/d2d_copy", "unit": "TB/s", "value": 4.1, "h100": 3.0, "ratio": 0.73, "t_s": 3.0},
        {"name": "infonce/inbatch_65536/bf16/triton", "unit": "ms", "value": 20.0, "h100_equiv_ms": 25.0,
         "speedup_vs_eager": 5.0, "peak_extra_MiB": 120.5, "target": {"ms": 21.1}, "section": "headline"},
        {"name": "infonce/inbatch_65536/bf16/triton", "unit": "ms", "value": 21.0, "section": "sweeps"},
        {"name": "compile/backbone", "unit": "ms", "value": None, "skipped": "--small"},
        {"name": "check/graph_conv/unit", "unit": "max_rel_err", "value": 0.004, "ok": True},
    ]  # fmt: skip
    recs, other = runner.adapt_gpu_records(raw)
    names = [r["name"] for r in recs]
    tri_name = "gpu_check/infonce/inbatch_65536/bf16/triton"
    assert names == [
        "gpu_check/ceiling/d2d_copy",
        tri_name,
        tri_name + "#2",
        "gpu_check/check/graph_conv/unit",
    ]
    copy, tri, tri2, check = recs
    assert copy["ratio"] is None and copy["h100_value"] is None  # "ratio" / "h100" there are not figures
    assert copy["higher_is_better"] and not check["higher_is_better"] and check["params"]["ok"] is True
    assert tri["ratio"] == 5.0 and tri["plain_value"] == 100.0 and tri["h100_value"] == 25.0
    assert tri["params"]["peak_extra_MiB"] == 120.5 and "target" not in tri["params"]  # scalars only
    assert tri2["ratio"] is None and tri2["plain_value"] is None
    assert [o["name"] for o in other] == ["env", "compile/backbone"]
    ceilings = {"bf16_tflops": 2 * 694.0, "copy_tbps": 4.5}  # a card twice as fast in compute as an H100
    step = runner.with_h100(make_record("step", "ms", 10.0, suite="gpu"), ceilings)
    assert step["h100_value"] == pytest.approx(20.0)
    rate = runner.with_h100(make_record("rate", "sequences/s", 3000.0, suite="gpu"), ceilings)
    assert rate["h100_value"] == pytest.approx(1500.0)
    mem = runner.with_h100(make_record("copy", "ms", 3.0, suite="gpu", params={"bound": "memory"}), ceilings)
    assert mem["h100_value"] == pytest.approx(4.5)
    assert runner.with_h100(make_record("cpu", "ms", 1.0), ceilings)["h100_value"] is None


def test_bench_unknown_case_is_an_error(capsys):
    assert main(["bench", "--quick", "--case", "nope", "--no-progress"]) == 2
    assert "--case nope: unknown" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_suite_writes_valid_records(tmp_path, capsys):
    """The whole CPU suite at CI sizes: every case and variant present, ratios where a plain path is."""
    out = tmp_path / "quick.json"
    assert main(["bench", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    res = read_result(out)
    assert res["schema"] == SCHEMA and res["quick"] and res["suite"] == "cpu"
    names = {r["name"]: r for r in res["records"]}
    for name in (
        "synthetic/generate",
        "cache_read/memmap",
        "batch_read/kept_in_ram",
        "read_pku/ours",
        "read_ntu/ours",
        "augment/numba",
        "evaluate/detection_map",
        "backbone/eager",
        "infonce/info_nce",
        "pretrain_step/skeletonclr+snippet+prefetch",
        "finetune_step/finetune+prefetch",
        "backbone_w1/cpu_fast_path_T16",
        "snippet_share/snippet/snippet_share",
        "demo_step/demo_step",
        "demo_ranks/demo_step_2ranks",
    ):
        assert name in names, name
        assert name in printed
    for r in res["records"]:
        if r["plain"] is not None:
            plain = names[r["plain"]]
            assert r["ratio"] > 0 and r["plain_value"] == plain["value"] and plain["unit"] == r["unit"]
    for phase in ("data", "forward", "backward", "optimizer"):
        assert names[f"pretrain_step/skeletonclr+snippet/{phase}"]["unit"] == "ms"
    share = names["pretrain_step/skeletonclr+snippet+prefetch/data_share"]["value"]
    assert 0 <= share <= 100
    assert names["augment/numba"]["plain"] == "augment/numpy"
    assert res["machine"]["cores"] == os.cpu_count() and res["versions"]["torch"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert res["git"]["revision"] == head.stdout.strip()


def test_pretrain_variant_ranks_split_one_global_batch(tmp_path):
    """demo_ranks' ranks: rank r of w takes every w-th of the draws one process with w x the batch takes, so
    the ranks together see exactly the single process's sequences, each once."""
    from skelcl.benchmark.cases import PretrainVariant, _filled_store

    store = _filled_store(tmp_path, 16, 1)
    s = dict(width=0.125, batch=3, bodies=1, queue=8, squeue=32)
    one = PretrainVariant(store, {**s, "batch": 6}, "cpu", method="rvtclr").batches
    ranks = [PretrainVariant(store, s, "cpu", method="rvtclr", rank=r, world=2).batches for r in (0, 1)]
    for i in range(len(one)):
        a, b = ranks[0][i], ranks[1][i]
        assert len(a) == len(b) == 3 and not set(a) & set(b)
        assert sorted([*a, *b]) == sorted(one[i])


def test_backbone_flops_match_torch_flop_counter(monkeypatch):
    """The FLOP count of the backbone_w1 case against torch.utils.flop_counter on the frames-major path."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from skelcl.benchmark.cases import backbone_flops
    from skelcl.models import Backbone

    monkeypatch.setenv("SKELCL_GRAPH_CONV", "reference")
    torch.manual_seed(0)
    model = Backbone("stgcn", 0.25, (5, 8))
    with FlopCounterMode(display=False) as fc:
        out, _ = model(torch.randn(2, 32, 1, 25, 3))
        fwd = fc.get_total_flops()
        out.square().mean().backward()
    want_fwd, want = backbone_flops(2, 32, 1, 0.25, (5, 8))
    assert fwd == want_fwd
    assert abs(fc.get_total_flops() / want - 1) < 1e-3
    assert backbone_flops(2, 32, 1, 0.25, (2, 5, 8))[0] < want_fwd  # one more stride: fewer frames
