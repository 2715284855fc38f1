"""Config overrides and their errors; checkpoints: atomic round trip and corruption detection."""

import os
import re

import pytest
import torch

from skelcl.errors import SkelclError
from skelcl.train import checkpoint, config


def test_builtin_configs_load():
    names = (
        "pretrain_skeletonclr",
        "pretrain_aimclr",
        "finetune",
        "demo",
        "experiment",
        "study_snippet",
    )
    for name in names:
        cfg = config.load_config(name)
        assert isinstance(cfg, dict) and cfg
    assert config.load_config("pretrain_aimclr")["pretrain"]["method"] == "aimclr"


def test_overrides_parse_yaml_values():
    cfg = config.resolve(
        "pretrain_skeletonclr",
        ["train.epochs=3", "model.strides=[5, 8]", "pretrain.snippet=false", "data.path=/x y",
         "train.lr=1e-3", "data.split=null"],
    )  # fmt: skip
    assert cfg["train"]["epochs"] == 3
    assert cfg["model"]["strides"] == [5, 8]
    assert cfg["pretrain"]["snippet"] is False
    assert cfg["data"]["path"] == "/x y"
    assert cfg["train"]["lr"] == pytest.approx(1e-3)
    assert cfg["data"]["split"] is None
    base = config.load_config("pretrain_skeletonclr")
    assert base["train"]["epochs"] == 600  # the base config is not modified


@pytest.mark.parametrize(
    "item, match",
    [
        ("train.epoch=3", "unknown key 'train.epoch'"),
        ("trian.epochs=3", "unknown key 'trian'"),
        ("train.epochs", "expected KEY=VALUE"),
        ("=3", "empty key"),
        ("train=3", "is a section"),
        ("train.epochs.x=1", "unknown key"),
        ("train.lr=[1, 2", "not valid YAML"),
    ],
)
def test_override_errors_name_the_key(item, match):
    with pytest.raises(SkelclError, match=match):
        config.resolve("finetune", [item])


def test_unknown_config_name_and_bad_file(tmp_path):
    with pytest.raises(SkelclError, match="no config named"):
        config.load_config("pretrain_nothing")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(SkelclError, match="not valid YAML"):
        config.load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(SkelclError, match="mapping"):
        config.load_config(bad)


def test_merge_rejects_unknown_keys():
    base = {"a": {"b": 1, "c": 2}}
    assert config.merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}}
    with pytest.raises(SkelclError, match="a.x"):
        config.merge(base, {"a": {"x": 1}})


def _state():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(50, 40, generator=g), "epoch": 3, "nested": {"lst": [1, 2, 3]}}


def test_checkpoint_round_trip_and_no_temp_files(tmp_path):
    p = checkpoint.save(tmp_path / "sub" / "last.pt", _state())
    st = checkpoint.load(p)
    assert torch.equal(st["w"], _state()["w"]) and st["epoch"] == 3 and st["nested"]["lst"] == [1, 2, 3]
    checkpoint.save(p, {"epoch": 4})  # overwrite in place
    assert checkpoint.load(p) == {"epoch": 4}
    assert os.listdir(tmp_path / "sub") == ["last.pt"]


