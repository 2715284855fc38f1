"""Training-speed features: the background prefetch of batches (same batches, same run) and train.compile."""

import os
import re
import threading

import pytest
import torch
from helpers import SMALL

from skelcl import augment
from skelcl.data import open_cache
from skelcl.data.synthetic import generate_cache
from skelcl.train import config
from skelcl.train.checkpoint import load
from skelcl.train.data import Prefetcher, SequenceStore, epoch_batches, finetune_feed, pretrain_feed
from skelcl.train.finetune import run_finetune
from skelcl.train.pretrain import run_pretrain

INDUCTOR = os.environ.get("SKELCL_TEST_INDUCTOR") == "1"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate_cache(tmp_path_factory.mktemp("data") / "tiny", 14, 3, config=SMALL, progress=False)


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is None and b is None


@pytest.mark.parametrize("recipe", ["skeletonclr", "aimclr"])
def test_prefetched_batches_equal_inline_batches(tiny, recipe):
    store = SequenceStore(open_cache(tiny), 2)
    rec = augment.load_recipe(recipe)
    for epoch in (0, 3):
        batches = epoch_batches(len(store), 4, 7, epoch, drop_last=True)
        feeds = [
            list(pretrain_feed(store, batches, rec, 7, epoch, "numba", 19, "cpu", prefetch=p)) for p in (0, 1)
        ]
        assert len(feeds[0]) == len(batches) == 3
        assert _same(feeds[0], feeds[1])
        views, align = feeds[1][0]
        assert len(views) == len(rec.views) and views[0].shape[:2] == (4, 150) and align.shape == (4, 19)
    # consecutive epochs differ (the test would pass trivially if every batch were the same)
    a = list(pretrain_feed(store, epoch_batches(len(store), 4, 7, 0, True), rec, 7, 0, "numba", 0, "cpu"))
    b = list(pretrain_feed(store, epoch_batches(len(store), 4, 7, 1, True), rec, 7, 1, "numba", 0, "cpu"))
    assert a[0][1] is None and not torch.equal(a[0][0][0], b[0][0][0])


def test_prefetched_finetune_batches_equal_inline_batches(tiny):
    store = SequenceStore(open_cache(tiny), 1)
    rec = augment.load_recipe("finetune")
    batches = epoch_batches(len(store), 3, 1, 2, drop_last=False)
    feeds = [
        list(finetune_feed(store, batches, rec, 1, 2, "numba", 60, "cpu", prefetch=p)) for p in (False, True)
    ]
    assert len(feeds[0]) == 5 and _same(feeds[0], feeds[1])
    view, labels = feeds[1][-1]
    assert view.shape[1] <= 60 and labels.dtype == torch.int64 and labels.shape == view.shape[:2]


def test_prefetcher_overlaps_orders_and_raises():
    started = {i: threading.Event() for i in range(5)}

    def make(i):
        started[i].set()
        if i == 3:
            raise ValueError("bad item 3")
        return i * 10

    got = []
    feed = Prefetcher(make, 5, prefetch=True)
    with pytest.raises(ValueError, match="bad item 3"):
        for item in feed:
            # while the caller holds item i, item i + 1 is made in the background
            assert started[item // 10 + 1].wait(timeout=30)
            got.append(item)
    assert got == [0, 10, 20] and feed.wait_s >= 0
    inline = Prefetcher(lambda i: i, 4, prefetch=False)
    assert list(inline) == [0, 1, 2, 3] and len(inline) == 4
    # stopping early leaves no thread running
    feed = Prefetcher(lambda i: i, 100, prefetch=True)
    for item in feed:
        if item == 2:
            break
    assert not any(t.name.startswith("skelcl-prefetch") for t in threading.enumerate())


def _cfg(data, *extra):
    return config.resolve("pretrain_skeletonclr", [
        f"data.path={data}", "data.bodies=1", "model.width=0.125", "train.epochs=1", "train.batch_size=4",
        "train.num_threads=1", "pretrain.queue_size=8", "pretrain.snippet_queue_size=40",
        "pretrain.momentum=0.9", *extra])  # fmt: skip


def test_pretraining_with_and_without_prefetch_is_identical(tiny, tmp_path):
    ma = run_pretrain(_cfg(tiny, "train.prefetch=true"), tmp_path / "a", quiet=True)
    mb = run_pretrain(_cfg(tiny, "train.prefetch=false"), tmp_path / "b", quiet=True)
    a, b = load(tmp_path / "a" / "last.pt")["model"], load(tmp_path / "b" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ma["final"]["loss"] == mb["final"]["loss"]
    assert 0 <= ma["data_wait_share"] <= 1 and 0 < mb["data_wait_share"] <= 1
    assert "waited for data" in (tmp_path / "a" / "log.txt").read_text()


def test_finetuning_logs_its_data_wait_share(tiny, tmp_path):
    cfg = config.resolve("finetune", [
        f"data.path={tiny}", "data.bodies=1", "model.width=0.125", "train.epochs=2", "train.batch_size=4",
        "train.num_threads=1", "train.prefetch=false"])  # fmt: skip
    m = run_finetune(cfg, tmp_path / "ft", quiet=True)
    shares = [h["data_wait_share"] for h in m["history"]]
    assert len(shares) == 2 and all(0 < x <= 1 for x in shares)  # inline batches: some wait, never > all
    assert m["data_wait_share"] == pytest.approx(sum(shares) / 2)
    log = (tmp_path / "ft" / "log.txt").read_text().splitlines()
    epochs = [x for x in log if re.search(r"epoch \d/2: ", x)]
    assert sum("waited for data" in x for x in epochs) == 2


@pytest.mark.slow
def test_train_compile_runs_a_step(tiny, tmp_path, monkeypatch):
    """train.compile=true compiles both encoders in place (state-dict names unchanged) and trains. The
    inductor backend needs minutes to compile on a 2-core CPU, so this runs dynamo's tracing of the model
    with the "eager" backend; SKELCL_TEST_INDUCTOR=1 runs the real inductor compile (several minutes)."""
    compiled = []
    original = torch.nn.Module.compile

    def compile_traced(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return original(self, *args, **kwargs) if INDUCTOR else original(self, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_traced)
    torch._dynamo.reset()
    m = run_pretrain(_cfg(tiny, "train.compile=true"), tmp_path / "c", quiet=True)
    ref = run_pretrain(_cfg(tiny), tmp_path / "e", quiet=True)
    assert compiled == ["Backbone", "Backbone"]
    a, b = load(tmp_path / "c" / "last.pt")["model"], load(tmp_path / "e" / "last.pt")["model"]
    assert a.keys() == b.keys()  # no _orig_mod. prefixes: checkpoints load into an uncompiled model
    assert abs(m["final"]["loss"] - ref["final"]["loss"]) < 1e-3 * abs(ref["final"]["loss"])
    torch._dynamo.reset()
