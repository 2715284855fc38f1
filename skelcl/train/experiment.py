"""`skelcl experiment`: the paper's table shape on the synthetic benchmark.

Cells: {SkeletonCLR, AimCLR-style} x {without, with snippet loss} pretraining (`snippet` entries: false,
true, a matching rule "aligned" / "cosine", or a mapping {label: NAME, <pretrain.* keys>} for any other
snippet-loss variant, e.g. {label: "aligned, all negatives", match: aligned, exclude_same_video: false}),
each evaluated under the
protocols of the config (linear, finetune, 20 % labels), plus random init (every protocol but linear), for
each seed; the table shows mean +- sample standard deviation over seeds of the chosen metric (in %).
Every run has its own directory under OUT/runs/; a run whose metrics.json already holds final figures is
not run again, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from skelcl.errors import SkelclError
from skelcl.train import config as config_mod

NAMES = {"skeletonclr": "SkeletonCLR", "aimclr": "AimCLR-style"}


def _done(run: Path):
    m = run / "metrics.json"
    if m.is_file():
        data = json.loads(m.read_text())
        if data.get("final"):
            return data
    return None


def _fresh(run: Path) -> None:
    """Remove a partial run (no final metrics) so it starts over."""
    import shutil

    if run.exists():
        shutil.rmtree(run)


def variant(snippet) -> tuple[str, dict, str]:
    """A `snippet` entry -> (label or "", pretrain overrides, run-name tag)."""
    if snippet is False:
        return "", {"snippet": False}, "nosnip"
    if snippet is True:
        return "", {"snippet": True}, "snip"
    if isinstance(snippet, str):
        return snippet, {"snippet": True, "match": snippet}, f"snip{snippet}"
    if isinstance(snippet, dict) and snippet.get("label"):
        cell = {k: v for k, v in snippet.items() if k != "label"}
        label = str(snippet["label"])
        tag = "snip" + "".join(c if c.isalnum() else "-" for c in label.lower())
        return label, {"snippet": True, **cell}, tag
    raise SkelclError(f"experiment: snippet entries are false, true, a match name or a mapping with a "
                      f"label, got {snippet!r}")  # fmt: skip


def row_name(method: str | None, snippet) -> str:
    """snippet: an entry of the config's `snippet` list (see variant)."""
    if method is None:
        return "random init"
    label, cell, _ = variant(snippet)
    if not cell["snippet"]:
        return NAMES[method]
    return NAMES[method] + " + snippet" + (f" ({label})" if label else "")


def _cell(v: np.ndarray, difference: bool = False) -> str:
    """mean ± sample sd of v with (n=...) or, for differences, signed and (k/n ahead); "-" when empty."""
    f = "+.1f" if difference else ".1f"
    if v.size == 0:
        return "-"
    if v.size == 1:
        return f"{v[0]:{f}} (n=1)"
    tail = f"({int((v > 0).sum())}/{v.size} ahead)" if difference else f"(n={v.size})"
    return f"{v.mean():{f}} ± {v.std(ddof=1):.1f} {tail}"