@pytest.mark.parametrize("cut", [0, 5, 30, 100, -1])
def test_truncated_checkpoint_is_an_error(tmp_path, cut):
    p = checkpoint.save(tmp_path / "last.pt", _state())
    data = p.read_bytes()
    p.write_bytes(data[:cut] if cut >= 0 else data[: len(data) // 2])
    with pytest.raises(SkelclError, match="last.pt"):
        checkpoint.load(p)


def test_modified_or_foreign_checkpoint_is_an_error(tmp_path):
    p = checkpoint.save(tmp_path / "last.pt", _state())
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(SkelclError, match="corrupt"):
        checkpoint.load(p)
    q = tmp_path / "plain.pt"
    torch.save(_state(), q)  # a plain torch file is not ours
    with pytest.raises(SkelclError, match="not a skelcl checkpoint"):
        checkpoint.load(q)
    with pytest.raises(SkelclError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.pt")


def test_override_types_are_checked():
    with pytest.raises(SkelclError, match="expected a number"):
        config.resolve("finetune", ["train.epochs=many"])
    with pytest.raises(SkelclError, match="true or false"):
        config.resolve("pretrain_skeletonclr", ["pretrain.snippet=maybe"])
    assert config.resolve("finetune", ["train.epochs=4.0"])["train"]["epochs"] == 4


def test_every_shipped_config_validates_and_every_key_is_in_the_table():
    names = config.builtin_names()
    expected = {"pretrain_skeletonclr", "pretrain_rvtclr", "pretrain_cpu", "finetune", "study_snippet"}
    assert expected <= set(names)
    for name in names:
        config.validate(config.load_config(name), name)  # raises on a key missing from KEYS


@pytest.mark.parametrize(
    "item, match",
    [
        ("model.strides=5", "model.strides must be a list of integers"),
        ("model.strides=[2, 11]", "model.strides must be a list of integers each in [2, 10]"),
        ("model.strides=[5, 5]", "distinct"),
        ("data.bodies=1.5", "data.bodies must be an integer >= 1, got 1.5"),
        ("data.bodies=0", "data.bodies must be an integer >= 1, got 0"),
        ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
        ("train.epochs=-1", "train.epochs must be an integer >= 1, got -1"),
        ("train.lr=0", "train.lr must be a number > 0"),
        ("train.optimizer=rmsprop", "train.optimizer must be one of sgd, adam"),
        ("train.device=tpu", "train.device must be one of auto, cpu, cuda"),
        ("model.width=-1", "model.width must be a number > 0, got -1"),
        ("finetune.label_fraction=1.5", "finetune.label_fraction must be a number in (0, 1]"),
        ("finetune.protocol=semi", "finetune.protocol must be one of"),
        ("train.milestones=[35, 30]", "increasing"),
        ("data.split=3", "data.split must be a string"),
    ],
)
def test_config_values_are_checked(item, match):
    with pytest.raises(SkelclError, match=re.escape(match)):
        config.resolve("finetune", [item])


def test_cuda_on_a_machine_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SkelclError, match="train.device=cuda but CUDA is not available"):
        config.resolve("pretrain_skeletonclr", ["train.device=cuda"])


def test_unknown_key_in_a_config_file_is_an_error(tmp_path):
    cfg = config.load_config("finetune")
    cfg["train"]["epochz"] = 3
    p = tmp_path / "mine.yaml"
    p.write_text(config.dump(cfg))
    with pytest.raises(SkelclError, match="unknown key 'train.epochz'"):
        config.resolve(str(p))


def test_demo_sections_are_checked_as_the_run_config_keys():
    with pytest.raises(SkelclError, match="demo: pretrain.train.epochs must be an integer >= 1"):
        config.resolve("demo", ["pretrain.train.epochs=0"])
    with pytest.raises(SkelclError, match="pretrain.pretrain.match must be one of"):
        config.resolve("demo", ["pretrain.pretrain.match=nearest"])


def test_builtin_config_name_is_not_shadowed_by_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "finetune").mkdir()  # a folder named like a built-in
    (tmp_path / "demo").write_text("not: a config\n")
    assert config.load_config("finetune")["finetune"]["protocol"] in ("finetune", "linear")
    assert "pretrain" in config.load_config("demo")
    mine = tmp_path / "mine.yaml"
    mine.write_text("a: 1\n")
    assert config.load_config("mine.yaml") == {"a": 1}  # a .yaml suffix: a file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cfg").write_text("b: 2\n")
    assert config.load_config("sub/cfg") == {"b": 2}  # a separator: a file
    with pytest.raises(SkelclError, match="no config named 'cfg'"):
        config.load_config("cfg")
    with pytest.raises(SkelclError, match="does not exist"):
        config.load_config("missing.yaml")
