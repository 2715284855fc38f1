"""Figures a person can read: class colours that differ, legends that name background, curves with every
history key, integer epochs and the loss weights, segment rows that say what they show, skeleton panels
that hold both bodies."""

import itertools

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from skelcl.data.plot import class_colors, legend_handles, sequence_figure  # noqa: E402
from skelcl.data.synthetic import CLASSES  # noqa: E402
from skelcl.eval import Segment  # noqa: E402
from skelcl.study import report  # noqa: E402


def cielab(color):
    """CIE L*a*b* (D65) of a matplotlib colour, from the sRGB formulas."""
    rgb = np.array(to_rgb(color))
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ lin / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_class_colours_differ_clearly():
    colors = class_colors(len(CLASSES))
    assert len(colors) == len(CLASSES) == 13
    labs = [cielab(c) for c in colors]
    dist = {
        (CLASSES[i], CLASSES[j]): np.linalg.norm(labs[i] - labs[j])
        for i, j in itertools.combinations(range(13), 2)
    }
    assert min(dist.values()) > 20, min(dist.items(), key=lambda kv: kv[1])
    # the pairs that looked alike with tab20 are far apart now
    for pair in (("dance", "gesture"), ("turn", "jump"), ("walk", "stand"), ("run", "sit")):
        assert dist.get(pair, dist.get(pair[::-1])) > 50, pair  # tab20 had 27 to 41
    # and no class is near white (unlabeled frames)
    assert min(np.linalg.norm(lab - cielab("white")) for lab in labs[:-1]) > 20
    big = class_colors(52)
    assert len(big) == 52 and len(set(big[:-1])) == 51 and big[-1] == colors[-1]


def test_legend_names_background_and_unlabeled():
    labels = [h.get_label() for h in legend_handles(CLASSES, used={0, 3}, unlabeled=True)]
    assert labels == ["walk", "jump", "background", "unlabeled"]
    assert [h.get_label() for h in legend_handles(CLASSES)][-1] == "background"


PRE = [
    {"epoch": e, "loss": 9.0 - e, "loss_global": 5.0 - e, "loss_snippet": 2.0, "snippet_match_acc": 0.05 * e,
     "snippet_aligned_share": 0.7, "lr": 0.1 / e, "seconds": 1.0, "grad_norm": 3.0}
    for e in (1, 2, 3)
]  # fmt: skip
FT = [
    {"epoch": 1, "loss": 2.0, "lr": 1e-3, "seconds": 1.0, "val_avg_mAP_0.1:0.5": 0.2, "val_mAP@0.5": 0.1},
    {"epoch": 2, "loss": 1.5, "lr": 1e-4, "seconds": 1.0, "val_avg_mAP_0.1:0.5": 0.3, "val_mAP@0.5": 0.2,
     "frame_accuracy": 0.5, "frame_num_videos": 7},
]  # fmt: skip
CFG = {"pretrain": {"method": "skeletonclr", "snippet": True, "snippet_weight": 1.5, "d3m_weight": 1.0}}


def test_curve_panels_take_every_key():
    panels = report.curve_panels(PRE, {"pretrained": FT, "scratch": FT[:1]})
    keys = {title: {(run, key) for run, key, _, _ in s} for title, s in panels.items()}
    assert keys["pretraining losses"] == {("pretrain", k) for k in ("loss", "loss_global", "loss_snippet")}
    assert keys["localization loss (frame cross-entropy)"] == {("pretrained", "loss"), ("scratch", "loss")}
    assert keys["pretraining learning rate"] == {("pretrain", "lr")}  # two schedules, two epoch axes
    assert keys["fine-tuning learning rate"] == {("pretrained", "lr"), ("scratch", "lr")}
    # the averages stand for the mAP thresholds; a key the panels do not know still shows
    assert keys["mAP (per-epoch evaluation)"] == {
        ("pretrained", "val_avg_mAP_0.1:0.5"),
        ("scratch", "val_avg_mAP_0.1:0.5"),
    }
    assert keys["snippet matching"] == {
        ("pretrain", "snippet_match_acc"),
        ("pretrain", "snippet_aligned_share"),
    }
    assert keys["frame metrics (per-epoch evaluation)"] == {("pretrained", "frame_accuracy")}
    assert keys["other"] == {("pretrain", "grad_norm")}  # seconds, epoch and counts left out
    (_, _, ep, vals), *_ = [s for s in panels["frame metrics (per-epoch evaluation)"]]
    assert ep == [2] and vals == [0.5]  # only the epochs that have the key


