"""Training runs on a tiny synthetic cache: exact resume, learning, predict, CLI error paths."""

import json

import numpy as np
import pytest
import torch
from helpers import SMALL

from skelcl.cli import main
from skelcl.data.synthetic import generate_cache
from skelcl.errors import SkelclError
from skelcl.eval.io import read_segments_dir
from skelcl.train import config
from skelcl.train.checkpoint import load
from skelcl.train.data import SequenceStore, label_subset
from skelcl.train.finetune import evaluate_probs, run_finetune
from skelcl.train.pretrain import open_split, run_pretrain


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_cache(tmp_path_factory.mktemp("data") / "small", 48, 5, config=SMALL, progress=False)


def _pre_cfg(data, *extra):
    return config.resolve("pretrain_skeletonclr", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=2", "train.batch_size=6",
        "train.num_threads=2", "train.lr=0.05", "pretrain.queue_size=8", "pretrain.snippet_queue_size=40",
        "pretrain.momentum=0.9", *extra])  # fmt: skip


def _ft_cfg(data, *extra):
    return config.resolve("finetune", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=2", "train.batch_size=4",
        "train.num_threads=2", "train.lr=0.003", *extra])  # fmt: skip


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_pretrain_resume_is_exact(tiny, tmp_path):
    cfg = _pre_cfg(tiny, "pretrain.method=aimclr", "pretrain.recipe=aimclr", "pretrain.nn_warmup_epochs=1")
    run_pretrain(cfg, tmp_path / "a", quiet=True)
    out = run_pretrain(cfg, tmp_path / "b", stop_after_epochs=1, quiet=True)
    assert out["stopped"] and load(tmp_path / "b" / "last.pt")["epoch"] == 1
    run_pretrain(cfg, tmp_path / "b", resume=True, quiet=True)
    a, b = load(tmp_path / "a" / "last.pt"), load(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    _assert_same_state(a["model"], b["model"])
    assert int(a["model"]["queue.filled"]) == 8  # the queues travel with the model
    assert _strip(a["history"]) == _strip(b["history"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    for name in ("config.yaml", "metrics.json", "log.txt"):
        assert (tmp_path / "b" / name).is_file()
    assert any((tmp_path / "b" / "tb").iterdir())
    # log.txt ends with the results (those of metrics.json's "final"), for the resumed run too
    final = json.loads((tmp_path / "b" / "metrics.json").read_text())["final"]
    for run in ("a", "b"):
        last = (tmp_path / run / "log.txt").read_text().splitlines()[-1]
        assert "] final: " in last and f"loss {final['loss']:.4g}" in last and "epoch 2," in last, last


def test_finetune_resume_is_exact(tiny, tmp_path):
    cfg = _ft_cfg(tiny, "finetune.label_fraction=0.5")
    ma = run_finetune(cfg, tmp_path / "a", quiet=True)
    run_finetune(cfg, tmp_path / "b", stop_after_epochs=1, quiet=True)
    mb = run_finetune(cfg, tmp_path / "b", resume=True, quiet=True)
    _assert_same_state(load(tmp_path / "a" / "last.pt")["model"], load(tmp_path / "b" / "last.pt")["model"])
    assert ma["final"]["avg_mAP_0.1:0.5"] == mb["final"]["avg_mAP_0.1:0.5"]
    log = (tmp_path / "a" / "log.txt").read_text().splitlines()
    assert "] test: " in log[-1] and f"avg_mAP_0.1:0.5 {ma['final']['avg_mAP_0.1:0.5']:.4g}" in log[-1]
    assert f"frame_accuracy {ma['final']['frame_accuracy']:.4g}" in log[-1]
    assert sum("] test: " in x for x in log) == 1  # the results once
    assert ma["labeled_sequences"] == round(0.5 * ma["train_sequences"])


def test_label_subset_is_seeded():
    a, b = label_subset(100, 0.2, 0), label_subset(100, 0.2, 0)
    assert np.array_equal(a, b) and len(a) == 20 and len(set(a)) == 20
    assert not np.array_equal(a, label_subset(100, 0.2, 1))
    with pytest.raises(SkelclError, match="label_fraction"):
        label_subset(10, 0.0, 0)


def _chance_map(store, seed=0):
    """Best avg mAP of label-free predictors: random frame probabilities, and the class prior everywhere."""
    rng = np.random.default_rng(seed)
    C1 = store.cache.num_classes
    lengths = [len(store.get(i)[1]) for i in range(len(store))]
    labels = np.concatenate([store.get(i)[1] for i in range(len(store))])
    prior = np.bincount(labels[labels >= 0], minlength=C1) / (labels >= 0).sum()
    rand = [rng.dirichlet(np.ones(C1), size=n) for n in lengths]
    const = [np.tile(prior, (n, 1)) + 1e-3 * rng.random((n, C1)) for n in lengths]
    return max(evaluate_probs(p, store)["avg_mAP_0.1:0.5"] for p in (rand, const))


def test_training_learns(small, tmp_path):
    """Pretraining loss falls; a localizer on the pretrained encoder beats chance on held-out data."""
    pre = run_pretrain(_pre_cfg(small, "train.epochs=4", "train.batch_size=8", "pretrain.queue_size=0",
                                "pretrain.snippet_queue_size=0"), tmp_path / "pre", quiet=True)  # fmt: skip
    h = pre["history"]
    assert h[-1]["loss"] < h[0]["loss"]
    cfg = _ft_cfg(small, f"finetune.pretrained={tmp_path / 'pre'}", "train.epochs=15", "train.lr=0.005")
    m = run_finetune(cfg, tmp_path / "ft", quiet=True)
    losses = [r["loss"] for r in m["history"]]
    assert losses[-1] < 0.7 * losses[0]
    test = SequenceStore(open_split(cfg["data"], "test_part"), 1)
    chance = _chance_map(test)
    got = m["final"]["avg_mAP_0.1:0.5"]
    assert got > chance + 0.05, (got, chance)

    # predict writes one segment file per sequence, readable by the evaluation reader
    assert main(["predict", "--ckpt", str(tmp_path / "ft"), "--data", str(small), "--split", "xsub",
                 "--out", str(tmp_path / "pred"), "--gt-out", str(tmp_path / "gt")]) == 0  # fmt: skip
    segs = read_segments_dir(tmp_path / "pred")
    assert set(segs) == {str(n) for n in test.cache.names}
    js = tmp_path / "eval.json"
    assert main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--classes", "12", "--json", str(js)]) == 0  # fmt: skip
    # the files round-trip: the same mAP as the in-process evaluation
    assert abs(json.loads(js.read_text())["avg_mAP_0.1:0.5"] - got) < 1e-9


def test_cli_error_paths(tiny, tmp_path, capsys):
    def err(argv, match):
        assert main(argv) == 2
        msg = capsys.readouterr().err
        assert match in msg, msg

    err(["pretrain", "--data", str(tiny)], "give --out")
    err(["pretrain", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "nothing")], "nothing")
    err(["finetune", "--out", str(tmp_path / "x"), "--data", str(tiny), "train.epoch=1"], "train.epoch")
    err(["finetune", "--out", str(tmp_path / "x"), "--data", str(tiny), "train.epochs"], "KEY=VALUE")
    err(["pretrain", "--resume", str(tmp_path / "empty")], "no config.yaml")
    err(
        ["finetune", "--out", str(tmp_path / "x"), "--data", str(tiny), "--config", "nope"], "no config named"
    )
    err(["finetune", "--out", str(tmp_path / "lin"), "--data", str(tiny), "finetune.protocol=linear",
         "finetune.head=ufusion"], "does not fit protocol linear")  # fmt: skip

    base = ["--data", str(tiny), "data.bodies=1", "model.width=0.125", "train.epochs=2", "train.batch_size=6",
            "train.num_threads=2", "pretrain.queue_size=8", "pretrain.snippet_queue_size=40"]  # fmt: skip
    run = tmp_path / "pre"
    assert main(["pretrain", "--out", str(run), "--quiet", *base[:-2], "train.epochs=1"] + base[-2:]) == 0
    err(["pretrain", "--out", str(run), "--quiet", *base], "already holds a run")
    err(["pretrain", "--resume", str(run), "train.lr=3"], "override 'train.lr=3' is not allowed")
    assert not (tmp_path / "x").exists() and not (tmp_path / "lin").exists()  # failed starts write nothing
    err(["predict", "--ckpt", str(run), "--data", str(tiny), "--out", str(tmp_path / "p")],
        "not a localization checkpoint")  # fmt: skip
    ck = run / "last.pt"
    ck.write_bytes(ck.read_bytes()[:-100])  # truncated
    err(["pretrain", "--resume", str(run)], "corrupt")
    err(["finetune", "--out", str(tmp_path / "f"), "--data", str(tiny), "--pretrained", str(run)], "corrupt")
    assert json.loads((run / "metrics.json").read_text())["history"]


def test_cpu_amp_turns_on_bf16_autocast_on_cpu_only():
    """train.cpu_amp runs the CPU forward under bf16 autocast; train.amp alone leaves a CPU run in float32."""
    from skelcl.models import Backbone
    from skelcl.train.run import autocast

    cpu = torch.device("cpu")
    m, x = Backbone(width=0.125), torch.randn(1, 8, 1, 25, 3)
    with autocast(cpu, True):
        assert m(x)[0].dtype == torch.float32
    with autocast(cpu, False, True):
        assert torch.is_autocast_enabled("cpu")
        assert m(x)[0].dtype == torch.bfloat16
    assert config.resolve("pretrain_cpu", ["train.cpu_amp=true"])["train"]["cpu_amp"] is True
    with pytest.raises(SkelclError, match="cpu_amp"):
        config.resolve("pretrain_cpu", ["train.cpu_amp=3"])


def test_predictions_do_not_depend_on_the_batch_size(tiny):
    """predict_probs gives every sequence the probabilities it gets alone, for any eval batch size; a
    padded batch of unequal lengths would not (shown on the first two sequences of unequal length)."""
    from skelcl.data.cache import open_cache
    from skelcl.models import Backbone, Localizer
    from skelcl.train.finetune import predict_probs

    store = SequenceStore(open_cache(tiny), 1)
    torch.manual_seed(0)
    model = Localizer(Backbone(width=0.125), store.cache.num_classes, head="ufusion").eval()
    with torch.no_grad():
        for m in model.modules():  # BatchNorm with non-trivial statistics: padded zeros become nonzero
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        alone = [torch.softmax(model(torch.as_tensor(store.batch([i])[0]))[0], -1).numpy() for i in range(6)]
        lengths = [len(a) for a in alone]
        for bs in (1, 4, 32):
            probs = predict_probs(model, store, "cpu", bs)
            assert [len(p) for p in probs[:6]] == lengths
            for p, a in zip(probs, alone):
                np.testing.assert_allclose(p, a, rtol=1e-5, atol=1e-6)
        i, j = next((i, j) for i in range(6) for j in range(6) if lengths[i] < lengths[j])
        padded = torch.softmax(model(torch.as_tensor(store.batch([i, j])[0]))[0], -1).numpy()[: lengths[i]]
        assert np.abs(padded - alone[i]).max() > 1e-4
