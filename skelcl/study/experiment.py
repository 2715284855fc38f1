"""`skelcl experiment`: pretraining methods compared under localization protocols, paired over seeds.

Config (skelcl/configs/experiment.yaml, study_snippet.yaml):

    data        sequences, bodies, seed: the synthetic data set the results come from; tuning_seeds: data
                seeds on which settings were chosen (data.seed must not be one of them)
    seeds       replicate seeds. Replicate s pretrains with seed s and fine-tunes with seed s (label subset,
                batch order, head init), so the pretraining seed and the label-subset seed both vary
                across replicates, and two rows at the same replicate form a pair.
    rows        {label, method, seeds: n (the first n replicate seeds; default all), pretrain: {pretrain.*
                overrides}, train: {train.* overrides of the pretraining, e.g. cpu_amp}, budgets: {steps:
                n, ...}}: one pretraining per replicate from skelcl/configs/pretrain_<method>.yaml + the
                experiment's `pretrain` section + the row's keys. With budgets, the row becomes one row per
                pretraining budget, "<label>, <steps> steps", pretrained for exactly that many optimizer
                steps (train.steps; each with its full LR and momentum schedules) on its first n seeds.
    references  true: each protocol's own random-init reference, every replicate: under linear and
                frozen_fusion "random init (frozen)", a random encoder kept frozen (its BatchNorm
                statistics as finetune.bn_calibrate says) with the protocol's head trained; under finetune
                "random init (trainable)", trained from random init with the protocol's head. Under a frozen
                protocol the row "scratch, all weights trained" shows beside it what a random encoder
                fine-tuned with the same head and labels reaches; it is no reference (a frozen encoder is
                never compared with a trained one).
    protocols   name -> finetune.* overrides ({protocol, label_fraction[, head]})
    comparisons [row, reference row] pairs: row minus reference, paired by replicate; every pretrained
                row is also compared with its protocol's own random-init reference
    model, pretrain {pretrain, train}, finetune {finetune, train}, metric

For each comparison and protocol the table gives the per-replicate differences d_i (in points), their
mean, its 95 % t-interval mean +- t_{0.975, n-1} sd / sqrt(n), and the verdict "helps" / "hurts" only
when the interval excludes 0 ("cannot tell" otherwise, and always with fewer than 2 pairs).

Every run has its own directory under OUT/runs/ (generated data in OUT/runs/data); a run whose
metrics.json holds final figures is not run again, so a stopped experiment continues where it stopped;
a run stopped part-way continues from its last checkpoint (a pretraining saves one every epoch) when its
saved config.yaml equals the one the experiment would give it (the thread count aside), and starts over
otherwise.
Every finished run is also appended to OUT/finished.jsonl (its name and the few figures the tables need,
a line each), which is small enough to commit: a study that spans several machines or sessions continues
from a checkout of OUT without its runs/ folder (a pretraining whose fine-tunings are still to come and
whose checkpoint is gone is run again first).
A progress line with an ETA (mean duration of the finished runs of each kind x the runs left) follows
every run.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np

from skelcl.errors import SkelclError
from skelcl.train import config as config_mod

TRAINABLE, FROZEN_REF = "random init (trainable)", "random init (frozen)"
SCRATCH = "scratch, all weights trained"  # under a frozen protocol: a random encoder trained with its head


# ---------------------------------------------------------------------------------------------------
# Statistics.


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df >= 1 (closed form, Abramowitz & Stegun 26.7.3-4):
    theta = atan(t / sqrt(df)); odd df: (2/pi) (theta + sin(theta) sum_k a_k cos^k(theta)), k = 1, 3, ..,
    df - 2, a_1 = 1, a_k = a_{k-2} (k-1)/k; even df: sin(theta) sum_k b_k cos^k(theta), k = 0, 2, ..,
    df - 2, b_0 = 1, b_k = b_{k-2} (k-1)/k."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:
        term = total = c
        for k in range(3, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        return 2 / math.pi * (theta + (s * total if df > 1 else 0.0))
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= c * c * (k - 1) / k
        total += term
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with integer df >= 1, by bisection on the closed-form
    CDF (t_{0.975, 4} = 2.776)."""
    if not 0.5 < p < 1 or int(df) != df or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and an integer df >= 1, got p={p}, df={df}")
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _t_two_sided(hi, int(df)) < target:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_two_sided(mid, int(df)) < target else (lo, mid)
    return 0.5 * (lo + hi)