def summarize(results: list, metric: str, protocols) -> str:
    rows = {}
    for r in results:
        rows.setdefault(r["row"], {}).setdefault(r["protocol"], []).append(r[metric])
    lines = [f"| pretraining ({metric}, %) | " + " | ".join(protocols) + " |",
             "|---|" + "---:|" * len(protocols)]  # fmt: skip
    for name, cells in rows.items():
        out = [_cell(np.array(cells.get(p, []), dtype=float) * 100) for p in protocols]
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def run_experiment(
    out, data=None, config_name="experiment", overrides=(), quiet=False, table_only=False
) -> str:
    """Run (or, with table_only, only collect) every cell; returns the markdown table."""
    from skelcl.data import open_cache
    from skelcl.data.synthetic import generate_cache
    from skelcl.train.demo import demo_configs
    from skelcl.train.finetune import run_finetune
    from skelcl.train.pretrain import run_pretrain

    exp = config_mod.resolve(config_name, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not table_only:
        (out / "config.yaml").write_text(config_mod.dump(exp))
    if data is None:
        data = out / "data"
        if not (data / "meta.json").exists() and not data.exists():
            generate_cache(data, int(exp["data"]["sequences"]), int(exp["data"]["seed"]), progress=not quiet)
    open_cache(data)
    base = {
        "data": exp["data"],
        "model": exp["model"],
        "pretrain": exp["pretrain"],
        "finetune": exp["finetune"],
    }
    pre0, ft0, _ = demo_configs(base, data)
    protocols = exp["protocols"]
    results, pre_stats = [], []
    runs = out / "runs"

    def finetune(name, pretrained, proto, seed):
        run = runs / name
        m = _done(run)
        if m is None and table_only:
            return None
        if m is None:
            _fresh(run)
            cfg = config_mod.merge(ft0, {"finetune": dict(protocols[proto]), "train": {"seed": seed}})
            cfg["finetune"]["pretrained"] = str(pretrained) if pretrained else None
            m = run_finetune(cfg, run, quiet=quiet)
        return m["final"]

    for seed in exp["seeds"]:
        for method in exp["methods"]:
            for snippet in exp["snippet"]:
                _, cell, kind = variant(snippet)
                tag = f"{method}_{kind}_s{seed}"
                pre_run = runs / f"pre_{tag}"
                m = _done(pre_run)
                if m is None and table_only:
                    continue
                if m is None:
                    _fresh(pre_run)
                    cell = {**cell, "method": method, "recipe": method}
                    cfg = config_mod.merge(pre0, {"pretrain": cell, "train": {"seed": seed}})
                    m = run_pretrain(cfg, pre_run, quiet=quiet)
                pre_stats.append({"row": row_name(method, snippet), "seed": seed, **m["final"]})
                for proto in protocols:
                    f = finetune(f"ft_{tag}_{proto}", pre_run, proto, seed)
                    if f is not None:
                        results.append(_result(f, row_name(method, snippet), proto, seed))
        for proto in protocols:
            if protocols[proto].get("protocol") == "linear":
                continue
            f = finetune(f"ft_scratch_s{seed}_{proto}", None, proto, seed)
            if f is not None:
                results.append(_result(f, "random init", proto, seed))
        _write(out, exp, results, pre_stats, list(protocols))
    return _write(out, exp, results, pre_stats, list(protocols))


def _result(final: dict, row: str, protocol: str, seed: int) -> dict:
    """One table entry: the run's figures (eval protocol under "eval_protocol") + row, protocol, seed."""
    out = {k: v for k, v in final.items() if k not in ("per_class", "protocol")}
    out.update(eval_protocol=final.get("protocol"), row=row, protocol=protocol, seed=seed)
    return out


def paired_differences(results: list, metric: str, protocols) -> str:
    """Markdown table: for each snippet row, its metric minus its base method's row (no snippet loss) in
    points, paired by seed and protocol (both runs share the seed, hence the label subset and the
    fine-tuning order), as mean ± sd over seeds and the number of seeds where the row is ahead. Pairing
    removes the seed-to-seed swing both rows share, which dominates the plain table's spread."""
    value = {(r["row"], r["protocol"], r["seed"]): r[metric] * 100 for r in results}
    rows = list(dict.fromkeys(r["row"] for r in results))
    lines = [f"| difference to the base method ({metric}, points, paired by seed) | " + " | ".join(protocols)
             + " |", "|---|" + "---:|" * len(protocols)]  # fmt: skip
    for row in rows:
        base = next((NAMES[m] for m in NAMES if row.startswith(NAMES[m] + " + snippet")), None)
        if base is None:
            continue
        cells = []
        for p in protocols:
            seeds = sorted({s for (r, q, s) in value if r == row and q == p and (base, p, s) in value})
            d = np.array([value[(row, p, s)] - value[(base, p, s)] for s in seeds], dtype=float)
            cells.append(_cell(d, difference=True))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _write(out: Path, exp: dict, results: list, pre_stats: list, protocols: list) -> str:
    metric = exp["metric"]
    parts = [summarize(results, metric, protocols), ""]
    diff = paired_differences(results, metric, protocols)
    if diff:
        parts += [diff, ""]
    parts += [summarize(results, "mAP@0.5", protocols), ""]
    keys = ("loss_global", "loss_snippet", "loss_d3m", "snippet_match_acc", "snippet_aligned_share")
    lines = ["| pretraining | seed | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for s in pre_stats:
        vals = [f"{s[k]:.3f}" if k in s else "-" for k in keys]
        lines.append(f"| {s['row']} | {s['seed']} | " + " | ".join(vals) + " |")
    parts += ["Last pretraining epoch (snippet_match_acc: share of query snippets whose feature-matched "
              "positive is the temporally aligned key snippet; snippet_aligned_share: share of query "
              "snippets that have a temporal counterpart in the key view):", "", *lines]  # fmt: skip
    table = "\n".join(parts)
    (out / "table.md").write_text(table + "\n")
    if results:
        from skelcl.train.report import plot_experiment

        plot_experiment(out / "table.png", results, metric, protocols)
    (out / "results.json").write_text(json.dumps({"results": results, "pretrain": pre_stats}, indent=2))
    return table