def test_curves_figure_names_weights_and_uses_integer_epochs():
    fig = report.curves_figure(PRE, {"pretrained": FT}, CFG)
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == 8
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ax.get_title()
    pre = next(ax for ax in axes if ax.get_title().startswith("pretraining losses"))
    assert "loss = loss_global + 1.5 x loss_snippet" in pre.get_title()
    legend = [t.get_text() for t in pre.get_legend().get_texts()]
    assert "loss_snippet (x 1.5 in loss)" in legend and "loss (weighted total)" in legend
    assert "loss_d3m" not in " ".join(legend)
    aim = report.loss_weights({"pretrain": {"method": "aimclr", "snippet": False, "d3m_weight": 0.5}})
    assert aim == {"loss_global": 1.0, "loss_d3m": 0.5}
    plt.close(fig)


def test_curves_figure_fits_axes_and_tells_runs_apart():
    """20 pretraining epochs are not drawn on the 50-epoch axis of fine-tuning; runs that share a learning
    rate schedule stay distinguishable; line style + marker tell the run everywhere, colour the key."""
    pre = [{"epoch": e, "loss": 5.0 / e, "loss_global": 4.0 / e, "lr": 0.1} for e in range(1, 21)]
    lr = [1e-3 * 0.9**e for e in range(1, 51)]
    ft = {
        name: [{"epoch": e, "loss": s / e, "lr": lr[e - 1], "val_avg_mAP_0.1:0.5": 0.01 * e / s}
               for e in range(1, 51)]
        for name, s in (("pretrained", 1.0), ("scratch", 2.0))
    }  # fmt: skip
    fig = report.curves_figure(pre, ft, CFG)
    axes = {ax.get_title().split(":")[0].split("\n")[0]: ax for ax in fig.axes if ax.has_data()}
    lo, hi = axes["pretraining losses"].get_xlim()
    assert 0 < lo < 1 and 20 < hi < 21  # fitted to the 20 epochs it holds
    assert 50 < axes["localization loss (frame cross-entropy)"].get_xlim()[1] < 51
    assert 20 < axes["pretraining learning rate"].get_xlim()[1] < 21
    # the two fine-tuning runs have one lr schedule: both lines drawn, told apart by style, marker, width
    # and by markers on different epochs
    a, b = axes["fine-tuning learning rate"].get_lines()
    assert {a.get_gid(), b.get_gid()} == {"pretrained | lr", "scratch | lr"}
    assert np.array_equal(a.get_xydata(), b.get_xydata())
    assert (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker())
    assert a.get_linewidth() > b.get_linewidth()
    marked = [
        set(range(line.get_markevery()[0], 50, line.get_markevery()[1])) for line in (a, b)
    ]  # (start, step)
    assert marked[0] and marked[1] and not marked[0] & marked[1]
    # one meaning per channel: (style, marker) per run is the same in every panel and differs between
    # runs; within a panel the colour follows the key
    style: dict = {}
    for title, ax in axes.items():
        colours: dict = {}
        for line in ax.get_lines():
            run, key = line.get_gid().split(" | ")
            style.setdefault(run, set()).add((line.get_linestyle(), line.get_marker()))
            colours.setdefault(line.get_color(), set()).add(key)
        assert all(len(keys) == 1 for keys in colours.values()), title
        assert len(colours) == len({line.get_gid().split(" | ")[1] for line in ax.get_lines()}), title
    assert set(style) == {"pretrain", "pretrained", "scratch"}
    assert all(len(s) == 1 for s in style.values()), style
    assert len({next(iter(s)) for s in style.values()}) == 3
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["pretrain", "pretrained", "scratch"]
    for handle, run in zip(legend.legend_handles, ["pretrain", "pretrained", "scratch"]):
        assert {(handle.get_linestyle(), handle.get_marker())} == style[run]
    # the loss panel of fine-tuning names its one key in the title, not in a legend of its own
    loss = axes["localization loss (frame cross-entropy)"]
    assert loss.get_legend() is None and len(loss.get_lines()) == 2
    plt.close(fig)


