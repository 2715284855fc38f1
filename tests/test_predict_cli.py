"""`skelcl predict` as a user runs it: what is predicted by default, what it writes, how it treats an existing
output folder, and `skelcl evaluate` on its output."""

import json
from argparse import Namespace

import numpy as np
import pytest

from skelcl.cli import main
from skelcl.data import open_cache
from skelcl.errors import SkelclError
from skelcl.eval.io import files_to_replace, write_manifest


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(cache, fine-tuning run) at toy size: 14 synthetic sequences, one epoch, width 0.125."""
    root = tmp_path_factory.mktemp("predict")
    cache, ft = root / "data", root / "ft"
    assert main(["synth", "--out", str(cache), "--sequences", "14", "--seed", "3"]) == 0
    args = ["finetune", "--data", str(cache), "--out", str(ft), "--quiet", "model.width=0.125",
            "train.epochs=1", "train.batch_size=4", "data.bodies=1"]  # fmt: skip
    assert main(args) == 0
    return cache, ft


def predict(run, *args):
    cache, ft = run
    return main(["predict", "--ckpt", str(ft), "--data", str(cache), *map(str, args)])


def names_of(cache, part=None):
    ds = open_cache(cache)
    if part is not None:
        ds = ds.subset(ds.split("xsub", part))
    return sorted(str(n) for n in ds.names)


def test_default_is_the_test_part_with_class_names(run, tmp_path, capsys):
    cache, ft = run
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    assert predict(run, "--out", pred, "--gt-out", gt) == 0
    out = capsys.readouterr()
    test_names = names_of(cache, "test")
    assert 0 < len(test_names) < len(names_of(cache))
    assert f"predicting part 'test' of split 'xsub' ({len(test_names)} of 14 sequences" in out.err
    assert sorted(p.stem for p in pred.glob("*.txt")) == test_names
    assert sorted(p.stem for p in gt.glob("*.txt")) == test_names
    classes = open_cache(cache).classes
    doc = json.loads((pred / "classes.json").read_text())
    assert doc["classes"] == list(classes[:-1]) and doc["label_base"] == 1
    manifest = json.loads((pred / "predict.json").read_text())
    assert sorted(manifest["files"]) == sorted([f"{n}.txt" for n in test_names] + ["classes.json"])
    assert manifest["kind"] == "prediction" and "part 'test'" in manifest["selection"]
    # ground truth files hold the cache's segments (1-based ids)
    ds = open_cache(cache)
    i = [str(n) for n in ds.names].index(test_names[0])
    labels = ds[i].labels
    first = labels[labels != len(classes) - 1][0]
    assert (gt / f"{test_names[0]}.txt").read_text().split(",")[0] == str(first + 1)
    # evaluate reads both folders and shows class names per class
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--per-class"]) == 0
    printed = capsys.readouterr().out
    present = {int(x) for n in test_names for x in np.unique(ds[[str(m) for m in ds.names].index(n)].labels)}
    for c in present - {len(classes) - 1}:
        assert f"  {classes[c]} " in printed


def test_all_train_part_and_bad_split_say_what_they_predict(run, tmp_path, capsys):
    assert predict(run, "--out", tmp_path / "all", "--all", "--proposals", "argmax") == 0
    err = capsys.readouterr().err
    assert "every sequence" in err and "training sequences of this model included" in err
    assert len(list((tmp_path / "all").glob("*.txt"))) == 14
    assert predict(run, "--out", tmp_path / "train", "--part", "train", "--proposals", "argmax") == 0
    err = capsys.readouterr().err
    assert "part 'train' of split 'xsub'" in err and "warning" in err and "trained on" in err
    assert predict(run, "--out", tmp_path / "bad", "--split", "nope") == 2
    assert "no split scheme 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert predict(run, "--out", tmp_path / "bad", "--part", "val") == 2
    assert "not 'val'" in capsys.readouterr().err
    assert predict(run, "--out", tmp_path / "bad", "--all", "--part", "test") == 2
    assert "--all predicts every sequence" in capsys.readouterr().err


def test_run_without_split_predicts_everything_loudly(run):
    from skelcl.train.commands import _predict_selection

    cache = open_cache(run[0])
    args = Namespace(all=False, split=None, part=None, data="D")
    positions, what, warn = _predict_selection(args, cache, {"config": {"data": {"split": None}}})
    assert list(positions) == list(range(len(cache)))
    assert "every sequence" in what and "no split" in what and "trained on these sequences" in warn
    with pytest.raises(SkelclError, match="--part needs --split"):
        _predict_selection(Namespace(all=False, split=None, part="test", data="D"), cache,
                           {"config": {"data": {"split": None}}})  # fmt: skip


def test_existing_out_is_refused_or_replaced(run, tmp_path, capsys):
    cache, _ = run
    out = tmp_path / "pred"
    assert predict(run, "--out", out, "--all", "--proposals", "argmax") == 0
    (out / "notes.md").write_text("mine")
    before = {p.name: p.read_text() for p in out.iterdir()}
    capsys.readouterr()
    # without --overwrite: refused, nothing touched
    assert predict(run, "--out", out) == 2
    assert "is not empty" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    # with --overwrite: the earlier prediction's files go (no stale videos), other files stay
    assert predict(run, "--out", out, "--overwrite") == 0
    capsys.readouterr()
    assert sorted(p.stem for p in out.glob("*.txt")) == names_of(cache, "test")
    assert (out / "notes.md").read_text() == "mine"
    # a NAME.txt predict did not write is never deleted: refused
    (out / "extra.txt").write_text("1,0,5,0.5\n")
    assert predict(run, "--out", out, "--overwrite") == 2
    assert "extra.txt that skelcl predict did not write" in capsys.readouterr().err
    assert (out / "extra.txt").exists() and len(list(out.glob("*.txt"))) == len(names_of(cache, "test")) + 1
    assert predict(run, "--out", out, "--gt-out", out) == 2
    assert "--gt-out must be another folder" in capsys.readouterr().err


def test_files_to_replace(tmp_path):
    assert files_to_replace(tmp_path / "new", overwrite=False) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(SkelclError, match="is a file, not a folder"):
        files_to_replace(tmp_path / "file", overwrite=True)
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("")
    (d / "keep.md").write_text("")
    write_manifest(d, ["a.txt", "../outside.txt", "classes.json"], {"kind": "prediction"})
    got = files_to_replace(d, overwrite=True)
    assert sorted(p.name for p in got) == ["a.txt", "predict.json"]  # listed, present, inside the folder
    (d / "predict.json").write_text("{broken")
    with pytest.raises(SkelclError, match="predict.json: not a predict.json"):
        files_to_replace(d, overwrite=True)
