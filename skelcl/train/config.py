"""YAML run configs with dotted command-line overrides, and the table that checks every key.

A config is a nested dict loaded from a YAML file; a file with `base: NAME` holds only the keys it
changes in config NAME (the presets pretrain_cpu and finetune_cpu are written that way). A built-in
config is named without the .yaml suffix (e.g. "pretrain_cpu"; `skelcl config list` shows them) and is
always the one in skelcl/configs/: a file of that name in the working directory never hides it. An
argument is read as a file only when it looks like a path (it holds a path separator or ends in .yaml /
.yml).

Overrides are strings "a.b.c=value"; the value is parsed as YAML ("3" -> 3, "[5, 8]" -> [5, 8],
"null" -> None). Only keys that exist in the base config may be set; an unknown key or a malformed
override raises SkelclError naming it.

After overrides, validate(cfg) checks every leaf key against KEYS (type and range or choices) and raises
a one-line SkelclError naming the key. The rule for keys: every leaf key of a config must have an entry in
KEYS; a key that has none is an error ("unknown key"), so a typo in a YAML file is caught and a new
config key must be added to KEYS together with the code that reads it (tests/test_train_config_ckpt.py
checks that every shipped config validates).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from skelcl.errors import SkelclError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

# Built-in YAML files that are not run configs (augment.yaml holds augmentation recipes).
NOT_CONFIGS = ("augment",)


# ---------------------------------------------------------------------------------------------------
# The key table.


@dataclass(frozen=True)
class Key:
    """What one config key may hold.

    kind: "int" | "float" | "bool" | "str" | "ints" (list of ints) | "strs" (list of str) | "any"
          (checked by the code that reads it) | "section:NAME" (a mapping of overrides of config section
          NAME, as in demo.yaml's `pretrain.train`: its keys are checked as NAME.*).
    lo, hi: inclusive bounds for numbers (for "ints": for each element); lo_open: lo itself excluded.
    choices: allowed values (for "strs": for each element). null: None is allowed.
    also: extra string values allowed besides the kind, e.g. ("auto",) for "an integer or auto".
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple = ()
    null: bool = False
    help: str = ""
    also: tuple = ()


INT0 = Key("int", 0)  # integer >= 0
INT1 = Key("int", 1)  # integer >= 1
POS = Key("float", 0, lo_open=True)  # number > 0
NONNEG = Key("float", 0)  # number >= 0
BOOL = Key("bool")

KEYS: dict[str, Key] = {
    # data (pretrain_*, finetune; demo/experiment: sequences, bodies, seed)
    "data.path": Key("str", null=True, help="cache directory (--data)"),
    "data.split": Key("str", null=True, help="split scheme; null: every sequence"),
    "data.part": Key("str", help="split part used for pretraining"),
    "data.train_part": Key("str", help="split part for fine-tuning (validation is carved from it)"),
    "data.test_part": Key("str", help="split part evaluated at the end"),
    "data.bodies": Key("int", 1, help="body slots fed to the model"),
    "data.memory_mb": INT0,
    "data.sequences": INT1,  # demo / experiment: generated synthetic sequences
    "data.seed": INT0,  # demo / experiment: synthetic data seed
    # model
    "model.backbone": Key("str", choices=("stgcn", "agcn")),
    "model.width": POS,
    "model.strides": Key("ints", 2, 10, help="distinct 1-based layers (2..10) with temporal stride 2"),
    # pretrain
    "pretrain.method": Key("str", choices=("skeletonclr", "rvtclr", "aimclr")),
    "pretrain.snippet": BOOL,
    "pretrain.recipe": Key("str", help="augmentation recipe name or YAML path"),
    "pretrain.dim": INT1,
    "pretrain.queue_size": Key("int", 0, also=("auto",), help="auto: one epoch of keys, at most 32768"),
    "pretrain.snippet_queue_size": Key("int", 0, also=("auto",), help="auto: one epoch, at most 65536"),
    "pretrain.queue_dtype": Key("str", choices=("auto", "float32", "bfloat16", "float16")),
    "pretrain.momentum": Key("float", 0, 1),
    "pretrain.momentum_schedule": Key("str", choices=("constant", "cosine", "ramp"), help="key momentum"),
    "pretrain.probe_every": Key("int", 0, help="online probe every N optimizer steps (0: off)"),
    "pretrain.probe_part": Key("str", help="split part the probe reads (never pretrained on)"),
    "pretrain.probe_sequences": Key("int", 2, help="sequences of probe_part the probe uses"),
    "pretrain.temperature": POS,
    "pretrain.num_snippets": INT1,
    "pretrain.snippet_weight": NONNEG,
    "pretrain.match": Key("str", choices=("feature", "cosine", "aligned")),
    "pretrain.exclude_same_video": BOOL,
    "pretrain.snippet_neighbours": INT0,
    "pretrain.d3m_weight": NONNEG,
    "pretrain.nn_topk": INT0,
    "pretrain.nn_warmup_epochs": INT0,
    "pretrain.global_exclude_same_video": BOOL,
    "pretrain.snippet_nn_topk": INT0,
    "pretrain.snippet_nn_warmup_epochs": INT0,
    "pretrain.motion_margin": NONNEG,
    # finetune
    "finetune.pretrained": Key("str", null=True, help="pretraining run directory or checkpoint"),
    "finetune.protocol": Key("str", choices=("linear", "frozen_fusion", "finetune")),
    "finetune.label_fraction": Key("float", 0, 1, lo_open=True),
    "finetune.val_fraction": Key("float", 0, 0.5, help="share of the labeled training sequences held out"),
    "finetune.head": Key("str", choices=("ufusion", "simple"), null=True, help="null: the protocol's head"),
    "finetune.bn_calibrate": Key("str", choices=("none", "random", "all"), help="frozen: BN stats from data"),
    # train
    "train.epochs": INT1,
    "train.steps": INT0,
    "train.warmup": Key("float", 0, 0.5, help="share of the optimizer steps with a linear LR warm-up"),
    "train.batch_size": INT1,
    "train.optimizer": Key("str", choices=("sgd", "adam")),
    "train.lr": POS,
    "train.momentum": Key("float", 0, 1, help="SGD momentum"),
    "train.weight_decay": NONNEG,
    "train.schedule": Key("str", choices=("cosine", "step", "constant")),
    "train.milestones": Key("ints", 1, help="epochs after which the step schedule multiplies lr by gamma"),
    "train.gamma": POS,
    "train.max_frames": INT1,
    "train.recipe": Key("str", help="augmentation recipe name or YAML path"),
    "train.seed": INT0,
    "train.device": Key("str", choices=("auto", "cpu", "cuda")),
    "train.amp": BOOL,
    "train.cpu_amp": BOOL,
    "train.compile": BOOL,
    "train.prefetch": BOOL,
    "train.num_threads": INT0,
    "train.augment_backend": Key("str", choices=("numba", "numpy", "dali")),
    "train.ckpt_every": INT1,
    "train.ckpt_every_steps": Key(
        "int", 0, help="also last.pt every N optimizer steps, mid-epoch (0: never)"
    ),
    "train.ckpt_every_minutes": Key("float", 0, help="also last.pt every N minutes, mid-epoch (0: never)"),
    "train.keep_every": Key("int", 0, help="keep epoch_N.pt every N epochs (0: never)"),
    "train.eval_every": Key("int", 0, help="validation every N epochs (0: never)"),
    # eval
    "eval.proposals": Key("str", choices=("sweep", "argmax")),
    "eval.protocol": Key("str", choices=("babel", "pkummd", "thumos", "anet")),
    "eval.batch_size": INT1,
    # demo / experiment drivers: their `pretrain` and `finetune` sections override the run configs
    "pretrain.pretrain": Key("section:pretrain"),
    "pretrain.train": Key("section:train"),
    "finetune.finetune": Key("section:finetune"),
    "finetune.train": Key("section:train"),
    "report.sequences": INT0,
    "seeds": Key("ints", 0),
    "protocols": Key("any", help="experiment / demo protocols: name -> finetune.* overrides"),
    "metric": Key("str"),
    "rows": Key("any", help="experiment rows: {label, method, seeds, pretrain} (skelcl.study.experiment)"),
    "comparisons": Key("any", help="experiment comparisons: [row, reference] pairs"),
    "references": BOOL,  # experiment: random-init reference rows (trainable and frozen) under every protocol
    "data.tuning_seeds": Key("ints", 0, help="experiment: data seeds settings were chosen on"),
    "label_seeds": Key("ints", 0, help="demo: label-subset / fine-tuning seeds"),
}


def _type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def check_value(key: str, spec: Key, v, where: str = "config") -> None:
    """SkelclError naming `key` unless v fits spec (kind, bounds, choices)."""

    def fail(expected):
        raise SkelclError(f"{where}: {key} must be {expected}, got {v!r}")

    if v is None:
        if spec.null or spec.kind == "any":
            return
        fail(f"set ({_describe(spec)}), not null")
    kind = spec.kind
    if kind == "any" or (isinstance(v, str) and v in spec.also):
        return
    if kind == "bool":
        if not isinstance(v, bool):
            fail("true or false")
    elif kind in ("int", "float"):
        ok = isinstance(v, int) if kind == "int" else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            fail(_describe(spec))
        _check_range(spec, v, fail)
    elif kind == "str":
        if not isinstance(v, str) or (spec.choices and v not in spec.choices):
            fail(_describe(spec))
    elif kind in ("ints", "strs"):
        item = int if kind == "ints" else str
        if not isinstance(v, (list, tuple)) or any(isinstance(x, bool) or not isinstance(x, item) for x in v):
            fail(_describe(spec))
        for x in v:
            if kind == "ints":
                _check_range(spec, x, fail)
            elif spec.choices and x not in spec.choices:
                fail(_describe(spec))
    else:  # pragma: no cover - a mistake in KEYS
        raise ValueError(f"KEYS[{key!r}]: unknown kind {kind!r}")


def _check_range(spec: Key, x, fail) -> None:
    if x != x or x in (float("inf"), float("-inf")):
        fail(_describe(spec))
    if spec.lo is not None and (x < spec.lo or (spec.lo_open and x == spec.lo)):
        fail(_describe(spec))
    if spec.hi is not None and x > spec.hi:
        fail(_describe(spec))


def _describe(spec: Key) -> str:
    """Words for what spec allows, e.g. "an integer >= 1", "one of sgd, adam"."""
    if spec.also:
        return _describe(replace(spec, also=())) + "".join(f" or {a}" for a in spec.also)
    k = spec.kind
    if k == "bool":
        return "true or false"
    if spec.choices:
        what = "one of " + ", ".join(spec.choices)
        return ("a list of values, each " + what) if k == "strs" else what
    noun = {"int": "an integer", "float": "a number", "str": "a string", "ints": "a list of integers",
            "strs": "a list of strings"}.get(k, k)  # fmt: skip
    lo = None if spec.lo is None else (int(spec.lo) if float(spec.lo).is_integer() else spec.lo)
    hi = None if spec.hi is None else (int(spec.hi) if float(spec.hi).is_integer() else spec.hi)
    each = " each" if k == "ints" else ""
    if lo is not None and hi is not None:
        rng = f"in ({lo}, {hi}]" if spec.lo_open else f"in [{lo}, {hi}]"
        return f"{noun}{each} {rng}"
    if lo is not None:
        return f"{noun}{each} {'>' if spec.lo_open else '>='} {lo}"
    if hi is not None:
        return f"{noun}{each} <= {hi}"
    return noun


def validate(cfg: dict, where: str = "config") -> dict:
    """Check every leaf key of cfg against KEYS and the rules that tie keys together; returns cfg.

    Raises SkelclError on the first problem, naming the key (e.g. "config: train.epochs must be an
    integer >= 1, got 0"). Environment checks: train.device=cuda needs a CUDA build of torch and a GPU."""
    _walk(cfg, "", "", where)
    _cross_checks(cfg, where)
    return cfg


def _walk(node: dict, prefix: str, table_prefix: str, where: str) -> None:
    for k, v in node.items():
        path, tkey = f"{prefix}{k}", f"{table_prefix}{k}"
        spec = KEYS.get(tkey)
        if spec is not None and spec.kind.startswith("section:"):
            if not isinstance(v, dict):
                raise SkelclError(f"{where}: {path} must be a mapping of {spec.kind[8:]}.* keys, got {v!r}")
            _walk(v, path + ".", spec.kind[8:] + ".", where)
        elif spec is not None:
            check_value(path, spec, v, where)
        elif isinstance(v, dict):
            _walk(v, path + ".", tkey + ".", where)
        else:
            raise SkelclError(
                f"{where}: unknown key {path!r} (every key must be listed in skelcl.train.config.KEYS)"
            )


def _cross_checks(cfg: dict, where: str) -> None:
    model = cfg.get("model")
    if isinstance(model, dict) and isinstance(model.get("strides"), list):
        s = model["strides"]
        if len(set(s)) != len(s):
            raise SkelclError(f"{where}: model.strides must be distinct layers in 2..10, got {s!r}")
    t = cfg.get("train")
    if isinstance(t, dict):
        if t.get("device") == "cuda":
            require_cuda(where)
        ms = t.get("milestones")
        if t.get("schedule") == "step" and isinstance(ms, list) and list(ms) != sorted(set(ms)):
            raise SkelclError(f"{where}: train.milestones must be increasing, got {ms!r}")


def require_cuda(where: str = "config") -> None:
    import torch

    if torch.cuda.is_available():
        return
    why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no GPU"
    raise SkelclError(
        f"{where}: train.device=cuda but CUDA is not available ({why}, torch {torch.__version__}); "
        "use train.device=auto or train.device=cpu"
    )


# ---------------------------------------------------------------------------------------------------
# Loading, overrides.


def builtin_names() -> list[str]:
    """Names of the built-in run configs (skelcl/configs/*.yaml)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem not in NOT_CONFIGS)


def looks_like_path(text) -> bool:
    """True for an argument meant as a file: it holds a path separator or ends in .yaml / .yml."""
    s = os.fspath(text)
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(c in s for c in seps) or s.endswith((".yaml", ".yml"))


def config_path(name_or_path) -> Path:
    """The file for a built-in config name, or for an argument that looks like a path (never a file of a
    built-in's name in the working directory)."""
    if isinstance(name_or_path, Path) or looks_like_path(name_or_path):
        p = Path(name_or_path)
        if not p.is_file():
            why = " (it is a directory)" if p.is_dir() else ""
            raise SkelclError(f"config file {p} does not exist{why}")
        return p
    builtin = CONFIG_DIR / f"{name_or_path}.yaml"
    if str(name_or_path) in NOT_CONFIGS or not builtin.is_file():
        raise SkelclError(
            f"no config named {name_or_path!r} (built-in: {', '.join(builtin_names())}; or a .yaml path)"
        )
    return builtin


def load_config(name_or_path) -> dict:
    p = config_path(name_or_path)
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise SkelclError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(cfg, dict):
        raise SkelclError(f"{p}: a config must be a mapping at the top level")
    if "base" in cfg:  # `base: NAME`: this file lists only the keys it changes in config NAME
        base = cfg.pop("base")
        if not isinstance(base, str) or base == p.stem:
            raise SkelclError(f"{p}: base must name another config, got {base!r}")
        changes = cfg
        cfg = merge(load_config(base), cfg, where=str(p))
        part = changes.get("pretrain") if isinstance(changes.get("pretrain"), dict) else {}
        follow_method(cfg, "method" in part, "recipe" in part)
    return cfg


def follow_method(cfg: dict, method_set: bool, recipe_set: bool) -> None:
    """Choosing a pretraining method chooses its views: where pretrain.method was set (on the command
    line, or by a file with `base:`) and pretrain.recipe was not, the recipe becomes the method's built-in
    one (skelcl/configs/augment.yaml holds a recipe of each method's name). A recipe set together with the
    method is kept (skelcl.train.pretrain checks that it gives the method's views)."""
    pre = cfg.get("pretrain")
    if method_set and not recipe_set and isinstance(pre, dict) and "recipe" in pre:
        if isinstance(pre.get("method"), str):
            pre["recipe"] = pre["method"]


def set_dotted(cfg: dict, key: str, value, where: str = "override") -> None:
    """cfg[a][b][c] = value for key "a.b.c"; the key must exist (SkelclError otherwise)."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            have = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise SkelclError(
                f"{where} {key!r}: unknown key {'.'.join(parts[: i + 1])!r} (known here: {have})"
            )
        if i == len(parts) - 1:
            if isinstance(node[part], dict) and not isinstance(value, dict):
                raise SkelclError(f"{where} {key!r}: {key} is a section; set one of its keys")
            node[part] = _coerce(node[part], value, where, key)
        else:
            node = node[part]


def table_key(key: str) -> str:
    """The KEYS entry of a dotted config path: "pretrain.pretrain.queue_size" (inside a section:pretrain
    key) -> "pretrain.queue_size"; a path outside any section is its own entry."""
    parts = key.split(".")
    prefix = ""
    for part in parts[:-1]:
        spec = KEYS.get(prefix + part)
        if spec is not None and spec.kind.startswith("section:"):
            prefix = spec.kind[8:] + "."
        else:
            prefix += part + "."
    return prefix + parts[-1]


def _coerce(old, value, where, key):
    """Keep the type of booleans and numbers (YAML reads "1e-3" as a string: such strings are parsed).

    A word the key's KEYS entry allows besides its kind (Key.also, e.g. "auto" for pretrain.queue_size)
    passes unchanged, whatever the type of the value it replaces."""
    spec = KEYS.get(table_key(key))
    if spec is not None and isinstance(value, str) and value in spec.also:
        return value
    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise SkelclError(f"{where} {key!r}: expected true or false, got {value!r}")
    elif isinstance(old, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise SkelclError(f"{where} {key!r}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SkelclError(f"{where} {key!r}: expected a number, got {value!r}")
        if isinstance(old, int) and isinstance(value, float) and value.is_integer():
            value = int(value)
    return value


def parse_override(item: str) -> tuple[str, object]:
    """("a.b", parsed value) of "a.b=value"."""
    if "=" not in item:
        raise SkelclError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise SkelclError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise SkelclError(f"override {item!r}: value {raw!r} is not valid YAML") from None
    return key, value


def apply_overrides(cfg: dict, overrides) -> dict:
    """A copy of cfg with each "a.b=value" applied in order."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        key, value = parse_override(item)
        set_dotted(cfg, key, value)
    return cfg


def merge(base: dict, update: dict, where: str = "config") -> dict:
    """Deep copy of base with update's values written in (keys must exist in base)."""
    out = copy.deepcopy(base)

    def walk(dst, src, prefix):
        for k, v in src.items():
            name = f"{prefix}{k}"
            if k not in dst:
                raise SkelclError(f"{where}: unknown key {name!r} (known: {', '.join(sorted(dst))})")
            if isinstance(dst[k], dict) and isinstance(v, dict):
                walk(dst[k], v, name + ".")
            else:
                dst[k] = copy.deepcopy(v)

    walk(out, update or {}, "")
    return out


def resolve(name_or_path, overrides=()) -> dict:
    """The config with overrides applied, validated. pretrain.method=M brings M's recipe (follow_method);
    with finetune.pretrained the model section is the encoder's (follow_pretrained)."""
    cfg = apply_overrides(load_config(name_or_path), overrides)
    keys = [str(item).split("=", 1)[0].strip() for item in overrides or ()]
    follow_method(cfg, "pretrain.method" in keys, "pretrain.recipe" in keys)
    validate(cfg, where=_where(name_or_path))
    follow_pretrained(cfg, keys)
    return cfg


# Settings a pretrained encoder fixes (finetune.pretrained): its checkpoint's values are the ones that run.
ENCODER_KEYS = ("model.backbone", "model.width", "model.strides")


def encoder_model(model_cfg: dict, bcfg: dict) -> dict:
    """model_cfg with the encoder settings of bcfg (Backbone kwargs: kind, width, strides)."""
    kind, width, strides = bcfg["kind"], float(bcfg["width"]), list(bcfg["strides"])
    return {**model_cfg, "backbone": kind, "width": width, "strides": strides}


def follow_pretrained(cfg: dict, given=()) -> None:
    """With finetune.pretrained set, cfg["model"] becomes the encoder's settings (ENCODER_KEYS; config.yaml
    records what runs). A key of `given` (the keys set on the command line) that disagrees with the
    encoder raises SkelclError naming the key, the value given and the checkpoint's."""
    f, model = cfg.get("finetune"), cfg.get("model")
    if not isinstance(f, dict) or not f.get("pretrained") or not isinstance(model, dict):
        return
    from skelcl.train import checkpoint  # not skelcl.train.pretrain: that imports this module

    src = checkpoint.checkpoint_file(f["pretrained"])
    st = checkpoint.load(src)
    if st.get("kind") != "pretrain":
        raise SkelclError(f"{src} is not a pretraining checkpoint (kind {st.get('kind')!r})")
    bcfg, _ = checkpoint.encoder_state(st)
    ran = encoder_model(model, bcfg)
    for key in ENCODER_KEYS:
        name = key.split(".", 1)[1]
        if key in given and model.get(name) != ran[name]:
            raise SkelclError(
                f"{key}={model.get(name)} disagrees with the pretrained encoder {f['pretrained']} "
                f"({key} {ran[name]}): the encoder fixes {', '.join(ENCODER_KEYS)}; leave {key} out or give "
                f"{ran[name]}"
            )
    cfg["model"] = ran


def _where(name_or_path) -> str:
    return str(name_or_path) if looks_like_path(name_or_path) or isinstance(name_or_path, Path) else (
        f"config {name_or_path}")  # fmt: skip


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def describe_keys(cfg: dict) -> list[str]:
    """Lines "key = value    # allowed" for every leaf key of cfg (for `skelcl config show`)."""
    lines = []

    def walk(node, prefix, tprefix):
        for k, v in node.items():
            spec = KEYS.get(tprefix + k)
            if spec is not None and spec.kind.startswith("section:") and isinstance(v, dict):
                walk(v, f"{prefix}{k}.", spec.kind[8:] + ".")
            elif spec is None and isinstance(v, dict):
                walk(v, f"{prefix}{k}.", f"{tprefix}{k}.")
            else:
                rule = "" if spec is None else _describe(spec) + (" or null" if spec.null else "")
                note = f"; {spec.help}" if spec is not None and spec.help else ""
                val = yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
                val = val.removesuffix("...").strip()
                lines.append(f"{prefix}{k} = {val}".ljust(39) + f" # {rule}{note}".rstrip())

    walk(cfg, "", "")
    return lines
