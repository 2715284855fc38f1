"""Per-step LR schedules with warm-up, the key-encoder momentum schedule, pretraining step budgets, the
online probe (logged, and leaving the weights unchanged), old checkpoints, and BatchNorm calibration of
frozen pretrained encoders."""

import json
import math

import pytest
import torch
from helpers import SMALL

from skelcl.data.synthetic import generate_cache
from skelcl.errors import SkelclError
from skelcl.train import checkpoint, config
from skelcl.train.finetune import run_finetune
from skelcl.train.pretrain import load_encoder_state, momentum_at, run_pretrain
from skelcl.train.run import make_scheduler


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_cache(tmp_path_factory.mktemp("data") / "tiny", 24, 11, config=SMALL, progress=False)


def _pre(data, *extra):
    return config.resolve("pretrain_skeletonclr", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=2", "train.batch_size=6",
        "train.num_threads=2", "train.lr=0.05", "pretrain.queue_size=8", "pretrain.snippet_queue_size=40",
        "pretrain.momentum=0.9", "pretrain.snippet=false", *extra])  # fmt: skip


def _ft(data, *extra):
    return config.resolve("finetune", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=1", "train.batch_size=4",
        "train.num_threads=2", "train.lr=0.01", "train.max_frames=60", "finetune.val_fraction=0",
        "train.eval_every=0", *extra])  # fmt: skip


