"""`skelcl experiment`: the t-interval maths and the wording rule on constructed results, the plan of runs
(references, dedup), the shipped experiment configs, and a tiny end-to-end run that resumes."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from skelcl.cli import main
from skelcl.errors import SkelclError
from skelcl.study.experiment import (
    FROZEN_REF,
    SCRATCH,
    TRAINABLE,
    check_comparisons,
    check_rows,
    compare,
    own_reference_comparisons,
    plan,
    pretrain_config,
    read_ledger,
    reference_protocols,
    t_interval,
    t_quantile,
    verdict,
)
from skelcl.train import config

M = "avg_mAP_0.1:0.5"


@pytest.mark.parametrize(
    "p, df, expected",
    [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 9, 2.262), (0.975, 29, 2.045),
     (0.95, 4, 2.132), (0.995, 10, 3.169), (0.975, 200, 1.972)],
)  # fmt: skip
def test_t_quantile_matches_published_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=6e-4)


def t_density_integral(q, df, intervals=40000):
    """P(0 < T < q) for Student's t with df degrees of freedom, by Simpson's rule on the density."""
    x = np.linspace(0.0, q, intervals + 1)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    w = np.ones(intervals + 1)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return float((w * f).sum() * (q / intervals) / 3)


def test_t_quantile_against_numerical_integration():
    # an independent reference: the density integrated numerically from 0 to the quantile gives p - 1/2
    for df in range(1, 40):
        for p in (0.9, 0.975, 0.999):
            assert t_density_integral(t_quantile(p, df), df) == pytest.approx(p - 0.5, abs=1e-10)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantile_closed_forms_for_one_and_two_df(p):
    # df 1 is the Cauchy law, q = tan(pi (p - 1/2)); df 2 has q = (2p - 1) / sqrt(2 p (1 - p))
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


def test_t_interval_by_hand():
    d = [5.0, 2.0, -3.0, 4.0, 1.0]  # mean 1.8, sd sqrt(9.7)
    m, lo, hi = t_interval(d)
    half = 2.7764451 * math.sqrt(9.7) / math.sqrt(5)
    assert m == pytest.approx(1.8)
    assert (lo, hi) == (pytest.approx(1.8 - half, abs=1e-5), pytest.approx(1.8 + half, abs=1e-5))
    m1, lo1, hi1 = t_interval([3.0])
    assert m1 == 3.0 and math.isnan(lo1) and math.isnan(hi1)
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


def test_wording_rule():
    assert verdict(0.1, 5.0) == "helps"
    assert verdict(-5.0, -0.1) == "hurts"
    assert verdict(-0.1, 5.0) == "cannot tell"
    assert verdict(float("nan"), float("nan")) == "cannot tell"


def _results(row, protocol, values):
    return [{"row": row, "protocol": protocol, "seed": s, M: v} for s, v in values.items()]


def test_compare_pairs_by_seed_and_words_the_interval():
    base = _results("A", "linear", {0: 0.30, 1: 0.50, 2: 0.40, 3: 0.20})
    up = _results("B", "linear", {0: 0.40, 1: 0.61, 2: 0.49, 3: 0.31})  # +10, +11, +9, +11 points
    noisy = _results("C", "linear", {0: 0.35, 1: 0.45, 2: 0.50})  # +5, -5, +10: seed 3 missing
    down = _results("D", "linear", {0: 0.20, 1: 0.41, 2: 0.28, 3: 0.12})  # -10, -9, -12, -8
    res = base + up + noisy + down
    c = compare(res, M, "B", "A", "linear")
    d = np.array([10.0, 11.0, 9.0, 11.0])
    half = 3.1824463 * d.std(ddof=1) / 2
    assert c["seeds"] == [0, 1, 2, 3] and c["differences"] == pytest.approx(list(d))
    assert c["mean"] == pytest.approx(10.25) and c["low"] == pytest.approx(10.25 - half, abs=1e-5)
    assert c["verdict"] == "helps"
    c = compare(res, M, "C", "A", "linear")
    assert c["seeds"] == [0, 1, 2] and c["mean"] == pytest.approx(10 / 3) and c["verdict"] == "cannot tell"
    assert compare(res, M, "D", "A", "linear")["verdict"] == "hurts"
    assert compare(res, M, "B", "A", "ft20") is None


def test_references_under_every_protocol():
    refs = reference_protocols({"protocol": "linear", "label_fraction": 1.0})
    assert refs[TRAINABLE] == {"protocol": "finetune", "label_fraction": 1.0, "head": "simple"}
    assert refs[FROZEN_REF] == {"protocol": "linear", "label_fraction": 1.0}
    refs = reference_protocols({"protocol": "finetune", "label_fraction": 0.05})
    assert refs[TRAINABLE] == {"protocol": "finetune", "label_fraction": 0.05, "head": "ufusion"}
    assert refs[FROZEN_REF] == {"protocol": "frozen_fusion", "label_fraction": 0.05}


def _exp(**extra):
    exp = config.load_config("experiment")
    exp.update(extra)
    return exp


def test_plan_runs_each_cell_once_and_rows_use_their_seeds():
    exp = _exp(seeds=[0, 1, 2], rows=[{"label": "X", "method": "skeletonclr", "seeds": 2}], references=True,
               protocols={"frozen_fusion": {"protocol": "frozen_fusion", "label_fraction": 1.0},
                          "ft100": {"protocol": "finetune", "label_fraction": 1.0}})  # fmt: skip
    jobs = plan(exp)
    pre = [j for j in jobs if j["kind"] and j["kind"].startswith("pretrain")]
    assert [j["seed"] for j in pre] == [0, 1]
    runs = [j for j in jobs if j["kind"]]
    assert len({j["name"] for j in runs}) == len(runs)  # every real run once
    # the frozen random run, and the trainable one that is ft100's reference and frozen_fusion's scratch row
    random_runs = {j["name"] for j in runs if j.get("pretrained", "x") is None}
    assert len(random_runs) == 3 * 2
    recorded = [(j["row"], j["protocol"], j["seed"]) for j in jobs if j.get("pretrained", "x") is None]
    assert len(recorded) == len(set(recorded)) == 3 * 3  # FROZEN_REF + SCRATCH, TRAINABLE
    with pytest.raises(SkelclError, match="seeds must be a count"):
        plan(_exp(seeds=[0], rows=[{"label": "X", "method": "skeletonclr", "seeds": 2}]))
    with pytest.raises(SkelclError, match="used twice"):
        plan(_exp(rows=[{"label": "X", "method": "skeletonclr"}, {"label": "X", "method": "aimclr"}]))
    with pytest.raises(SkelclError, match="no row named"):
        check_comparisons(_exp(comparisons=[["SkeletonCLR", "nope"]]))


def test_plan_runs_rows_on_every_seed_and_references_first():
    """A study stopped early must hold whole replicates of its main rows: every run of a row on all seeds,
    and of the references, comes before any run of a row with fewer seeds."""
    exp = _exp(seeds=[0, 1, 2], references=True,
               rows=[{"label": "Few", "method": "skeletonclr", "seeds": 2},
                     {"label": "All", "method": "skeletonclr"}],
               protocols={"ft100": {"protocol": "finetune", "label_fraction": 1.0}})  # fmt: skip
    rows = [j["row"] for j in plan(exp)]
    last_main = max(i for i, r in enumerate(rows) if r != "Few")
    first_few = rows.index("Few")
    assert first_few > last_main
    assert rows.count("Few") == 2 * 2  # two seeds, a pretraining and one fine-tuning each


@pytest.mark.parametrize("name", ["experiment", "study_snippet", "study_cpu_bf16"])
def test_shipped_experiment_configs_are_sound(name, tmp_path):
    """Rows merge into their method's pretraining config, comparisons name rows, the study's data seed is
    held out, and every fine-tuning protocol runs a fixed step budget."""
    exp = config.resolve(name)
    pairs = check_comparisons(exp)
    assert pairs
    for job in plan(exp):
        if job["kind"] and job["kind"].startswith("pretrain"):
            config.load_config(f"pretrain_{job['method']}")  # every method ships its pretraining config
            cfg = pretrain_config(exp, job["method"], job["pretrain"], tmp_path, job["seed"])
            assert cfg["pretrain"]["method"] == job["method"]
    assert exp["finetune"]["train"]["steps"] > 0
    if name == "study_snippet":
        assert exp["data"]["seed"] not in exp["data"]["tuning_seeds"] and 0 in exp["data"]["tuning_seeds"]
        assert exp["data"]["sequences"] >= 1000
        rows = {r["label"]: r for r in exp["rows"]}
        rvt = [r for r in rows.values() if r["method"] == "rvtclr"]
        assert len(rvt) == 3 and all(r.get("seeds", len(exp["seeds"])) >= 5 for r in rvt)
        others = [r for r in rows.values() if r["method"] in ("skeletonclr", "aimclr")]
        assert len(others) == 4 and all(r.get("seeds", len(exp["seeds"])) >= 3 for r in others)
        fracs = sorted(p["label_fraction"] for p in exp["protocols"].values() if p["protocol"] == "finetune")
        assert fracs == [0.05, 0.2] and exp["references"]


TINY = [
    "data.sequences=14", "data.tuning_seeds=[]", "seeds=[0, 1]", "model.width=0.125",
    "pretrain.train.epochs=1", "pretrain.train.batch_size=6", "finetune.train.steps=2",
    "rows=[{label: A, method: skeletonclr, seeds: 1, pretrain: {snippet: false}}, "
    "{label: B, method: skeletonclr, seeds: 1, pretrain: {snippet: true, match: aligned}}]",
    "comparisons=[[B, A]]", "protocols={linear: {protocol: linear, label_fraction: 0.5}}",
]  # fmt: skip


def test_experiment_end_to_end_resumes(tmp_path, capsys):
    out = tmp_path / "exp"
    args = ["experiment", "--out", str(out), "--quiet", *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\[1/8\] [\w.-]+: \d+ s; elapsed 0:\d\d:\d\d, ETA 0:\d\d:\d\d \(7 runs left\)", printed)
    table = (out / "table.md").read_text()
    assert "B − A" in table and f"A − {FROZEN_REF}" in table and f"A − {TRAINABLE}" not in table
    assert f"| {SCRATCH} |" in table and "finetune.bn_calibrate=random" in table
    assert "2 optimizer steps" in table and "data seed 0" in table
    assert (out / "table.png").stat().st_size > 10_000
    data = json.loads((out / "results.json").read_text())
    got = {(r["row"], r["protocol"], r["seed"]) for r in data["results"]}
    assert got == {("A", "linear", 0), ("B", "linear", 0)} | {
        (ref, "linear", s) for ref in (SCRATCH, FROZEN_REF) for s in (0, 1)
    }
    assert all(r["steps"] == 2 for r in data["results"])
    (c,) = data["comparisons"]
    assert c["seeds"] == [0] and c["verdict"] == "cannot tell"  # one pair: no interval
    assert "- (n=1) | cannot tell" in table
    assert not (out / "data").exists() and (out / "runs" / "data" / "meta.json").is_file()
    # every finished run is in finished.jsonl; a line cut short by a kill is ignored
    ledger = read_ledger(out)
    assert set(ledger) == {p.name for p in (out / "runs").iterdir() if p.name != "data"}

    def drop(name):  # forget a finished run: its folder's metrics and its ledger line
        (out / "runs" / name / "metrics.json").unlink()
        lines = (out / "finished.jsonl").read_text().splitlines()
        keep = [ln for ln in lines if not ln.startswith(f'{{"name": "{name}"')]
        assert len(keep) == len(lines) - 1
        (out / "finished.jsonl").write_text("\n".join(keep) + "\n")

    # a rerun skips every finished run; a run without final metrics is redone
    drop("ft_random_linear-simple-l0.5_s1")
    with open(out / "finished.jsonl", "a") as f:  # a kill while the last line was written
        f.write('{"name": "ft_cut')
    assert set(read_ledger(out)) == set(ledger) - {"ft_random_linear-simple-l0.5_s1"}
    assert main(args) == 0
    assert "ft_cut" not in (out / "finished.jsonl").read_text()  # cut off before the next line
    printed = capsys.readouterr().out
    assert re.findall(r"\[\d/8\] (\S+):", printed) == ["ft_random_linear-simple-l0.5_s1"]
    assert json.loads((out / "results.json").read_text())["results"] == data["results"]
    # a checkout of OUT without runs/ (what a commit holds) continues: finished runs come from the ledger,
    # and a pending fine-tuning whose pretraining checkpoint is gone gets that pretraining again first
    pending = next(p.name for p in (out / "runs").glob("ft_a_*"))
    drop(pending)
    for run in (out / "runs").iterdir():
        if run.name != "data":
            shutil.rmtree(run)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.findall(r"\[\d/8\] (\S+):", printed) == [pending]
    assert json.loads((out / "results.json").read_text())["results"] == data["results"]
    assert (out / "runs" / "pre_a_s0" / "last.pt").is_file()
    (out / "finished.jsonl").write_text('{"name": "x"}\nnot json\n{"name": "y"}\n')
    with pytest.raises(SkelclError, match=r"finished.jsonl:2"):
        read_ledger(out)
    (out / "finished.jsonl").write_text("\n".join(f"{json.dumps(e)}" for e in ledger.values()) + "\n")
    # --table-only collects the finished runs and runs nothing (row C has none)
    rows = "rows=[{label: A, method: skeletonclr, seeds: 1}, {label: C, method: aimclr}]"
    assert main([args[0], "--table-only", *args[1:], rows, "comparisons=[]"]) == 0
    assert "[1/" not in capsys.readouterr().out and not list((out / "runs").glob("pre_c_*"))
    got = json.loads((out / "results.json").read_text())["results"]
    assert got == [r for r in data["results"] if r["row"] != "B"]
    # settings chosen on the data seed: refused
    assert main([*args, "data.tuning_seeds=[0]"]) == 2
    assert "tuning_seeds" in capsys.readouterr().err


def test_row_train_keys_reach_only_that_rows_pretraining(tmp_path):
    """A row's train.* keys (here cpu_amp) go into its own pretraining config and no other row's; a
    non-mapping is refused with the row named."""
    exp = config.resolve("study_cpu_bf16")
    amp = {}
    for job in plan(exp):
        if job["kind"] and job["kind"].startswith("pretrain"):
            cfg = pretrain_config(exp, job["method"], job["pretrain"], tmp_path, job["seed"])
            amp.setdefault(job["row"], set()).add(cfg["train"]["cpu_amp"])
            assert cfg["pretrain"]["snippet"] is True and cfg["train"]["batch_size"] == 32
    f32, b16 = "SkeletonCLR + snippet, float32", "SkeletonCLR + snippet, CPU bf16 autocast"
    assert amp == {f32: {False}, b16: {True}}
    bad = dict(exp, rows=[{"label": "x", "method": "skeletonclr", "train": [1]}])
    with pytest.raises(SkelclError, match=r"rows\[0\]: train must be a mapping"):
        plan(bad)


PROTOS = {"linear": {"protocol": "linear", "label_fraction": 1.0},
          "frozen_fusion": {"protocol": "frozen_fusion", "label_fraction": 0.2},
          "ft20": {"protocol": "finetune", "label_fraction": 0.2}}  # fmt: skip


def test_each_protocol_is_compared_with_its_own_reference():
    """Frozen protocols: the frozen random encoder is the reference, the fully trained random encoder is a
    row of its own (SCRATCH); fine-tuning: the encoder trained from random init."""
    exp = _exp(seeds=[0, 1], references=True, protocols=PROTOS,
               rows=[{"label": "P", "method": "skeletonclr"}])  # fmt: skip
    recorded = {}
    for j in plan(exp):
        if j.get("pretrained", "x") is None:
            recorded.setdefault(j["protocol"], set()).add((j["row"], j["proto"]["protocol"]))
    assert recorded["linear"] == {(FROZEN_REF, "linear"), (SCRATCH, "finetune")}
    assert recorded["frozen_fusion"] == {(FROZEN_REF, "frozen_fusion"), (SCRATCH, "finetune")}
    assert recorded["ft20"] == {(TRAINABLE, "finetune")}
    # made-up results: P is 60 under every protocol, the frozen random 40, trained from scratch 70
    res = []
    for s in (0, 1, 2):
        for p in PROTOS:
            res.append({"row": "P", "protocol": p, "seed": s, M: 0.60 + 0.01 * s})
            if p == "ft20":
                res.append({"row": TRAINABLE, "protocol": p, "seed": s, M: 0.70})
            else:
                res += [{"row": FROZEN_REF, "protocol": p, "seed": s, M: 0.40},
                        {"row": SCRATCH, "protocol": p, "seed": s, M: 0.70}]  # fmt: skip
    comps = own_reference_comparisons(res, M, PROTOS)
    assert [(c["row"], c["reference"], c["protocol"]) for c in comps] == [
        ("P", FROZEN_REF, "linear"),
        ("P", FROZEN_REF, "frozen_fusion"),
        ("P", TRAINABLE, "ft20"),
    ]
    assert [c["mean"] for c in comps] == pytest.approx([21.0, 21.0, -9.0])


def test_budget_rows_expand_per_pretraining_budget_and_main_replicates_come_first(tmp_path):
    row = {"label": "S", "method": "skeletonclr", "budgets": {600: 5, 150: 3, 1500: 3}}
    exp = _exp(seeds=[0, 1, 2, 3, 4], references=True, protocols={"ft20": PROTOS["ft20"]}, rows=[row])
    rows = check_rows(exp)
    assert [(r[0], r[2]) for r in rows] == [
        ("S, 600 steps", [0, 1, 2, 3, 4]),
        ("S, 150 steps", [0, 1, 2]),
        ("S, 1500 steps", [0, 1, 2]),
    ]
    for label, method, _, keys in rows:
        cfg = pretrain_config(exp, method, keys, tmp_path, 0)
        assert cfg["train"]["steps"] == keys["budget"] and label == f"S, {keys['budget']} steps"
    jobs = plan(exp)
    pre = [(j["row"], j["seed"]) for j in jobs if j["kind"] and j["kind"].startswith("pretrain")]
    assert pre[:5] == [("S, 600 steps", s) for s in range(5)]  # every replicate of the main row first
    assert sorted(pre[5:]) == sorted((f"S, {b} steps", s) for b in (150, 1500) for s in range(3))
    assert {j["budget"] for j in jobs if j["row"].startswith("S,")} == {150, 600, 1500}
    with pytest.raises(SkelclError, match="budgets must map"):
        check_rows(_exp(rows=[{"label": "S", "method": "skeletonclr", "budgets": [150]}]))


def test_budget_figure_from_made_up_comparisons(tmp_path):
    from skelcl.study.report import budget_series, plot_budget

    res = []  # pretrained - reference = budget / 100 + seed (points) under ft20; n = 3 seeds
    for b in (150, 600, 1500):
        for s in (0, 1, 2):
            res.append({"row": f"S, {b} steps", "base": "S", "budget": b, "protocol": "ft20", "seed": s,
                        M: 0.5 + (b / 100 + s) / 100})  # fmt: skip
    res += [{"row": TRAINABLE, "protocol": "ft20", "seed": s, M: 0.5} for s in (0, 1, 2)]
    comps = own_reference_comparisons(res, M, {"ft20": PROTOS["ft20"]})
    series = budget_series(comps)
    half = 4.302653 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd([0, 1, 2]) / sqrt(3)
    got = series["ft20"]["S"]
    assert [p[0] for p in got] == [150, 600, 1500]
    for (_, m, lo, hi, n), want in zip(got, (2.5, 7.0, 16.0)):
        assert m == pytest.approx(want) and (lo, hi) == (pytest.approx(want - half, abs=1e-4),
                                                        pytest.approx(want + half, abs=1e-4))  # fmt: skip
        assert n == 3
    path = plot_budget(tmp_path / "budget.png", comps, M, ["ft20"])
    assert path.stat().st_size > 5_000


def test_budget_study_is_preregistered_on_a_fresh_data_seed(tmp_path, capsys):
    """study_budget: a data seed never used before, the 600-step rows on 5 seeds, the SkeletonCLR rows also
    at 150 and 1,500 steps on 3, each protocol with its own reference, BN calibrated alike, equal
    fine-tuning steps; --plan counts its runs without running any."""
    exp = config.resolve("study_budget")
    assert exp["data"]["seed"] not in (0, 4242, 777)
    assert {0, 4242, 777} <= set(exp["data"]["tuning_seeds"])
    rows = {label: seeds for label, _, seeds, _ in check_rows(exp)}
    for base in ("SkeletonCLR", "SkeletonCLR + snippet (aligned)", "RVTCLR", "RVTCLR + snippet (aligned)"):
        assert len(rows[f"{base}, 600 steps"]) == 5
    for base in ("SkeletonCLR", "SkeletonCLR + snippet (aligned)"):
        assert len(rows[f"{base}, 150 steps"]) >= 3 and len(rows[f"{base}, 1500 steps"]) >= 3
    kinds = {(p["protocol"], p["label_fraction"]) for p in exp["protocols"].values()}
    assert {("frozen_fusion", 1.0), ("finetune", 0.05), ("finetune", 0.2)} <= kinds
    assert exp["references"] and exp["finetune"]["finetune"]["bn_calibrate"] == "all"
    assert exp["finetune"]["train"]["steps"] > 0
    check_comparisons(exp)
    runs = [j for j in plan(exp) if j["kind"]]
    assert main(["experiment", "--config", "study_budget", "--out", str(tmp_path / "x"), "--plan"]) == 0
    assert f"{len(runs)} runs" in capsys.readouterr().out and not (tmp_path / "x").exists()


def test_experiment_jobs_runs_the_plan_in_worker_processes(tmp_path, capsys):
    """--jobs 2: every run of the plan once, each fine-tuning after its pretraining, the same table entries
    as one run at a time, each worker with half the CPU threads; --jobs 0 is refused."""
    serial, par = tmp_path / "serial", tmp_path / "par"
    assert main(["experiment", "--out", str(serial), "--quiet", *TINY]) == 0
    capsys.readouterr()
    assert main(["experiment", "--out", str(par), "--quiet", "--jobs", "2", *TINY]) == 0
    printed = capsys.readouterr().out
    names = re.findall(r"\[\d/8\] (\S+):", printed)
    assert sorted(names) == sorted(read_ledger(serial)) and len(set(names)) == 8
    for ft in [n for n in names if n.startswith("ft_") and not n.startswith("ft_random")]:
        pre = "pre_" + ft.split("_")[1] + "_s" + ft.rsplit("_s", 1)[1]
        assert names.index(pre) < names.index(ft)
    want = max(1, torch.get_num_threads() // 2)
    for n in names:
        assert f"num_threads: {want}" in (par / "runs" / n / "config.yaml").read_text()
    assert "2 worker processes" in (par / "progress.log").read_text()
    a = json.loads((serial / "results.json").read_text())["results"]
    b = json.loads((par / "results.json").read_text())["results"]
    assert [(r["row"], r["protocol"], r["seed"]) for r in a] == [
        (r["row"], r["protocol"], r["seed"]) for r in b
    ]
    assert main(["experiment", "--out", str(par), "--quiet", "--jobs", "2", *TINY]) == 0
    assert "[1/8]" not in capsys.readouterr().out  # all finished: nothing runs again
    # a run that fails in a worker: a one-line error naming it, the other runs' records kept
    ft = next(n for n in names if n.startswith("ft_a_"))
    (par / "runs" / ft / "metrics.json").unlink()
    lines = (par / "finished.jsonl").read_text().splitlines()
    (par / "finished.jsonl").write_text("".join(ln + "\n" for ln in lines if f'"{ft}"' not in ln))
    (par / "runs" / "pre_a_s0" / "last.pt").write_bytes(b"not a checkpoint")
    assert main(["experiment", "--out", str(par), "--quiet", "--jobs", "2", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "pre_a_s0" in err[-1] and "Traceback" not in "".join(err), err
    assert len(read_ledger(par)) == 7
    assert main(["experiment", "--out", str(tmp_path / "z"), "--jobs", "0", *TINY]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_a_stopped_pretraining_continues_from_its_checkpoint(tiny, tmp_path):
    """A job whose run folder holds last.pt of the same config (thread count aside) but no metrics.json
    continues from that checkpoint and ends where an uninterrupted run ends; another config starts over."""
    from helpers import PRE

    from skelcl.study.experiment import _resumable, _run_job
    from skelcl.train.checkpoint import load
    from skelcl.train.pretrain import run_pretrain

    cfg = config.resolve("pretrain_skeletonclr", [f"data.path={tiny}", *PRE, "train.epochs=2"])
    run_pretrain(cfg, tmp_path / "whole", quiet=True)
    part = tmp_path / "part"
    assert run_pretrain(cfg, part, stop_after_epochs=1, quiet=True)["stopped"]
    assert not _resumable(tmp_path / "whole", cfg)  # finished: the experiment skips it, never resumes it
    assert _resumable(part, {**cfg, "train": {**cfg["train"], "num_threads": 1}})
    lr = {**cfg, "train": {**cfg["train"], "lr": 0.01}}
    assert not _resumable(part, lr) and not _resumable(tmp_path / "none", cfg)
    _run_job({"pretrain": True, "cfg": cfg, "run": str(part), "quiet": True})
    log = (part / "log.txt").read_text()
    assert "stopped after epoch 1" in log and log.count("pretrain skeletonclr") == 2  # one start each
    a, b = load(tmp_path / "whole" / "last.pt"), load(part / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # a changed config: the folder is cleared and the run starts over
    shutil.copytree(tmp_path / "whole", tmp_path / "changed")
    (tmp_path / "changed" / "metrics.json").unlink()
    _run_job({"pretrain": True, "cfg": lr, "run": str(tmp_path / "changed"), "quiet": True})
    log = (tmp_path / "changed" / "log.txt").read_text()
    assert log.count("pretrain skeletonclr") == 1 and load(tmp_path / "changed" / "last.pt")["epoch"] == 2
