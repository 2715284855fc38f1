"""Markdown report and matplotlib plots for `skelcl demo` (and reusable pieces for other runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRIC_ROWS = ("mAP@0.1", "mAP@0.3", "mAP@0.5", "mAP@0.7", "avg_mAP_0.1:0.5", "avg_mAP_0.1:0.7",
               "frame_accuracy", "frame_edit", "frame_F1@25")  # fmt: skip


DESCRIBE = {"linear": "linear probe (frozen encoder + one per-frame linear layer)",
            "frozen_fusion": "frozen encoder + trained U-fusion head",
            "finetune": "fine-tuning"}  # fmt: skip


def comparison_lines(c: dict) -> list:
    """Text lines for one protocol's paired comparison (see run_demo's metrics["comparisons"])."""
    what = DESCRIBE.get(c["protocol"], c["protocol"])
    frac, ref = f"{100 * c['label_fraction']:g} % labels ({c['labeled_sequences']} sequences)", c["reference"]
    lines = [f"{c['name']}: {what}, {frac}, {c['steps']} optimizer steps per run; pretrained vs {ref}:"]
    for s, p, r in zip(c["seeds"], c["pretrained"], c["random"]):
        lines.append(f"  label seed {s}: pretrained {p:.1f}, {c['reference']} {r:.1f}: {p - r:+.1f} points")
    d = np.array(c["pretrained"]) - np.array(c["random"])
    lines.append(f"  mean paired difference {d.mean():+.1f} points over {d.size} label seeds "
                 f"(avg mAP@0.1:0.5, %)")  # fmt: skip
    return lines


SMOKE = ("One pretraining run (one seed): this is a smoke test that the pipeline runs end to end, not "
         "evidence that pretraining helps or hurts. `skelcl experiment --config study_snippet` repeats the "
         "comparison over pretraining and label seeds with 95 % intervals.")  # fmt: skip


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_weights(pretrain_config: dict | None) -> dict:
    """{loss key: weight in the total} of a pretraining config (its `pretrain` section): the total is
    loss = loss_global [+ loss_cross_tempo + loss_motion (rvtclr)] [+ d3m_weight * loss_d3m (aimclr)]
    [+ snippet_weight * loss_snippet (snippet on)] (skelcl.models.moco)."""
    if not pretrain_config:
        return {}
    p = pretrain_config.get("pretrain", pretrain_config)
    w = {"loss_global": 1.0}
    if p.get("method") == "rvtclr":
        w.update(loss_cross_tempo=1.0, loss_motion=1.0)
    if p.get("snippet"):
        w["loss_snippet"] = float(p.get("snippet_weight", 1.0))
    if p.get("method") == "aimclr":
        w["loss_d3m"] = float(p.get("d3m_weight", 1.0))
    return w


PROBE_KEYS = ("probe_frame_accuracy", "probe_avg_mAP")  # the online probe's scores (skelcl.train.probe)

# Panels of curves.png, in order: (title, y label, runs: "pretrain" / "finetune" / None for both, test on
# a history key). A key goes to the first panel whose test accepts it; keys no panel accepts go to "other".
_PANELS = (
    ("pretraining losses", "loss", "pretrain", lambda k: "loss" in k),
    ("localization loss (frame cross-entropy)", "loss", "finetune", lambda k: "loss" in k),
    ("pretraining learning rate", "learning rate", "pretrain", lambda k: k == "lr" or k.startswith("lr_")),
    ("fine-tuning learning rate", "learning rate", "finetune", lambda k: k == "lr" or k.startswith("lr_")),
    ("online probe (frozen query encoder, frame kNN)", "fraction", "pretrain", lambda k: k in PROBE_KEYS),
    ("mAP (per-epoch evaluation)", "mAP (fraction)", None, lambda k: "mAP" in k),
    ("frame metrics (per-epoch evaluation)", "fraction", None, lambda k: "frame_" in k),
    ("snippet matching", "fraction of query snippets", None, lambda k: k.startswith("snippet_")),
)
_FRACTION_PANELS = (
    "online probe (frozen query encoder, frame kNN)",
    "mAP (per-epoch evaluation)",
    "frame metrics (per-epoch evaluation)",
    "snippet matching",
)


def curve_panels(pretrain_history, finetune_histories: dict) -> dict:
    """{panel title: [(run, key, epochs, values)]}: every numeric per-epoch key of the histories (except
    epoch, steps, seconds, probe_step and counts named num_*) sorted into the panels of curves.png; empty
    panels are left out. run is "pretrain" or the name of a fine-tuning run."""
    runs = [("pretrain", pretrain_history or [])] + [(n, h or []) for n, h in finetune_histories.items()]
    panels: dict = {}
    for run, hist in runs:
        kind = "pretrain" if run == "pretrain" else "finetune"
        for key in dict.fromkeys(k for h in hist for k in h):
            if key in ("epoch", "steps", "seconds", "probe_step") or "num_" in key:
                continue
            pts = [(h["epoch"], h[key]) for h in hist if "epoch" in h and _is_number(h.get(key))]
            if not pts:
                continue
            title = next((t for t, _, r, test in _PANELS if r in (None, kind) and test(key)), "other")
            panels.setdefault(title, []).append((run, key, [p[0] for p in pts], [float(p[1]) for p in pts]))
    if "mAP (per-epoch evaluation)" in panels:  # the averages when present, not every threshold
        series = panels["mAP (per-epoch evaluation)"]
        panels["mAP (per-epoch evaluation)"] = [s for s in series if "avg_mAP" in s[1]] or series
    order = [t for t, _, _, _ in _PANELS] + ["other"]
    return {t: panels[t] for t in order if t in panels}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def plot_curves(
    path, pretrain_history, finetune_histories: dict, pretrain_config: dict | None = None
) -> Path:
    """Save curves_figure(...) to `path` (curves.png)."""
    plt = _plt()
    fig = curves_figure(pretrain_history, finetune_histories, pretrain_config)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# Line style and marker of the i-th run of curves.png (the same in every panel); colour tells the key.
_RUN_LINES = ("-", "--", ":", "-.")
_RUN_MARKERS = ("o", "s", "^", "v", "D", "x", "P", "*")


def run_styles(runs) -> dict:
    """{run: (line style, marker)}: one distinct pair per run, for up to 8 runs (then they repeat)."""
    return {
        r: (_RUN_LINES[i % len(_RUN_LINES)], _RUN_MARKERS[i % len(_RUN_MARKERS)]) for i, r in enumerate(runs)
    }


def curves_figure(pretrain_history, finetune_histories: dict, pretrain_config: dict | None = None):
    """The figure of curves.png: one panel per kind of per-epoch value (pretraining losses, localization
    loss, the learning rate of pretraining and of fine-tuning, mAP and frame metrics of per-epoch
    evaluations, snippet matching, other) holding every numeric key the histories have, so new keys appear
    without changes here.

    One meaning per visual channel: the line style and marker tell the run, the same in every panel (the
    figure's legend, below the panels); the colour tells the key within a panel (the panel's legend). Runs
    with the same values in a panel (two fine-tuning runs with one learning-rate schedule) stay visible:
    the first is drawn widest and their markers sit on different epochs. Each panel's epoch axis spans its
    own data, with integer ticks. Every line's gid is "RUN | KEY". pretrain_config (the pretraining run's
    config.yaml as a dict) names the loss weights in the legend and title."""
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels = curve_panels(pretrain_history, finetune_histories) or {"no per-epoch values": []}
    weights = loss_weights(pretrain_config)
    runs = list(dict.fromkeys(r for series in panels.values() for r, _, _, _ in series))
    styles = run_styles(runs)
    n = len(panels)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.7 * rows + 0.5), squeeze=False)
    ylabels = {t: y for t, y, _, _ in _PANELS}
    for ax, (title, series) in zip(axes.flat, panels.items()):
        keys = list(dict.fromkeys(s[1] for s in series))
        same: dict = {}  # (key, epochs, values) -> the runs that have exactly these
        labelled = set()  # keys already in the panel's legend
        for run, key, ep, vals in series:
            same.setdefault((key, tuple(ep), tuple(vals)), []).append(run)
        for run, key, ep, vals in series:
            name = key
            if title == "pretraining losses" and key in weights:
                name = f"{key} (x {weights[key]:g} in loss)"
            elif title == "pretraining losses" and key == "loss" and weights:
                name = "loss (weighted total)"
            group = same[(key, tuple(ep), tuple(vals))]
            j, m = group.index(run), len(group)
            step = max(1, -(-len(ep) // 12))  # about 12 markers per line
            ls, marker = styles[run]
            width = 1.3 + min(2.7, 0.9 * (m - 1 - j))  # the first of equal lines widest, under the others
            ax.plot(ep, vals, ls=ls, marker=marker, markevery=(j * step, m * step), markersize=4, lw=width,
                    color=f"C{keys.index(key) % 10}", gid=f"{run} | {key}",
                    label=None if key in labelled else name)  # fmt: skip
            labelled.add(key)
        heading = title
        if title == "pretraining losses" and weights:
            terms = " + ".join(("" if w == 1 else f"{w:g} x ") + k for k, w in weights.items())
            heading = f"pretraining losses\nloss = {terms}"
        elif len(keys) == 1 and title != "other":
            heading = f"{title}: {keys[0]}"
        if "learning rate" in title and series and min(min(s[3]) for s in series) > 0:
            ax.set_yscale("log")
        if title in _FRACTION_PANELS:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(heading, fontsize=10)
        ax.set(xlabel="epoch", ylabel=ylabels.get(title, "value"))
        epochs = [e for _, _, ep, _ in series for e in ep] or [1]
        ax.set_xlim(min(epochs) - 0.3, max(epochs) + 0.3)
        if max(epochs) - min(epochs) < 4:  # a few epochs: tick each (the locator would add fractions)
            ax.set_xticks(range(int(min(epochs)), int(max(epochs)) + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7, title="colour: key", title_fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles = [Line2D([], [], color="0.3", ls=styles[r][0], marker=styles[r][1], markersize=4, label=r)
               for r in runs]  # fmt: skip
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
                   title="line style and marker: run", title_fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(handles) - 1) // 5), 1, 1))
    return fig


def plot_experiment(path, results: list, metric: str, protocols, comparisons=()) -> Path:
    """table.png. Top: one panel per protocol, its x axis shared by every row in it; per row, each
    replicate's metric (in %) as a dot coloured by seed (no lines: rows are separate runs) and the mean
    over seeds as a black bar. Bottom (when comparisons are given, dicts of skelcl.study.experiment.compare):
    per protocol, each comparison's per-seed paired differences (small dots), their mean (diamond) and its
    95 % t-interval (whisker), coloured by verdict, with a line at 0."""
    plt = _plt()
    from matplotlib.lines import Line2D

    rows = list(dict.fromkeys(r["row"] for r in results))
    comps = list(comparisons)
    names = list(dict.fromkeys(f"{c['row']} − {c['reference']}" for c in comps))
    n_proto = len(protocols)
    heights = [0.32 * len(rows) + 1.2] + ([0.32 * len(names) + 1.2] if names else [])
    fig, axes = plt.subplots(len(heights), n_proto, figsize=(3.6 * n_proto + 3.2, sum(heights) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)  # fmt: skip
    seeds = sorted({r["seed"] for r in results})
    colors = plt.get_cmap("tab10").colors
    for j, proto in enumerate(protocols):
        ax = axes[0, j]
        for y, row in enumerate(rows):
            pts = [(r["seed"], 100 * r[metric]) for r in results
                   if r["row"] == row and r["protocol"] == proto]  # fmt: skip
            for seed, v in pts:
                ax.scatter(v, y, color=colors[seeds.index(seed) % 10], s=16, zorder=3)
            if pts:
                ax.plot([np.mean([v for _, v in pts])] * 2, [y - 0.35, y + 0.35], color="black", lw=2.2)
        ax.set_yticks(range(len(rows)), rows if j == 0 else [""] * len(rows), fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set(title=proto, xlabel=f"{metric} (%)")
        ax.grid(axis="x", alpha=0.3)
        if not names:
            continue
        ax = axes[1, j]
        verdict_color = {"helps": "tab:green", "hurts": "tab:red"}
        for y, name in enumerate(names):
            c = next((c for c in comps if c["protocol"] == proto
                      and f"{c['row']} − {c['reference']}" == name), None)  # fmt: skip
            if c is None:
                continue
            col = verdict_color.get(c["verdict"], "tab:gray")
            ax.scatter(c["differences"], [y] * len(c["differences"]), color=col, s=8, alpha=0.5, zorder=2)
            if c["low"] == c["low"]:
                ax.plot([c["low"], c["high"]], [y, y], color=col, lw=1.6, zorder=3)
            ax.scatter([c["mean"]], [y], color=col, marker="D", s=28, zorder=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(names)), names if j == 0 else [""] * len(names), fontsize=7)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set(xlabel="paired difference (points)")
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color="black", lw=2.2, label="mean over seeds")]
    handles += [Line2D([], [], ls="", marker="o", color=colors[k % 10], label=f"seed {s}")
                for k, s in enumerate(seeds)]  # fmt: skip
    if names:
        handles += [
            Line2D([], [], ls="", marker="o", ms=4, color="tab:gray", alpha=0.5, label="difference, 1 seed"),
            Line2D([], [], color="tab:gray", marker="D", label="mean difference, 95 % t-interval"),
            Line2D([], [], color="tab:green", lw=2, label="helps (interval above 0)"),
            Line2D([], [], color="tab:red", lw=2, label="hurts (interval below 0)"),
            Line2D([], [], color="tab:gray", lw=2, label="cannot tell (interval holds 0)"),
        ]
    fig.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / (3.6 * n_proto + 3.2), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def budget_series(comparisons) -> dict:
    """{protocol: {row: [(steps, mean, low, high, n)] sorted by steps}} from paired comparisons that carry a
    pretraining budget ("base" row name and "budget" steps, skelcl.study.experiment): per protocol and row,
    the mean difference pretrained minus the protocol's own random-init reference and its 95 % interval."""
    out: dict = {}
    for c in comparisons:
        if c.get("budget") is None:
            continue
        pts = out.setdefault(c["protocol"], {}).setdefault(c["base"], [])
        pts.append((int(c["budget"]), c["mean"], c["low"], c["high"], len(c["seeds"])))
    for rows in out.values():
        for pts in rows.values():
            pts.sort()
    return out