def _lrs(t: dict, total: int) -> list:
    """The LR of every optimizer step of a run of `total` steps, read off a real optimizer."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t["lr"])
    sched = make_scheduler(opt, t, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_warms_up_then_follows_a_cosine_per_step():
    t = {"lr": 0.2, "schedule": "cosine", "warmup": 0.1, "epochs": 3, "milestones": [], "gamma": 0.1}
    lrs = _lrs(t, 50)  # warm-up: round(0.1 * 50) = 5 steps
    assert lrs[:5] == pytest.approx([0.2 * k / 5 for k in (1, 2, 3, 4, 5)])
    for s in (5, 6, 17, 30, 49):  # cosine over the 45 steps after the warm-up
        assert lrs[s] == pytest.approx(0.2 * (1 + math.cos(math.pi * (s - 5) / 45)) / 2)
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:]))  # falls at every step, not once per epoch
    # the step schedule: milestones in epochs of train.epochs, at round(m * total / epochs) steps
    lrs = _lrs({**t, "schedule": "step", "warmup": 0.0, "epochs": 10, "milestones": [4, 8]}, 25)
    assert lrs == pytest.approx([0.2] * 10 + [0.02] * 10 + [0.002] * 5)


def test_momentum_schedules():
    p = {"momentum": 0.99, "momentum_schedule": "constant"}
    assert [momentum_at(s, p, 150) for s in (0, 70, 149)] == [0.99] * 3
    p["momentum_schedule"] = "cosine"  # 0.99 -> 1
    for s in (0, 50, 75, 149):
        assert momentum_at(s, p, 150) == pytest.approx(1 - 0.01 * (1 + math.cos(math.pi * s / 150)) / 2)
    p["momentum_schedule"] = "ramp"  # running mean of the query iterates, then the EMA
    assert [momentum_at(s, p, 150) for s in (0, 1, 3, 98, 99, 500)] == pytest.approx(
        [0, 1 / 2, 3 / 4, 98 / 99, 0.99, 0.99]
    )
    # ramp: the key encoder is the mean of the query weights it has seen
    key, qs = torch.zeros(()), [torch.tensor(float(v)) for v in (4, -2, 7, 1, 3)]
    for s, q in enumerate(qs):
        m = momentum_at(s, p, 150)
        key = m * key + (1 - m) * q
    assert float(key) == pytest.approx(sum(map(float, qs)) / len(qs))


def test_pretraining_takes_a_step_budget_with_per_step_schedules(data, tmp_path):
    # 18 training sequences of 24, batch 6: 3 steps per epoch; 7 steps = 3 epochs, the last cut to 1 step
    cfg = _pre(data, "train.steps=7", "train.warmup=0.3", "train.schedule=cosine",
               "pretrain.momentum_schedule=cosine")  # fmt: skip
    m = run_pretrain(cfg, tmp_path / "p", quiet=True)
    hist = m["history"]
    per_epoch = hist[0]["steps"]
    assert [h["steps"] for h in hist] == [per_epoch * (e + 1) for e in range(len(hist) - 1)] + [7]
    w = round(0.3 * 7)
    for h in hist:  # lr and momentum of each epoch's last step
        s = h["steps"] - 1
        lr = 0.05 * (s + 1) / w if s < w else 0.05 * (1 + math.cos(math.pi * (s - w) / (7 - w))) / 2
        assert h["lr"] == pytest.approx(lr)
        assert h["momentum"] == pytest.approx(1 - 0.1 * (1 + math.cos(math.pi * s / 7)) / 2)
    st = checkpoint.load(tmp_path / "p" / "last.pt")
    assert st["scheduler"]["last_epoch"] == 7


def test_resume_of_an_old_per_epoch_checkpoint_is_refused(data, tmp_path):
    cfg = _pre(data, "train.epochs=2")
    run_pretrain(cfg, tmp_path / "p", stop_after_epochs=1, quiet=True)
    st = checkpoint.load(tmp_path / "p" / "last.pt")
    del st["scheduler"]["counts"]  # as an older skelcl saved it
    checkpoint.save(tmp_path / "p" / "last.pt", st)
    with pytest.raises(SkelclError, match="stepped once per epoch"):
        run_pretrain(cfg, tmp_path / "p", resume=True, quiet=True)


def test_probe_is_logged_and_leaves_the_weights_unchanged(data, tmp_path):
    plain = run_pretrain(_pre(data), tmp_path / "a", quiet=True)
    probed = run_pretrain(_pre(data, "pretrain.probe_every=2", "pretrain.probe_sequences=6"), tmp_path / "b",
                          quiet=True)  # fmt: skip
    a, b = checkpoint.load(tmp_path / "a" / "last.pt"), checkpoint.load(tmp_path / "b" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for x, y in zip(plain["history"], probed["history"]):
        assert x["loss"] == y["loss"]
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    probes = [h for h in saved if "probe_frame_accuracy" in h]
    assert probes and all(
        0 <= h["probe_frame_accuracy"] <= 1 and 0 <= h["probe_avg_mAP"] <= 1 for h in probes
    )
    assert all(h["probe_seconds"] > 0 and h["probe_step"] % 2 == 0 for h in probes)
    assert not any(k.startswith("probe_") for h in plain["history"] for k in h)
    with pytest.raises(SkelclError, match="part pretraining reads"):
        run_pretrain(_pre(data, "pretrain.probe_every=2", "pretrain.probe_part=train"), tmp_path / "c",
                     quiet=True)  # fmt: skip


def test_probe_scores_separable_features(data, monkeypatch):
    """On an encoder whose features are the labels themselves the kNN probe is right on every frame."""
    from skelcl.data import open_cache
    from skelcl.train.probe import Probe

    cache = open_cache(data)
    cache = cache.subset(cache.split("xsub", "test"))
    probe = Probe(cache, 1, 6, 0, "cpu")
    C1 = len(cache.classes)

    class Oracle(torch.nn.Module):
        def forward(self, x):  # the probe's store yields each sequence alone: look its labels up
            return self.feat, {}

    enc = Oracle()
    real = probe.features

    def feats(encoder, store):
        out = []
        for i in range(len(store)):
            _, _, lab = store.batch([i])
            y = torch.as_tensor(lab[0]).clamp(min=0)
            enc.feat = torch.nn.functional.one_hot(y, C1).float().T[None, :, :, None]  # (1, C+1, T, 1)
            out.extend(real(encoder, store.__class__(store.cache.subset([i]), 1)))
        return out

    monkeypatch.setattr(probe, "features", feats)
    probe.bank = probe.query  # every query class is in the bank
    enc.train()
    res = probe(enc)
    assert res["probe_frame_accuracy"] > 0.9 and enc.training
    # features that carry no label: about chance
    monkeypatch.setattr(
        probe, "features", lambda e, st: [(torch.ones(len(y), 1), y) for _, y in feats(e, st)]
    )
    assert probe(enc)["probe_frame_accuracy"] < 0.6


def test_bn_calibration_of_frozen_pretrained_encoders(data, tmp_path):
    run_pretrain(_pre(data, "train.epochs=1"), tmp_path / "pre", quiet=True)
    _, enc = load_encoder_state(tmp_path / "pre")
    stats = [k for k in enc if k.endswith(("running_mean", "running_var"))]
    got = {}
    for mode in ("random", "all", "none"):
        cfg = _ft(data, "finetune.protocol=linear", f"finetune.pretrained={tmp_path / 'pre'}",
                  f"finetune.bn_calibrate={mode}")  # fmt: skip
        run_finetune(cfg, tmp_path / mode, quiet=True)
        model = checkpoint.load(tmp_path / mode / "last.pt")["model"]
        got[mode] = {k: model["backbone." + k] for k in stats}
        log = (tmp_path / mode / "log.txt").read_text()
        assert ("frozen pretrained encoder: BatchNorm statistics calibrated" in log) == (mode == "all")
    for k in stats:  # random / none: the pretraining statistics; all: every BN re-estimated
        assert torch.equal(got["random"][k], enc[k]) and torch.equal(got["none"][k], enc[k])
        assert not torch.equal(got["all"][k], enc[k]), k
    # none: a frozen random encoder keeps its initial statistics (mean 0, variance 1)
    run_finetune(
        _ft(data, "finetune.protocol=linear", "finetune.bn_calibrate=none"), tmp_path / "r", quiet=True
    )
    model = checkpoint.load(tmp_path / "r" / "last.pt")["model"]
    means = [v for k, v in model.items() if k.startswith("backbone.") and k.endswith("running_mean")]
    assert means and all(torch.equal(v, torch.zeros_like(v)) for v in means)


def test_probe_keys_get_their_own_curves_panel():
    from skelcl.study.report import curve_panels

    hist = [{"epoch": 1, "loss": 5.0, "probe_frame_accuracy": 0.3, "probe_avg_mAP": 0.1, "probe_step": 4,
             "probe_seconds": 0.5}, {"epoch": 2, "loss": 4.0}]  # fmt: skip
    panels = curve_panels(hist, {})
    (title,) = [t for t, s in panels.items() if any(k == "probe_frame_accuracy" for _, k, _, _ in s)]
    assert {k for _, k, _, _ in panels[title]} == {"probe_frame_accuracy", "probe_avg_mAP"}
    assert "probe" in title and not any(k == "probe_step" for s in panels.values() for _, k, _, _ in s)
