"""Drawing skeleton sequences: a strip of frames above the per-frame label timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skelcl.data.skeleton import EDGES


def class_colors(num_classes: int):
    """One colour per class; the last class (background) is light grey."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colors = [cmap(i % 20) for i in range(num_classes - 1)]
    return colors + [(0.85, 0.85, 0.85, 1.0)]


def _view_axes(joints: np.ndarray) -> tuple[int, int]:
    """(horizontal, vertical) coordinate indices for a front view: vertical = the axis the spine follows."""
    valid = np.abs(joints[:, 0]).sum(axis=(1, 2)) > 0
    body = joints[valid, 0] if valid.any() else joints[:, 0]
    spine = np.abs(body[:, 20] - body[:, 0]).mean(axis=0)
    up = int(np.argmax(spine))
    horizontal = 0 if up != 0 else 1
    return horizontal, up


def draw_timeline(ax, labels: np.ndarray, classes, colors=None, y: float = 0.0, height: float = 1.0) -> None:
    """Coloured runs of per-frame labels on a matplotlib axis (unlabeled frames -1 stay white)."""
    colors = colors or class_colors(len(classes))
    labels = np.asarray(labels)
    if len(labels) == 0:
        return
    change = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], change, [len(labels)]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        c = labels[a]
        if c >= 0:
            ax.broken_barh([(a, b - a)], (y, height), facecolors=[colors[c]], edgecolor="none")


def draw_sequence(seq, classes, out, num_frames: int = 6) -> Path:
    """Save a figure of `num_frames` evenly spaced skeleton frames of `seq` and its label timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    joints, labels = seq.joints, seq.labels
    length = len(joints)
    picks = np.unique(np.linspace(0, length - 1, min(num_frames, length)).round().astype(int))
    h, v = _view_axes(joints)
    colors = class_colors(len(classes))
    fig = plt.figure(figsize=(2.2 * len(picks), 4.2))
    grid = fig.add_gridspec(2, len(picks), height_ratios=[4, 1])
    present = np.abs(joints).sum(axis=(2, 3)) > 0  # (T, M)
    # every panel gets the same size, centred on the frame's skeletons (people move across the scene)
    shown = joints[picks][present[picks]]  # (P, 25, 3)
    span = max(float((shown.max(1) - shown.min(1))[:, [h, v]].max()), 0.5) if shown.size else 2.0
    for col, t in enumerate(picks):
        ax = fig.add_subplot(grid[0, col])
        for m in range(joints.shape[1]):
            if not present[t, m]:
                continue
            body = joints[t, m]
            for a, b in EDGES:
                ax.plot(body[[a, b], h], body[[a, b], v], "-", color="C0" if m == 0 else "C1", lw=1.5)
            ax.plot(body[:, h], body[:, v], ".", color="k", ms=2)
        label = labels[t]
        name = classes[label] if label >= 0 else "unlabeled"
        ax.set_title(f"t={t}\n{name}", fontsize=8)
        if present[t].any():
            pts = joints[t][present[t]].reshape(-1, 3)
            ch, cv = (pts[:, h].min() + pts[:, h].max()) / 2, (pts[:, v].min() + pts[:, v].max()) / 2
        else:
            ch = cv = 0.0
        half = 0.55 * span * max(1, present[t].sum())
        ax.set_xlim(ch - half, ch + half)
        ax.set_ylim(cv - 0.55 * span, cv + 0.55 * span)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[1, :])
    draw_timeline(ax, labels, classes, colors)
    for t in picks:
        ax.axvline(t, color="k", lw=0.5, ls=":")
    ax.set_xlim(0, length)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel("frame")
    used = sorted({int(c) for c in np.unique(labels) if c >= 0})
    ax.legend(
        handles=[Patch(color=colors[c], label=classes[c]) for c in used],
        loc="upper center", bbox_to_anchor=(0.5, -0.6), ncol=min(len(used), 7), fontsize=7, frameon=False,
    )  # fmt: skip
    fig.suptitle(seq.name, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