def plot_budget(path, comparisons, metric: str, protocols) -> Path:
    """budget.png: one panel per protocol; x = pretraining optimizer steps (log scale), y = pretrained minus
    the protocol's own random-init reference (points of metric); per row the mean paired difference with its
    95 % t-interval (whiskers; none with fewer than 2 pairs), a line at 0."""
    plt = _plt()
    series = budget_series(comparisons)
    shown = [p for p in protocols if p in series] or list(series) or ["(no budgets)"]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown) + 0.6, 3.8), squeeze=False)
    rows = list(dict.fromkeys(r for p in shown for r in series.get(p, {})))
    for ax, proto in zip(axes[0], shown):
        for row, pts in series.get(proto, {}).items():
            k = rows.index(row)
            x = np.array([p[0] for p in pts], dtype=float) * (1 + 0.03 * (k - (len(rows) - 1) / 2))
            m = np.array([p[1] for p in pts])
            lo, hi = np.array([p[2] for p in pts]), np.array([p[3] for p in pts])
            ok = ~np.isnan(lo)
            ax.plot(x, m, marker="o", color=f"C{k % 10}", label=row)
            ax.errorbar(x[ok], m[ok], yerr=[m[ok] - lo[ok], hi[ok] - m[ok]], fmt="none", ecolor=f"C{k % 10}",
                        capsize=3)  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        steps = sorted({p[0] for pts in series.get(proto, {}).values() for p in pts})
        if steps:
            ax.set_xticks(steps, [str(s) for s in steps])
            ax.minorticks_off()
        ax.set(title=proto, xlabel="pretraining steps")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"pretrained − random init\n({metric}, points)")  # the panels share its meaning
    if rows:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle("pretrained minus the same protocol's random-init reference: mean paired difference, "
                 "95 % t-interval", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # room for the title above the panels
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def segments_to_frames(segments, length: int, background: int) -> np.ndarray:
    """int64 (length,) frame labels drawn from detected segments: background where none covers a frame,
    and where segments overlap the higher-scoring one on top."""
    labels = np.full(length, background, dtype=np.int64)
    for s in sorted(segments, key=lambda s: s.score):
        a, b = max(0, int(np.floor(s.start))), min(length, int(np.ceil(s.end)))
        labels[a:b] = s.label
    return labels


def video_score(truth: np.ndarray, pred, background: int) -> tuple[str, float]:
    """(name, value) of one video's score: frame accuracy (labelled frames) for per-frame labels, average
    mAP@0.1:0.5 (BABEL thresholds, over the classes of this video) for a list of detected segments."""
    from skelcl.eval import evaluate_protocol, segments_from_labels

    truth = np.asarray(truth)
    if isinstance(pred, np.ndarray):
        keep = truth >= 0
        return "frame acc", float((pred[keep] == truth[keep]).mean()) if keep.any() else float("nan")
    gt = {"v": segments_from_labels(truth, background=background)}
    if not gt["v"]:
        return "avg mAP", float("nan")
    res = evaluate_protocol(gt, {"v": list(pred)}, "babel", num_classes=background)
    return "avg mAP", float(res["avg_mAP_0.1:0.5"])


def plot_segments(path, names, truths, predictions: dict, classes, selection: str | None = None) -> Path:
    """Save segments_figure(...) to `path` (segments.png)."""
    plt = _plt()
    fig = segments_figure(names, truths, predictions, classes, selection)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def segments_figure(names, truths, predictions: dict, classes, selection: str | None = None):
    """The figure of segments.png: for each sequence, the true per-frame labels and one strip per model.

    predictions: {model name: one entry per sequence}, an entry either int (T,) per-frame labels (the
    argmax of the model's class probabilities) or a list of detected Segments (drawn over background,
    higher scores on top). Beside each model's strip its score on that video (frame accuracy or average
    mAP@0.1:0.5, see video_score). selection: how the sequences were chosen, printed in the note under
    the figure. Background is light grey, unlabeled frames (-1) white; all in the legend.
    """
    plt = _plt()
    from skelcl.data.plot import class_colors, draw_timeline, legend_handles

    bg = len(classes) - 1
    colors = class_colors(len(classes))
    models = list(predictions)
    kinds = {isinstance(p[0], np.ndarray) if len(p) else True for p in predictions.values()}
    n = len(names)
    rows = 1 + len(models)
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.3 + (0.32 * rows + 0.55) * n), squeeze=False)
    unlabeled = False
    for i, (ax, name, truth) in enumerate(zip(axes[:, 0], names, truths)):
        truth = np.asarray(truth)
        unlabeled |= bool((truth < 0).any())
        ticks = ["truth"]
        draw_timeline(ax, truth, classes, colors, y=rows - 1, height=0.85)
        for r, model in enumerate(models, start=1):
            pred = predictions[model][i]
            score_name, score = video_score(truth, pred, bg)
            strip = (
                np.asarray(pred) if isinstance(pred, np.ndarray) else segments_to_frames(pred, len(truth), bg)
            )
            draw_timeline(ax, strip, classes, colors, y=rows - 1 - r, height=0.85)
            ticks.append(f"{model}  {score_name} {100 * score:.0f} %" if np.isfinite(score) else model)
        ax.set_xlim(0, len(truth))
        ax.set_ylim(-0.15, rows)
        ax.set_yticks([rows - 1 - r + 0.425 for r in range(rows)], ticks, fontsize=8)
        ax.set_title(str(name), fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("frame")
    if kinds == {True}:
        what = "rows under 'truth': each model's per-frame argmax class (not the detected segments mAP uses)"
        score = "score: frame accuracy on that video"
    elif kinds == {False}:
        what = "rows under 'truth': each model's detected segments (higher scores drawn on top)"
        score = "score: average mAP@0.1:0.5 on that video"
    else:
        what = "rows under 'truth': per-frame argmax or detected segments, by model"
        score = "score: frame accuracy (argmax rows) or average mAP@0.1:0.5 (segment rows) on that video"
    note = f"{what}; {score}." + (f"\nsequences: {selection}." if selection else "")
    handles = legend_handles(classes, unlabeled=unlabeled, colors=colors)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    fig.text(0.01, 0.995, note, ha="left", va="top", fontsize=8, wrap=True)
    legend_rows = -(-len(handles) // 7)
    bottom = (0.1 + 0.2 * legend_rows) / fig.get_figheight()
    top = 1 - (0.25 + 0.16 * (1 + note.count("\n"))) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, top))
    return fig