def test_segments_figure_says_what_rows_are_and_scores_each_video(tmp_path):
    bg = len(CLASSES) - 1
    truth = np.array([bg] * 10 + [3] * 10 + [bg] * 5 + [5] * 5 + [-1] * 2)
    half = truth.copy()
    half[10:15] = 4  # 5 of the 30 labelled frames wrong
    fig = report.segments_figure(
        ["v1"], [truth], {"model": [half]}, CLASSES, selection="the first test video"
    )
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == "truth" and ticks[1] == "model  frame acc 83 %"
    text = " ".join(t.get_text() for t in fig.texts)
    assert "per-frame argmax" in text and "sequences: the first test video" in text
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:bg] == list(CLASSES[:bg]) and legend[bg:] == ["background", "unlabeled"]
    plt.close(fig)
    # detected segments: scored by average mAP on the video, and said so
    segs = [Segment(3, 10, 20, 0.9), Segment(5, 25, 30, 0.8)]
    fig = report.segments_figure(["v1"], [truth], {"model": [segs]}, CLASSES)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][1] == "model  avg mAP 100 %"
    assert "detected segments" in " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)
    drawn = report.segments_to_frames([Segment(3, 2, 6, 0.2), Segment(5, 4, 8, 0.9)], 10, bg)
    assert drawn.tolist() == [bg, bg, 3, 3, 5, 5, 5, 5, bg, bg]
    path = report.plot_segments(tmp_path / "s.png", ["v1"], [truth], {"model": [half]}, CLASSES)
    assert path.stat().st_size > 5000


class Seq:
    def __init__(self, joints, labels, name="two"):
        self.joints, self.labels, self.name = joints, labels, name


@pytest.mark.parametrize("apart", [1.0, 12.0])
def test_skeleton_panels_hold_both_bodies(apart):
    from skelcl.data.synthetic import generate

    one = next(iter(generate(1, seed=0)))
    T = 40
    body = one.joints[:T, 0]  # (T, 25, 3)
    joints = np.stack([body, body + np.array([apart, 0.0, 0.0], dtype=np.float32)], axis=1)
    joints[5:8, 1] = 0  # the second person missing for a few frames
    fig = sequence_figure(Seq(joints, one.labels[:T]), CLASSES, num_frames=5)
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_title().startswith("t=")]
    assert len(panels) == 5
    from skelcl.data.plot import _view_axes

    h, v = _view_axes(joints)
    for ax in panels:
        t = int(ax.get_title().split("\n")[0][2:])
        pts = joints[t][np.abs(joints[t]).sum(axis=(1, 2)) > 0].reshape(-1, 3)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert x0 <= pts[:, h].min() and pts[:, h].max() <= x1, (t, apart)
        assert y0 <= pts[:, v].min() and pts[:, v].max() <= y1, (t, apart)
        # equal units on both axes: data aspect matches the panel's box
        box = ax.get_window_extent()
        assert (y1 - y0) / (x1 - x0) == pytest.approx(box.height / box.width, rel=0.02)
    assert "frame labels describe body 1" in fig._suptitle.get_text()
    assert "body 2" in fig._suptitle.get_text()
    plt.close(fig)