def t_interval(d, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the level t-interval for the mean of d (n >= 2; NaN bounds for n < 2)."""
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    m = float(d.mean())
    if d.size < 2:
        return m, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return m, m - half, m + half


def verdict(low: float, high: float) -> str:
    """ "helps" when the interval lies above 0, "hurts" when below, else "cannot tell"."""
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "cannot tell"


def compare(results: list, metric: str, row: str, ref: str, protocol: str) -> dict | None:
    """The paired comparison row - ref under protocol (points): seeds both have, per-seed differences,
    mean, 95 % t-interval, verdict; None when no seed has both."""
    value = {(r["row"], r["protocol"], r["seed"]): 100 * r[metric] for r in results}
    seeds = sorted(s for (a, p, s) in value if a == row and p == protocol and (ref, protocol, s) in value)
    if not seeds:
        return None
    d = [value[(row, protocol, s)] - value[(ref, protocol, s)] for s in seeds]
    m, lo, hi = t_interval(d)
    return {"row": row, "reference": ref, "protocol": protocol, "seeds": seeds, "differences": d,
            "mean": m, "low": lo, "high": hi, "verdict": verdict(lo, hi)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Configs of the runs.


def _slug(label: str) -> str:
    """A run-name part from a row label: "RVTCLR + snippet (aligned)" -> "rvtclr-snippet-aligned"."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def check_rows(exp: dict) -> list:
    """The rows of an experiment config, checked: (label, method, seeds, {"pretrain": pretrain.* overrides,
    "train": train.* overrides of the pretraining})."""
    rows, seen = [], set()
    for i, r in enumerate(exp.get("rows") or []):
        where = f"experiment rows[{i}]"
        if not isinstance(r, dict) or not r.get("label") or not r.get("method"):
            raise SkelclError(f"{where}: a row is a mapping with a label and a method, got {r!r}")
        unknown = set(r) - {"label", "method", "seeds", "pretrain", "train", "budgets"}
        if unknown:
            known = "label, method, seeds, pretrain, train, budgets"
            raise SkelclError(f"{where}: unknown keys {sorted(unknown)} ({known})")
        label = str(r["label"])
        keys = {}
        for part in ("pretrain", "train"):
            keys[part] = r.get(part) or {}
            if not isinstance(keys[part], dict):
                raise SkelclError(f"{where}: {part} must be a mapping of {part}.* keys, got {keys[part]!r}")
        budgets = r.get("budgets")
        if budgets is not None and (not isinstance(budgets, dict) or not budgets):
            raise SkelclError(f"{where}: budgets must map pretraining steps to seed counts, got {budgets!r}")
        cells = [(label, r.get("seeds", len(exp["seeds"])), None)]
        if budgets:
            cells = [(f"{label}, {b} steps", n, b) for b, n in budgets.items()]
        for name, n, budget in cells:
            taken = {_slug(x) for x in seen}
            if name in seen or name in (TRAINABLE, FROZEN_REF, SCRATCH) or _slug(name) in taken:
                raise SkelclError(f"{where}: label {name!r} is used twice (or is a reference row's name)")
            seen.add(name)
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(exp["seeds"]):
                raise SkelclError(f"{where}: seeds must be a count in 1..{len(exp['seeds'])}, got {n!r}")
            if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
                raise SkelclError(f"{where}: a budget is a number of optimizer steps >= 1, got {budget!r}")
            cell = dict(keys, base=label, budget=budget)
            if budget is not None:
                cell["train"] = {**keys["train"], "steps": budget}
            rows.append((name, str(r["method"]), list(exp["seeds"][:n]), cell))
    if not rows and not exp.get("references"):
        raise SkelclError("experiment: no rows and no references: nothing to run")
    return rows


def check_comparisons(exp: dict) -> list:
    """The comparisons of an experiment config as (row, reference) pairs of known row names."""
    names = {label for label, *_ in check_rows(exp)}
    if exp.get("references"):
        names |= {TRAINABLE, FROZEN_REF, SCRATCH}
    pairs = []
    for i, p in enumerate(exp.get("comparisons") or []):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise SkelclError(f"experiment comparisons[{i}]: expected [row, reference], got {p!r}")
        for name in p:
            if name not in names:
                raise SkelclError(f"experiment comparisons[{i}]: no row named {name!r} "
                                  f"(rows: {', '.join(sorted(names))})")  # fmt: skip
        pairs.append((str(p[0]), str(p[1])))
    return pairs


def pretrain_config(exp: dict, method: str, row_keys: dict, data_path, seed: int) -> dict:
    """pretrain_<method>.yaml + the experiment's pretrain section + the row's pretrain.* and train.* keys
    (row_keys as check_rows gives them: {"pretrain": {...}, "train": {...}}, either part optional)."""
    cfg = config_mod.load_config(f"pretrain_{method}")
    cfg = config_mod.merge(cfg, exp["pretrain"], "experiment pretrain")
    row = {"pretrain": {**row_keys.get("pretrain", {}), "method": method},
           "train": dict(row_keys.get("train", {}))}  # fmt: skip
    cfg = config_mod.merge(cfg, row, f"row ({method}) pretrain")
    cfg["model"] = dict(exp["model"])
    cfg["data"]["path"] = str(data_path)
    cfg["data"]["bodies"] = int(exp["data"]["bodies"])
    cfg["train"]["seed"] = int(seed)
    return config_mod.validate(cfg, "experiment pretraining config")


def finetune_config(exp: dict, proto: dict, pretrained, data_path, seed: int) -> dict:
    cfg = config_mod.merge(config_mod.load_config("finetune"), exp["finetune"], "experiment finetune")
    cfg = config_mod.merge(cfg, {"finetune": dict(proto)}, "experiment protocol")
    cfg["finetune"]["pretrained"] = str(pretrained) if pretrained else None
    cfg["model"] = dict(exp["model"])
    cfg["data"]["path"] = str(data_path)
    cfg["data"]["bodies"] = int(exp["data"]["bodies"])
    cfg["train"]["seed"] = int(seed)
    return config_mod.validate(cfg, "experiment fine-tuning config")


def own_reference(proto: dict) -> str:
    """The reference row of a protocol: FROZEN_REF under linear / frozen_fusion, TRAINABLE under finetune."""
    from skelcl.train.finetune import FROZEN

    return FROZEN_REF if proto["protocol"] in FROZEN else TRAINABLE


def reference_rows(proto: dict) -> dict:
    """{row name recorded under the protocol: finetune overrides of its random-init run}: the protocol's
    own reference, and under a frozen protocol also SCRATCH (the trainable run, shown as its own row)."""
    refs = reference_protocols(proto)
    own = own_reference(proto)
    rows = {own: refs[own]}
    if own == FROZEN_REF:
        rows[SCRATCH] = refs[TRAINABLE]
    return rows


def reference_protocols(proto: dict) -> dict:
    """{TRAINABLE: finetune overrides, FROZEN_REF: ...}: a random encoder trained or frozen under the
    head and label fraction of `proto` (see the module docstring)."""
    from skelcl.train.finetune import protocol_head

    head = protocol_head({"head": None, **proto})
    frac = proto.get("label_fraction", 1.0)
    return {
        TRAINABLE: {"protocol": "finetune", "label_fraction": frac, "head": head},
        FROZEN_REF: {"protocol": "linear" if head == "simple" else "frozen_fusion", "label_fraction": frac},
    }


def _proto_tag(proto: dict) -> str:
    """A run-name part that identifies a fine-tuning cell (protocol, head, label fraction)."""
    from skelcl.train.finetune import protocol_head

    head = protocol_head({"head": None, **proto})
    return f"{proto['protocol']}-{head}-l{float(proto.get('label_fraction', 1.0)):g}"


# ---------------------------------------------------------------------------------------------------
# Running.


def _done(run: Path):
    m = run / "metrics.json"
    if m.is_file():
        data = json.loads(m.read_text())
        if data.get("final"):
            return data
    return None


LEDGER = "finished.jsonl"


def read_ledger(out: Path) -> dict:
    """name -> entry of OUT/finished.jsonl. A line cut short by a kill (the last one) is ignored; any
    other bad line is an error naming the file and line."""
    path, entries = Path(out) / LEDGER, {}
    if not path.is_file():
        return entries
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entries[entry["name"]] = entry
        except (ValueError, KeyError, TypeError) as err:
            if i == len(lines):
                continue  # the write of the last line was interrupted: that run is simply not recorded
            raise SkelclError(f"{path}:{i}: not a finished-run record ({err})") from None
    return entries


def _ledger_entry(name: str, m: dict, chance: float | None = None) -> dict:
    """What the tables read of a run's metrics: final, steps, labeled_sequences and, for a pretraining,
    the first epoch's global loss and the chance level of its global InfoNCE."""
    keep = {k: m.get(k) for k in ("final", "steps", "labeled_sequences") if m.get(k) is not None}
    hist = m.get("history") or []
    if hist:
        keep["history"] = [{"loss_global": hist[0].get("loss_global")}]
    entry = {"name": name, "metrics": keep}
    if chance is not None:
        entry["chance_loss_global"] = chance
    return entry


def _append_ledger(out: Path, entry: dict) -> None:
    """Append one line; a last line cut short by a kill is cut off first, so it never ends up mid-file."""
    path = Path(out) / LEDGER
    if path.is_file():
        text = path.read_bytes()
        if text and not text.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(text.rfind(b"\n") + 1)
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


def _fresh(run: Path) -> None:
    """Remove a partial run (no final metrics) so it starts over."""
    import shutil

    if run.exists():
        shutil.rmtree(run)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Counts finished runs and prints "[k/N] run: s; elapsed; ETA" after each; the ETA sums, over the
    runs left, the mean duration of the runs of the same kind done in this call (of any kind while none
    of that kind is done), divided by the number of worker processes."""

    def __init__(self, jobs: list, out: Path, quiet: bool, workers: int = 1):
        self.workers = max(1, int(workers))
        self.kinds = {name: kind for name, kind in jobs}
        self.left = dict(self.kinds)
        self.total = len(jobs)
        self.seconds: dict[str, list] = {}
        self.t0 = time.time()
        self.log = out / "progress.log"
        self.quiet = quiet

    def skip(self, name: str) -> None:
        self.left.pop(name, None)

    def done(self, name: str, seconds: float) -> None:
        kind = self.left.pop(name, self.kinds.get(name, "?"))
        self.seconds.setdefault(kind, []).append(seconds)
        allv = [x for v in self.seconds.values() for x in v]
        eta = sum(np.mean(self.seconds.get(k) or allv) for k in self.left.values()) / self.workers
        k = self.total - len(self.left)
        line = (f"[{k}/{self.total}] {name}: {seconds:.0f} s; elapsed {_clock(time.time() - self.t0)}, "
                f"ETA {_clock(eta)} ({len(self.left)} runs left)")  # fmt: skip
        print(line, flush=True)
        with open(self.log, "a") as f:
            f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}\n")


def plan(exp: dict) -> list:
    """Every run of the experiment in execution order: dicts {name, kind, ...}. Two passes, so a study
    stopped early holds whole replicates of its main rows: first the rows that run on every seed and the
    random-init references, one replicate after the other (pretraining, then its fine-tunings; then the
    references); then the rows with fewer seeds, replicate by replicate."""
    rows, protocols = check_rows(exp), exp["protocols"]
    full = [r for r in rows if len(r[2]) == len(exp["seeds"])]
    passes = [(full, True), ([r for r in rows if r not in full], False)]
    jobs, seen = [], set()
    for (pass_rows, with_refs), seed in ((p, s) for p in passes for s in exp["seeds"]):
        for label, method, seeds, pre in pass_rows:
            if seed not in seeds:
                continue
            pre_name = f"pre_{_slug(label)}_s{seed}"
            jobs.append({"name": pre_name, "kind": f"pretrain {method}", "method": method, "pretrain": pre,
                         "seed": seed, "row": label, "base": pre.get("base", label),
                         "budget": pre.get("budget")})  # fmt: skip
            for pname, proto in protocols.items():
                jobs.append({"name": f"ft_{_slug(label)}_{_proto_tag(proto)}_s{seed}",
                             "kind": f"finetune {_proto_tag(proto)}", "proto": proto, "pretrained": pre_name,
                             "seed": seed, "row": label, "protocol": pname, "base": pre.get("base", label),
                             "budget": pre.get("budget")})  # fmt: skip
        if with_refs and exp.get("references"):
            for pname, proto in protocols.items():
                for ref, rproto in reference_rows(proto).items():
                    name = f"ft_random_{_proto_tag(rproto)}_s{seed}"
                    job = {"name": name, "kind": f"finetune random {_proto_tag(rproto)}", "proto": rproto,
                           "pretrained": None, "seed": seed, "row": ref, "protocol": pname}  # fmt: skip
                    if name in seen:  # the same run serves several protocols: record it, run it once
                        job["kind"] = None
                    seen.add(name)
                    jobs.append(job)
    return jobs


def plan_lines(exp: dict) -> list:
    """What `skelcl experiment --plan` prints: the runs of the plan by kind (pretrainings with their
    optimizer steps, fine-tunings), without running anything."""
    runs = [j for j in plan(exp) if j["kind"]]
    pre = [j for j in runs if j["kind"].startswith("pretrain")]
    default = int(exp["pretrain"]["train"].get("steps") or 0)
    kinds: dict = {}
    for j in pre:
        steps = j["budget"] or default
        key = (j["kind"], steps)
        kinds[key] = kinds.get(key, 0) + 1
    lines = [f"{len(runs)} runs: {len(pre)} pretrainings, {len(runs) - len(pre)} fine-tunings"]
    for (kind, steps), n in kinds.items():
        lines.append(f"  {n} x {kind}" + (f", {steps} steps" if steps else ", train.epochs epochs"))
    if all(j["budget"] or default for j in pre):
        lines.append(f"  pretraining steps in all: {sum(j['budget'] or default for j in pre)}")
    ft: dict = {}
    for j in runs:
        if not j["kind"].startswith("pretrain"):
            ft[j["kind"]] = ft.get(j["kind"], 0) + 1
    lines += [f"  {n} x {k}" for k, n in ft.items()]
    return lines


def _worker_init(threads: int) -> None:
    """A worker process of `--jobs N`: torch and numba each get `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass


def _run_job(spec: dict) -> dict:
    """One pretraining or fine-tuning (spec: pretrain, cfg, run, quiet) in a fresh run folder; its metrics."""
    from skelcl.train.finetune import run_finetune
    from skelcl.train.pretrain import run_pretrain

    run = Path(spec["run"])
    resume = _resumable(run, spec["cfg"])
    if not resume:
        _fresh(run)
    fn = run_pretrain if spec["pretrain"] else run_finetune
    return fn(spec["cfg"], run, quiet=spec["quiet"], resume=resume)


def _resumable(run: Path, cfg: dict) -> bool:
    """True when `run` holds an unfinished run of this config (last.pt, no metrics.json; the thread count
    may differ, as between --jobs settings): a stopped study continues it from its last checkpoint instead
    of starting it over."""
    import yaml

    from skelcl.train.preempt import config_diff

    if not (run / "last.pt").is_file() or (run / "metrics.json").is_file():
        return False
    try:
        saved = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        return False
    saved["train"]["num_threads"] = cfg["train"].get("num_threads")
    return not config_diff(saved, cfg)


class _Inline:
    """What multiprocessing's AsyncResult offers, for a job run in this process (--jobs 1)."""

    def __init__(self, fn, spec):
        self.value, self.error = None, None
        try:
            self.value = fn(spec)
        except Exception as err:  # re-raised by get(), as a pool's result would
            self.error = err

    def ready(self) -> bool:
        return True

    def get(self):
        if self.error is not None:
            raise self.error
        return self.value


def _run_pending(jobs: list, runs: Path, ledger: dict, exp: dict, data, quiet: bool, workers: int,
                 progress: Progress, record) -> None:  # fmt: skip
    """Run every job of the plan that has no final metrics (in runs/) and no ledger line, `workers` at a
    time in plan order; a fine-tuning starts once its pretraining's checkpoint is there (a pretraining
    recorded in the ledger whose checkpoint is gone is run again first, without a progress line).
    record(job, metrics) is called in this process as each job finishes. With workers > 1 each job runs
    in a fresh spawned process with cpu_threads // workers torch and numba threads. A failed job stops
    the launching; the running ones finish and are recorded, then the first error is raised."""
    by_name = {j["name"]: j for j in jobs}
    finished = {j["name"] for j in jobs if j["name"] in ledger or _done(runs / j["name"]) is not None}
    pending = [j for j in jobs if j["kind"] and j["name"] not in finished]
    for j in list(pending):  # pretrainings to run again for their pending fine-tunings
        p = j.get("pretrained")
        if p and p in finished and not (runs / p / "last.pt").is_file():
            finished.discard(p)
            pending.insert(pending.index(j), {**by_name[p], "rerun": True})
    if not pending:
        return
    pool, threads = None, 0
    if workers > 1:
        import multiprocessing
        import os

        import torch

        threads = max(1, torch.get_num_threads() // workers)
        pool = multiprocessing.get_context("spawn").Pool(
            workers, initializer=_worker_init, initargs=(threads,), maxtasksperchild=1
        )
        with open(progress.log, "a") as f:
            f.write(f"[{time.strftime('%H:%M:%S')}] {workers} worker processes x {threads} CPU threads "
                    f"(pid {os.getpid()})\n")  # fmt: skip
    running: dict = {}  # name -> (job, result, t0)
    error = None
    try:
        while pending or running:
            for j in list(pending):
                if error is not None or len(running) >= max(1, workers):
                    break
                pre = j.get("pretrained")
                if pre and pre not in finished:
                    if pre not in running and not any(p["name"] == pre for p in pending):
                        raise SkelclError(f"experiment: {runs / pre} has no finished pretraining")
                    continue
                pending.remove(j)
                if j["kind"].startswith("pretrain"):
                    cfg = pretrain_config(exp, j["method"], j["pretrain"], data, j["seed"])
                else:
                    cfg = finetune_config(exp, j["proto"], runs / pre if pre else None, data, j["seed"])
                if threads:
                    cfg["train"]["num_threads"] = threads
                spec = {"pretrain": j["kind"].startswith("pretrain"), "cfg": cfg,
                        "run": str(runs / j["name"]), "quiet": quiet or pool is not None}  # fmt: skip
                t0 = time.time()
                res = _Inline(_run_job, spec) if pool is None else pool.apply_async(_run_job, (spec,))
                running[j["name"]] = (j, res, t0)
            for name, (j, res, t0) in list(running.items()):
                if not res.ready():
                    continue
                del running[name]
                try:
                    m = res.get()
                except Exception as err:
                    error = error or err
                    continue
                finished.add(name)
                if not j.get("rerun"):
                    progress.done(name, time.time() - t0)
                    record(j, m)
            if error is not None and not running:
                raise error
            if running and pool is not None:
                time.sleep(0.5)
    finally:
        if pool is not None:
            pool.terminate()  # nothing is left running when this returns (or on Ctrl-C / an error)
            pool.join()


def run_experiment(
    out, data=None, config_name="experiment", overrides=(), quiet=False, table_only=False, workers=1
) -> str:
    """Run (or, with table_only, only collect) every run of the plan, `workers` runs at a time; returns
    the markdown table."""
    from skelcl.data import open_cache
    from skelcl.data.synthetic import generate_cache
    from skelcl.train.run import announce, show_bars

    exp = config_mod.resolve(config_name, overrides)
    d = exp["data"]
    if d["seed"] in (d.get("tuning_seeds") or []) and data is None:
        raise SkelclError(f"experiment: data.seed {d['seed']} is one of data.tuning_seeds (settings were "
                          "chosen on it); results must come from another data seed")  # fmt: skip
    if int(workers) < 1:
        raise SkelclError(f"experiment: --jobs must be 1 or more, got {workers}")
    jobs = plan(exp)
    check_comparisons(exp)
    out = Path(out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if not table_only:
        (out / "config.yaml").write_text(config_mod.dump(exp))
        announce(out / "progress.log", "auto", {"data.seed": d["seed"], "seeds": exp["seeds"]})
    if data is None:
        data = runs / "data"
        if not (data / "meta.json").exists() and not table_only:
            _fresh(data)
            generate_cache(data, int(d["sequences"]), int(d["seed"]), progress=not quiet and show_bars())
    if not table_only:
        open_cache(data)  # fail early on a bad --data
    ledger = read_ledger(out)

    def collect() -> tuple[list, list]:
        """The table's entries of every finished run, in plan order (from runs/ or the ledger); a finished
        run missing from the ledger gets its line."""
        results, pre_stats = [], []
        for job in jobs:
            run = runs / job["name"]
            m = _done(run) or (ledger.get(job["name"]) or {}).get("metrics")
            if m is None:
                continue
            if job["kind"] and job["kind"].startswith("pretrain"):
                chance = (ledger.get(job["name"]) or {}).get("chance_loss_global")
                rec = _pre_record(m, job, run, chance)
                pre_stats.append(rec)
                entry = _ledger_entry(job["name"], m, rec.get("chance_loss_global"))
            else:
                results.append(_result(m, job["row"], job["protocol"], job["seed"]))
                if job.get("budget") is not None:
                    results[-1].update(base=job["base"], budget=job["budget"])
                entry = _ledger_entry(job["name"], m)
            if job["kind"] and job["name"] not in ledger and not table_only:
                _append_ledger(out, entry)
                ledger[job["name"]] = entry
        return results, pre_stats

    if not table_only:
        collect()  # runs finished before the ledger existed get their lines first
        progress = Progress([(j["name"], j["kind"]) for j in jobs if j["kind"]], out, quiet, workers)
        for j in jobs:
            if j["kind"] and (j["name"] in ledger or _done(runs / j["name"]) is not None):
                progress.skip(j["name"])
        seed_left = {}
        for j in jobs:
            if j["kind"] and j["name"] not in ledger:
                seed_left[j["seed"]] = seed_left.get(j["seed"], 0) + 1

        def record(job: dict, m: dict) -> None:
            """A job finished: its ledger line; the tables again once its replicate seed has no run left."""
            seed_left[job["seed"]] -= 1
            results, pre_stats = collect()
            if seed_left[job["seed"]] == 0 and results:
                _write(out, exp, results, pre_stats, data)

        _run_pending(jobs, runs, ledger, exp, data, quiet, int(workers), progress, record)
    results, pre_stats = collect()
    return _write(out, exp, results, pre_stats, data)


def _pre_record(m: dict, job: dict, run: Path, chance: float | None = None) -> dict:
    """Pretraining figures of one run: last-epoch losses and statistics, the first epoch's global loss,
    and the chance level ln(number of negatives + 1) of the global InfoNCE (read from the run's last.pt
    when `chance` is not given)."""
    hist = m.get("history") or []
    rec = {"row": job["row"], "seed": job["seed"], **(m.get("final") or {})}
    if job.get("budget") is not None:
        rec.update(base=job["base"], budget=job["budget"])
    if hist:
        rec["first_loss_global"] = hist[0].get("loss_global")
    if chance is None and (run / "last.pt").is_file():
        from skelcl.train import checkpoint

        st = checkpoint.load(run / "last.pt")
        q = st["model"].get("queue.data")
        bs = int(st["config"]["train"]["batch_size"])
        if q is not None:  # 1 positive + (bs - 1) batch keys + the queued keys
            chance = math.log(q.shape[0] + bs)
    if chance is not None:
        rec["chance_loss_global"] = chance
    return rec


def _result(m: dict, row: str, protocol: str, seed: int) -> dict:
    """One table entry: the run's test figures (eval protocol under "eval_protocol"), its optimizer steps
    and labeled sequences, + row, protocol, seed."""
    final = m["final"]
    out = {k: v for k, v in final.items() if k not in ("per_class", "protocol")}
    out.update(eval_protocol=final.get("protocol"), row=row, protocol=protocol, seed=seed,
               steps=m.get("steps"), labeled_sequences=m.get("labeled_sequences"))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# Tables.


def _cell(v) -> str:
    v = np.asarray(v, dtype=float)
    if v.size == 0:
        return "-"
    if v.size == 1:
        return f"{v[0]:.1f} (n=1)"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f} (n={v.size})"


def summarize(results: list, metric: str, protocols) -> str:
    """Markdown: mean ± sample sd over seeds of metric (in %) per row and protocol."""
    rows = {}
    for r in results:
        rows.setdefault(r["row"], {}).setdefault(r["protocol"], []).append(100 * r[metric])
    lines = [f"| row ({metric}, %, mean ± sd over seeds) | " + " | ".join(protocols) + " |",
             "|---|" + "---:|" * len(protocols)]  # fmt: skip
    for name, cells in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(cells.get(p, [])) for p in protocols) + " |")
    return "\n".join(lines)


def comparisons(results: list, metric: str, protocols, pairs) -> list:
    """compare() for each (row, reference) pair and protocol that has data."""
    out = []
    for row, ref in pairs:
        for p in protocols:
            c = compare(results, metric, row, ref, p)
            if c is not None:
                out.append(c)
    return out


def own_reference_comparisons(results: list, metric: str, protocols: dict) -> list:
    """compare() of every pretrained row with its protocol's own reference (own_reference), in the order
    rows first appear; a row with a pretraining budget carries it ("base", "budget")."""
    refs = (TRAINABLE, FROZEN_REF, SCRATCH)
    rows = [r for r in dict.fromkeys(x["row"] for x in results) if r not in refs]
    budget = {x["row"]: (x.get("base"), x.get("budget")) for x in results if x.get("budget") is not None}
    out = []
    for row in rows:
        for pname, proto in protocols.items():
            c = compare(results, metric, row, own_reference(proto), pname)
            if c is not None:
                if row in budget:
                    c.update(base=budget[row][0], budget=budget[row][1])
                out.append(c)
    return out


def _bn_line(exp: dict) -> str:
    """Which frozen encoders had their BatchNorm statistics calibrated (finetune.bn_calibrate)."""
    mode = (exp["finetune"].get("finetune") or {}).get("bn_calibrate", "random")
    what = {
        "all": "random and pretrained alike",
        "random": "the random one only (a pretrained encoder keeps its pretraining statistics)",
        "none": "neither (each keeps the statistics it has)",
    }[mode]
    return (f"BatchNorm statistics of frozen encoders (finetune.bn_calibrate={mode}): calibrated on the "
            f"training sequences for {what}.")  # fmt: skip


def _num(x: float) -> str:
    return "-" if x != x else f"{x:+.1f}"


def comparison_table(comps: list, title: str) -> str:
    cols = ["protocol", "per-seed differences (seed: points)", "mean", "95 % t-interval", "verdict"]
    lines = [f"| {title} | " + " | ".join(cols) + " |", "|---|---|---|---:|---:|---|"]
    for c in comps:
        per = ", ".join(f"{s}: {v:+.1f}" for s, v in zip(c["seeds"], c["differences"]))
        ci = f"[{_num(c['low'])}, {_num(c['high'])}]" if c["low"] == c["low"] else f"- (n={len(c['seeds'])})"
        lines.append(f"| {c['row']} − {c['reference']} | {c['protocol']} | {per} | {_num(c['mean'])} | "
                     f"{ci} | {c['verdict']} |")  # fmt: skip
    return "\n".join(lines)


def _steps_line(results: list, protocols) -> str:
    parts = []
    for p in protocols:
        st = sorted({r.get("steps") for r in results if r["protocol"] == p and r.get("steps") is not None})
        lab = sorted({r.get("labeled_sequences") for r in results if r["protocol"] == p} - {None})
        if st:
            st, lab = "/".join(map(str, st)), "/".join(map(str, lab))
            parts.append(f"{p}: {st} optimizer steps on {lab} labeled sequences")
    return "Fine-tuning budget per run: " + "; ".join(parts) + "." if parts else ""


def _write(out: Path, exp: dict, results: list, pre_stats: list, data) -> str:
    metric, protocols = exp["metric"], list(exp["protocols"])
    explicit = comparisons(results, metric, protocols, check_comparisons(exp))
    vs_random = own_reference_comparisons(results, metric, exp["protocols"])
    d = exp["data"]
    given = Path(data) != out / "runs" / "data"
    where = f"the cache {data}" if given else f"{d['sequences']} synthetic sequences, data seed {d['seed']}"
    if d.get("tuning_seeds") and not given:
        where += f" (settings were chosen on data seeds {d['tuning_seeds']}, not on this one)"
    head = [
        f"Data: {where}. "
        f"Metric: {metric} on the test part, in %. Replicate seed s = pretraining seed s and label-subset / "
        "fine-tuning seed s; differences are paired by replicate. Verdicts: \"helps\" / \"hurts\" only when "
        "the 95 % t-interval of the mean paired difference excludes 0, otherwise \"cannot tell\".",
        "",
        _steps_line(results, protocols),
        "",
        _bn_line(exp),
        "",
    ]  # fmt: skip
    parts = head + [summarize(results, metric, protocols), ""]
    if explicit:
        parts += ["Pre-registered comparisons (row minus reference, points):", "",
                  comparison_table(explicit, "comparison"), ""]  # fmt: skip
    if vs_random:
        parts += ["Against random init under the same protocol (points): a frozen random encoder under "
                  f"linear / frozen_fusion, trained from random init under finetune. \"{SCRATCH}\" (a "
                  "random encoder fine-tuned with the frozen protocol's head and labels) is shown in the "
                  "table above as its own row, not as a reference.", "",
                  comparison_table(vs_random, "comparison"), ""]  # fmt: skip
    parts += [summarize(results, "mAP@0.5", protocols), ""]
    if pre_stats:
        shown = ("loss", "snippet_", "first_loss", "chance_loss", "motion_", "queue_own_", "squeue_own_",
                 "probe_frame", "probe_avg")  # fmt: skip
        keys = [k for k in dict.fromkeys(k for s in pre_stats for k in s) if k.startswith(shown)]
        lines = ["| pretraining | seed | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
        for s in pre_stats:
            vals = [f"{s[k]:.3f}" if isinstance(s.get(k), (int, float)) else "-" for k in keys]
            lines.append(f"| {s['row']} | {s['seed']} | " + " | ".join(vals) + " |")
        parts += ["Pretraining, last epoch (first_loss_global: first epoch; chance_loss_global: "
                  "ln(queue + batch), the global InfoNCE of an encoder that tells nothing apart):", "",
                  *lines]  # fmt: skip
    table = "\n".join(parts)
    (out / "table.md").write_text(table + "\n")
    if results:
        from skelcl.study.report import plot_experiment

        plot_experiment(out / "table.png", results, metric, protocols, explicit + vs_random)
        if any(c.get("budget") is not None for c in vs_random):
            from skelcl.study.report import plot_budget

            plot_budget(out / "budget.png", vs_random, metric, protocols)
    (out / "results.json").write_text(json.dumps(
        {"results": results, "comparisons": explicit, "vs_random_init": vs_random, "pretrain": pre_stats},
        indent=2))  # fmt: skip
    return table
