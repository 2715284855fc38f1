"""Markdown report and matplotlib plots for `skelcl demo` (and reusable pieces for other runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRIC_ROWS = ("mAP@0.1", "mAP@0.3", "mAP@0.5", "mAP@0.7", "avg_mAP_0.1:0.5", "avg_mAP_0.1:0.7",
               "frame_accuracy", "frame_edit", "frame_F1@25")  # fmt: skip


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path, pretrain_history, finetune_histories: dict) -> Path:
    """Pretraining loss terms per epoch (left) and fine-tuning loss per epoch for each run (right)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ep = [h["epoch"] for h in pretrain_history]
    for key in ("loss", "loss_global", "loss_snippet", "loss_d3m"):
        if pretrain_history and key in pretrain_history[0]:
            axes[0].plot(ep, [h[key] for h in pretrain_history], marker=".", label=key)
    axes[0].set(title="pretraining", xlabel="epoch", ylabel="loss")
    axes[0].legend()
    for name, hist in finetune_histories.items():
        axes[1].plot([h["epoch"] for h in hist], [h["loss"] for h in hist], marker=".", label=name)
    axes[1].set(title="localization training (frame cross-entropy)", xlabel="epoch", ylabel="loss")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_experiment(path, results: list, metric: str, protocols) -> Path:
    """One panel per protocol: each row's metric (in %) per seed as dots, the mean as a bar, seeds of the
    same number joined by a faint line so paired differences show."""
    plt = _plt()
    rows = list(dict.fromkeys(r["row"] for r in results))
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 0.5 * len(rows) + 1.6),
                             sharey=True, squeeze=False)  # fmt: skip
    seeds = sorted({r["seed"] for r in results})
    colors = plt.get_cmap("tab10").colors
    for ax, proto in zip(axes[0], protocols):
        for k, seed in enumerate(seeds):
            ys, xs = [], []
            for y, row in enumerate(rows):
                v = [
                    r[metric]
                    for r in results
                    if r["row"] == row and r["protocol"] == proto and r["seed"] == seed
                ]
                if v:
                    ys.append(y)
                    xs.append(v[0] * 100)
            ax.plot(xs, ys, color=colors[k % 10], alpha=0.35, lw=0.8)
            ax.scatter(xs, ys, color=colors[k % 10], s=18, label=f"seed {seed}", zorder=3)
        for y, row in enumerate(rows):
            v = [r[metric] * 100 for r in results if r["row"] == row and r["protocol"] == proto]
            if v:
                ax.plot([np.mean(v)] * 2, [y - 0.3, y + 0.3], color="black", lw=2)
        ax.set(title=proto, xlabel=f"{metric} (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(range(len(rows)), rows, fontsize=8)
    axes[0, 0].invert_yaxis()
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_segments(path, names, truths, predictions: dict, classes) -> Path:
    """For each sequence: a strip of true per-frame labels and one strip per model (argmax labels);
    background frames white, -1 (unlabeled) grey."""
    plt = _plt()
    from matplotlib.colors import ListedColormap

    bg = len(classes) - 1
    colors = list(plt.get_cmap("tab20").colors[:bg]) + [(1, 1, 1)] + [(0.7, 0.7, 0.7)]
    cmap = ListedColormap(colors)
    rows = 1 + len(predictions)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 1.0 + 0.55 * rows * len(names)), squeeze=False)
    for ax, name, truth, i in zip(axes[:, 0], names, truths, range(len(names))):
        strips = [truth] + [p[i] for p in predictions.values()]
        img = np.stack([np.where(s < 0, bg + 1, s) for s in strips])
        ax.imshow(img, aspect="auto", cmap=cmap, vmin=0, vmax=bg + 1, interpolation="nearest")
        ax.set_yticks(range(rows), ["truth"] + list(predictions))
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_xlabel("frame")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in range(bg)]
    fig.legend(handles, classes[:bg], loc="lower center", ncol=min(bg, 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


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
    out = Path(out)
    p, s = metrics["pretrained"], metrics["scratch"]
    delta = 100 * (p["avg_mAP_0.1:0.5"] - s["avg_mAP_0.1:0.5"])
    text = [
        "# skelcl demo",
        "",
        "Snippet contrastive pretraining on the built-in synthetic skeleton data, then localization training "
        f"with {100 * metrics['label_fraction']:.0f} % of the training sequences labeled, compared with the "
        "same model trained from random initialization. Figures are percentages on the test part "
        "(detection mAP at temporal IoU thresholds, BABEL protocol; frame-wise metrics).",
        "",
        metrics_table({"pretrained": p, "scratch (random init)": s}),
        "",
        f"Average mAP@0.1:0.5, pretrained minus scratch: {delta:+.1f} points "
        f"({'pretraining helped' if delta > 0 else 'pretraining did not help'} in this run). "
        "This is one seed, a small synthetic set and a very short CPU pretraining schedule; "
        "`skelcl experiment` repeats the comparison over seeds and protocols.",
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
