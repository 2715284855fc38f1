"""Localization protocols: what trains under linear / frozen_fusion / finetune, frozen random encoders with
calibrated BatchNorm statistics, fixed step budgets, and predict on every protocol's checkpoint."""

import math
import re
import subprocess
import sys

import pytest
import torch
from helpers import SMALL

from skelcl.cli import main
from skelcl.data.synthetic import generate_cache
from skelcl.errors import SkelclError
from skelcl.models import SimpleHead
from skelcl.train import config
from skelcl.train.checkpoint import load
from skelcl.train.finetune import (
    PROTOCOLS,
    build_localizer,
    calibrate_bn,
    protocol_head,
    run_finetune,
    schedule_config,
)
from skelcl.train.pretrain import load_encoder_state, run_pretrain


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_cache(tmp_path_factory.mktemp("data") / "tiny", 24, 7, config=SMALL, progress=False)


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("pre") / "pre"
    cfg = config.resolve("pretrain_skeletonclr", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=1", "train.batch_size=6",
        "train.num_threads=2", "pretrain.queue_size=8", "pretrain.snippet_queue_size=40"])  # fmt: skip
    run_pretrain(cfg, run, quiet=True)
    return run


def _cfg(data, *extra):
    return config.resolve("finetune", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=1", "train.batch_size=4",
        "train.num_threads=2", "train.lr=0.01", "train.max_frames=60", "finetune.val_fraction=0",
        "train.eval_every=0", *extra])  # fmt: skip


def _changed(a: dict, b: dict) -> set:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_linear_probe_trains_only_its_linear_layer(data, pretrained, tmp_path):
    m = run_finetune(_cfg(data, "finetune.protocol=linear", f"finetune.pretrained={pretrained}"),
                     tmp_path / "lin", quiet=True)  # fmt: skip
    st = load(tmp_path / "lin" / "last.pt")
    assert st["head"] == "simple" and m["head"] == "simple"
    _, enc = load_encoder_state(pretrained)
    model = st["model"]
    # the encoder (weights and BN statistics) is exactly the pretrained one
    backbone = {k[len("backbone.") :]: v for k, v in model.items() if k.startswith("backbone.")}
    assert not _changed(backbone, enc)
    # the head is one linear layer, and it trained
    head = {k for k in model if not k.startswith("backbone.")}
    assert head == {"head.classifier.weight", "head.classifier.bias"}
    torch.manual_seed(0)
    fresh, _ = build_localizer(st["config"], st["num_outputs"])
    assert isinstance(fresh.head, SimpleHead)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == head
    assert _changed({k: fresh.state_dict()[k] for k in head}, {k: model[k] for k in head}) == head


def test_frozen_random_encoder_gets_calibrated_bn_and_no_gradient_steps(data, tmp_path):
    for proto in ("linear", "frozen_fusion"):
        cfg = _cfg(data, f"finetune.protocol={proto}", "train.seed=3")
        n_train = run_finetune(cfg, tmp_path / proto, quiet=True)["train_sequences"]
        model = load(tmp_path / proto / "last.pt")["model"]
        torch.manual_seed(3)  # run_finetune seeds torch the same way before building the model
        init = build_localizer(cfg, load(tmp_path / proto / "last.pt")["num_outputs"])[0].state_dict()
        changed = _changed(init, model)
        bb = {k for k in changed if k.startswith("backbone.")}
        stats = {k for k in init if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))}
        assert stats and bb <= stats | {k for k in init if k.endswith("num_batches_tracked")}
        assert stats <= changed  # every BN's statistics were estimated
        assert {k for k in changed if k.startswith("head.")}  # the head trained
        log = (tmp_path / proto / "log.txt").read_text()
        assert f"BatchNorm statistics calibrated on {n_train} of the {n_train} training sequences" in log


