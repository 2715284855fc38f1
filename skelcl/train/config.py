"""YAML run configs with dotted command-line overrides.

A config is a nested dict loaded from a YAML file (built-in ones live in skelcl/configs/, named without
the .yaml suffix, e.g. "pretrain_skeletonclr"). Overrides are strings "a.b.c=value"; the value is parsed as
YAML ("3" -> 3, "[5, 8]" -> [5, 8], "null" -> None). Only keys that exist in the base config may be set;
an unknown key or a malformed override raises SkelclError naming it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from skelcl.errors import SkelclError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def config_path(name_or_path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise SkelclError(f"config file {p} does not exist")
        return p
    builtin = CONFIG_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        known = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yaml") if x.stem != "augment"))
        raise SkelclError(f"no config named {name_or_path!r} (built-in: {known})")
    return builtin


def load_config(name_or_path) -> dict:
    p = config_path(name_or_path)
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise SkelclError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(cfg, dict):
        raise SkelclError(f"{p}: a config must be a mapping at the top level")
    return cfg


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


def _coerce(old, value, where, key):
    """Keep the type of booleans and numbers (YAML reads "1e-3" as a string: such strings are parsed)."""
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


def apply_overrides(cfg: dict, overrides) -> dict:
    """A copy of cfg with each "a.b=value" applied in order."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
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
    return apply_overrides(load_config(name_or_path), overrides)


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