def metrics_table(results: dict) -> str:
    """Markdown table: rows METRIC_ROWS, one column per named result dict (fractions shown as %)."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in METRIC_ROWS:
        if not all(key in r for r in results.values()):
            continue
        lines.append(f"| {key} | " + " | ".join(f"{100 * results[n][key]:.1f}" for n in names) + " |")
    return "\n".join(lines)


def write_demo_report(out, metrics: dict, settings: str, plots) -> Path:
    """report.md of `skelcl demo`: its paired comparisons (skelcl.study.demo), the smoke-test note, times,
    settings and plots."""

    out = Path(out)
    text = [
        "# skelcl demo",
        "",
        *(["```", *metrics["header"], "```", ""] if metrics.get("header") else []),  # command, versions
        f"One {metrics['pretrain_method']} pretraining run on the built-in synthetic skeleton data, "
        "then the pretrained encoder against random init under the same localization protocol, label "
        "subset and number of optimizer steps, for each label-subset seed. Figures: average detection "
        "mAP@0.1:0.5 on the test part, in %.",
        "",
        "```",
        *[line for c in metrics["comparisons"] for line in comparison_lines(c)],
        "```",
        "",
        metrics["note"],
        "",
        f"Total time {metrics['seconds']:.0f} s (pretraining {metrics['seconds_pretrain']:.0f} s).",
        "",
        "## Settings",
        "",
        "```",
        settings.rstrip(),
        "```",
        "",
        "## Plots",
        "",
    ]
    text += [f"![{Path(x).stem}]({Path(x).name})" for x in plots]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path
