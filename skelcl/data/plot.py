"""Drawing skeleton sequences: a strip of frames above the per-frame label timeline.

Colours: each action class has its own colour from PALETTE (12 colours picked to differ clearly: no two
closer than 24 in CIELAB distance, none near the background's light grey); background is light grey
and unlabeled frames (-1) are white. Beyond 12 classes colours come from matplotlib's tab20 family and
are no longer guaranteed to be far apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skelcl.data.skeleton import EDGES

# blue, orange, green, red, purple, brown, pink, cyan, olive, black, yellow, navy
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#17becf", "#bcbd22", "#000000", "#ffe119", "#000075")  # fmt: skip
BACKGROUND_COLOR = "#e0e0e0"
UNLABELED_COLOR = "#ffffff"
BODY_COLORS = ("#303030", "#a8a8a8")  # body 1 (labelled) dark grey, body 2 light grey


def class_colors(num_classes: int) -> list:
    """Hex colour per class index; the last class (background) is light grey."""
    import matplotlib
    from matplotlib.colors import to_hex

    colors = list(PALETTE)
    if num_classes - 1 > len(colors):
        extra = [
            to_hex(c) for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors
        ]
        colors += [c for c in dict.fromkeys(extra) if c not in colors and c != BACKGROUND_COLOR]
    n = num_classes - 1
    return [colors[i % len(colors)] for i in range(n)] + [BACKGROUND_COLOR]


def legend_handles(classes, used=None, unlabeled: bool = False, colors=None) -> list:
    """Legend patches for the classes in `used` (all but background when None), then background (and
    "unlabeled" if asked), each with a thin edge so light colours stay visible."""
    from matplotlib.patches import Patch

    colors = colors or class_colors(len(classes))
    bg = len(classes) - 1
    used = range(bg) if used is None else sorted(c for c in used if 0 <= c < bg)
    handles = [Patch(facecolor=colors[c], edgecolor="0.4", lw=0.5, label=classes[c]) for c in used]
    handles.append(Patch(facecolor=colors[bg], edgecolor="0.4", lw=0.5, label=f"{classes[bg]}"))
    if unlabeled:
        handles.append(Patch(facecolor=UNLABELED_COLOR, edgecolor="0.4", lw=0.5, label="unlabeled"))
    return handles


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


def panel_limits(
    points: np.ndarray, h: int, v: int, min_half: float, box: float = 1.5
) -> tuple[tuple, tuple]:
    """(xlim, ylim) holding every point (P, 3) of a frame with a 10 % margin, centred on the points, at
    least min_half each side, with height / width = box (so equal units on both axes in a box-shaped
    panel)."""
    lo, hi = points[:, [h, v]].min(axis=0), points[:, [h, v]].max(axis=0)
    centre = (lo + hi) / 2
    hw, hh = np.maximum((hi - lo) / 2 * 1.1, min_half)
    hw, hh = max(hw, hh / box), max(hh, hw * box)
    return (centre[0] - hw, centre[0] + hw), (centre[1] - hh, centre[1] + hh)


def sequence_figure(seq, classes, num_frames: int = 6):
    """A matplotlib figure of `num_frames` evenly spaced skeleton frames of `seq` and its label timeline.

    Each panel shows every body present in its frame (the view widens when two people stand apart);
    body 1 is dark grey, body 2 light grey; frame labels describe body 1.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    joints, labels = seq.joints, seq.labels
    length = len(joints)
    picks = np.unique(np.linspace(0, length - 1, min(num_frames, length)).round().astype(int))
    h, v = _view_axes(joints)
    colors = class_colors(len(classes))
    fig = plt.figure(figsize=(max(2.2 * len(picks), 6.0), 5.4), layout="constrained")
    grid = fig.add_gridspec(2, len(picks), height_ratios=[4, 1])
    present = np.abs(joints).sum(axis=(2, 3)) > 0  # (T, M)
    # a common minimum size (one body's extent), widened per panel to hold every body of the frame
    shown = joints[picks][present[picks]]  # (P, 25, 3)
    body = float((shown.max(1) - shown.min(1))[:, [h, v]].max()) if shown.size else 2.0
    min_half = 0.35 * max(body, 0.5)
    for col, t in enumerate(picks):
        ax = fig.add_subplot(grid[0, col])
        for m in range(joints.shape[1]):
            if not present[t, m]:
                continue
            pts = joints[t, m]
            color = BODY_COLORS[min(m, len(BODY_COLORS) - 1)]
            for a, b in EDGES:
                ax.plot(pts[[a, b], h], pts[[a, b], v], "-", color=color, lw=1.5)
        label = labels[t]
        name = classes[label] if label >= 0 else "unlabeled"
        ax.set_title(f"t={t}\n{name}", fontsize=8)
        if present[t].any():
            xlim, ylim = panel_limits(joints[t][present[t]].reshape(-1, 3), h, v, min_half, 1.3)
        else:
            xlim, ylim = (-min_half, min_half), (-1.3 * min_half, 1.3 * min_half)
            ax.text(0.5, 0.5, "no body", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_box_aspect(1.3)  # limits have the same height / width: equal units, no body cut off
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
    used = {int(c) for c in np.unique(labels) if c >= 0}
    handles = legend_handles(classes, used, unlabeled=bool((labels < 0).any()), colors=colors)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.5), ncol=min(len(handles), 7),
              fontsize=7, frameon=False)  # fmt: skip
    bodies = int(present.any(axis=0).sum())
    note = "frame labels describe body 1 (dark)"
    if bodies > 1:
        note += "; body 2 (light) is another person"
    lines = [Line2D([], [], color=BODY_COLORS[m], lw=2, label=f"body {m + 1}") for m in range(min(bodies, 2))]
    fig.legend(handles=lines, loc="upper right", fontsize=7, frameon=False)
    fig.suptitle(f"{seq.name}: {note}", fontsize=9)
    return fig


def draw_sequence(seq, classes, out, num_frames: int = 6) -> Path:
    """Save sequence_figure(seq, classes, num_frames) to `out` (.png, .pdf or .svg)."""
    import matplotlib.pyplot as plt

    fig = sequence_figure(seq, classes, num_frames)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