def test_calibrate_bn_averages_batch_statistics_without_changing_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 1), torch.nn.BatchNorm1d(3))
    net.eval()
    w = {k: v.clone() for k, v in net.state_dict().items()}
    xs = [torch.randn(4, 2, 5) * (i + 1) + i for i in range(3)]
    assert calibrate_bn(net, xs) == 3
    with torch.no_grad():
        hs = [net[0](x) for x in xs]
    means = torch.stack([h.mean(dim=(0, 2)) for h in hs]).mean(0)
    var = torch.stack([h.var(dim=(0, 2), unbiased=True) for h in hs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, means)
    torch.testing.assert_close(net[1].running_var, var)
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.equal(net.state_dict()[k], w[k])
    assert not net.training and net[1].momentum == 0.1
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(SkelclError, match="no batches"):
        calibrate_bn(net, [])


def test_fixed_step_budget_whatever_the_label_fraction(data, tmp_path):
    steps = {}
    for frac in (0.25, 1.0):
        cfg = _cfg(data, "train.steps=7", f"finetune.label_fraction={frac}", "train.schedule=cosine")
        m = run_finetune(cfg, tmp_path / f"f{frac}", quiet=True)
        steps[frac] = (m["steps"], m["epochs"], m["labeled_sequences"])
        assert m["history"][-1]["steps"] == 7
        # `lr` is the rate of the epoch's last step: step 7 of 7 runs at cosine(6 / 7), 0 comes after it
        assert m["history"][-1]["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 6 / 7)))
    # 17 training sequences, batch 4: 25 % -> 4 labeled, 1 step per epoch; 100 % -> 5 steps per epoch
    assert steps == {0.25: (7, 7, 4), 1.0: (7, 2, 17)}
    t = {"epochs": 40, "steps": 1000, "milestones": [30, 35], "schedule": "step"}
    assert schedule_config(t)["epochs"] == 1000 and schedule_config(t)["milestones"] == [750, 875]
    assert schedule_config({**t, "steps": 0}) == {**t, "steps": 0}


def test_protocol_heads_and_errors():
    f = {"protocol": "linear", "head": None}
    assert protocol_head(f) == "simple"
    assert protocol_head({**f, "protocol": "frozen_fusion"}) == "ufusion"
    assert protocol_head({**f, "protocol": "finetune"}) == "ufusion"
    assert protocol_head({"protocol": "finetune", "head": "simple"}) == "simple"
    with pytest.raises(SkelclError, match="does not fit protocol linear"):
        protocol_head({"protocol": "linear", "head": "ufusion"})
    with pytest.raises(SkelclError, match="finetune.protocol must be one of"):
        protocol_head({"protocol": "semi", "head": None})


def test_finetune_help_lists_exactly_the_protocols():
    out = subprocess.run([sys.executable, "-m", "skelcl", "finetune", "--help"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    listed = re.search(r"finetune\.protocol: ([\w, ]+)\)", " ".join(out.split())).group(1)
    assert [p.strip() for p in listed.split(",")] == list(PROTOCOLS)


def test_predict_reads_every_protocols_checkpoint(data, pretrained, tmp_path):
    for proto in PROTOCOLS:
        run = tmp_path / proto
        m = run_finetune(_cfg(data, f"finetune.protocol={proto}", f"finetune.pretrained={pretrained}"), run,
                         quiet=True)  # fmt: skip
        assert load(run / "last.pt")["protocol"] == proto
        pred = tmp_path / f"pred_{proto}"
        assert main(["predict", "--ckpt", str(run), "--data", str(data), "--split", "xsub",
                     "--out", str(pred)]) == 0  # fmt: skip
        assert len(list(pred.glob("*.txt"))) == m["test_sequences"], proto


def test_calibration_reads_a_seeded_subset_of_at_most_the_cap(data, monkeypatch):
    from skelcl.data import open_cache
    from skelcl.train import finetune
    from skelcl.train.data import SequenceStore

    monkeypatch.setattr(finetune, "CALIBRATION_SEQUENCES", 5)
    store = SequenceStore(open_cache(data), 1)
    xs = list(finetune.calibration_batches(store, 2, 60, 0, "cpu"))
    assert [x.shape[0] for x in xs] == [2, 2, 1] and all(x.shape[1] <= 60 for x in xs)
    again = list(finetune.calibration_batches(store, 2, 60, 0, "cpu"))
    assert all(torch.equal(a, b) for a, b in zip(xs, again))  # seeded
