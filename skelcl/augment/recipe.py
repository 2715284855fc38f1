"""Augmentation recipes: which views to make and which ops (with their ranges) each view gets.

A recipe is read from YAML (skelcl/configs/augment.yaml holds the built-in ones) into plain frozen
dataclasses; every field is checked on load and a bad one raises SkelclError naming the recipe, view and
field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from skelcl.errors import SkelclError

BUILTIN_PATH = Path(__file__).resolve().parent.parent / "configs" / "augment.yaml"

# Ops in the order they are applied (the order in the YAML does not matter).
OP_ORDER = (
    "crop",
    "crop_resize",
    "tempo",
    "flip",
    "shear",
    "rotate",
    "noise",
    "blur",
    "axis_mask",
    "joint_mask",
    "part_mask",
)


PAD_MODES = ("edge", "reflect")


@dataclass(frozen=True)
class Crop:
    """Temporal crop: pad the window by W // pad_ratio frames on each side, then take W frames starting at
    a random shift c in [-pad, pad].

    pad: how the view reads frames outside the valid ones (before the window / sequence start, past the
    window / sequence end; this also extends a sequence shorter than the window):
      "edge" (default): repeat the first / last frame, index i -> clip(i, 0, n - 1). The source frame index
        never decreases along a view, so time never runs backwards; the padded frames show a held pose.
        Shifting the crop inside the valid frames instead would not be enough: a 2x view of 150 frames
        needs 299 frames, more than many sequences have, so some padding stays.
      "reflect": mirror (..., 1, 0 | 0, 1, ..., n-1 | n-1, n-2, ...): the mirrored frames play backwards
        (skelcl.augment.reversed_share counts them); only when a recipe asks for it.
    A view without a crop op pads with "edge"."""

    pad_ratio: int = 6
    p: float = 1.0
    pad: str = "edge"


@dataclass(frozen=True)
class CropResize:
    """Crop a random sub-window of floor(W * ratio) frames, ratio ~ U(ratio[0], ratio[1]), and stretch it
    back to W frames by linear interpolation (first and last frames map onto each other)."""

    ratio: tuple[float, float] = (0.5, 1.0)
    p: float = 1.0


@dataclass(frozen=True)
class Tempo:
    """Take `frames` frames every `speed` frames; speed drawn from `speeds`. Views with pair=True share one
    random permutation of `speeds` per sample (query and key get different tempos). same_as: the name of an
    earlier view whose speed this view copies per sample (same tempo, own offset); no draw of its own.
    align: the name of an earlier view whose time span this view is centred on: offset
    o = clip(round(o_ref + s_ref (F_ref - 1) / 2 - s (F - 1) / 2), 0, W - s (F - 1) - 1) (F: frames), so
    both views show the same moment (each keeps its own crop shift); o is still drawn, then replaced."""

    speeds: tuple[int, ...] = (1, 2)
    pair: bool = False
    same_as: str | None = None
    align: str | None = None


@dataclass(frozen=True)
class Flip:
    """Left-right mirror: joints permuted by FLIP_PERM and the x coordinate negated."""

    p: float = 0.5


@dataclass(frozen=True)
class Shear:
    """x -> S x with S = I + off-diagonals U(-r, r)."""

    r: float = 0.5
    p: float = 1.0


@dataclass(frozen=True)
class Rotate:
    """x -> Rz Ry Rx x: a random main axis turns U(-main_deg, main_deg) degrees,
    the other two U(-other_deg, other_deg)."""

    main_deg: float = 30.0
    other_deg: float = 1.0
    p: float = 1.0


@dataclass(frozen=True)
class Noise:
    """Add std * N(0, 1) to every coordinate of every valid output frame."""

    std: float = 0.01
    p: float = 0.5


@dataclass(frozen=True)
class Blur:
    """Normalized Gaussian filter along time, `size` taps, sigma ~ U(sigma[0], sigma[1])."""

    sigma: tuple[float, float] = (0.1, 2.0)
    size: int = 15
    p: float = 0.5


@dataclass(frozen=True)
class AxisMask:
    """Zero one random coordinate axis (x, y or z) of every joint."""

    p: float = 0.5


@dataclass(frozen=True)
class JointMask:
    """Zero a random set of n joints, n ~ U{count[0], ..., count[1]}."""

    count: tuple[int, int] = (1, 5)
    p: float = 0.5


@dataclass(frozen=True)
class PartMask:
    """Zero all joints of one random body part (skelcl.data.skeleton.BODY_PARTS)."""

    p: float = 0.5


OP_TYPES = {
    "crop": Crop,
    "crop_resize": CropResize,
    "tempo": Tempo,
    "flip": Flip,
    "shear": Shear,
    "rotate": Rotate,
    "noise": Noise,
    "blur": Blur,
    "axis_mask": AxisMask,
    "joint_mask": JointMask,
    "part_mask": PartMask,
}


@dataclass(frozen=True)
class View:
    """One output view: `frames` output frames (None: the batch's own length) and its ops by name."""

    name: str
    frames: int | None
    ops: dict = field(default_factory=dict)

    def op(self, name: str):
        return self.ops.get(name)

    @property
    def pad(self) -> str:
        """How the view's time map pads: its crop's `pad`, "edge" without a crop op (see Crop)."""
        crop = self.ops.get("crop")
        return "edge" if crop is None else crop.pad


@dataclass(frozen=True)
class Recipe:
    """A named list of views cut from one shared window of `window` frames (None: the whole sequence)."""

    name: str
    window: int | None
    views: tuple[View, ...]
    description: str = ""


def _fail(where: str, msg: str):
    raise SkelclError(f"augment recipe {where}: {msg}")


def _build_op(where: str, name: str, raw) -> object:
    if name not in OP_TYPES:
        _fail(where, f"unknown op {name!r} (known: {', '.join(OP_ORDER)})")
    cls = OP_TYPES[name]
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        _fail(f"{where}.{name}", f"expected a mapping of settings, got {raw!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            _fail(f"{where}.{name}", f"unknown setting {key!r} (known: {', '.join(known)})")
        default = known[key].default
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) == 0:
                _fail(f"{where}.{name}.{key}", f"expected a list, got {value!r}")
            value = tuple(value)
        kwargs[key] = value
    op = cls(**kwargs)
    _check_op(f"{where}.{name}", op)
    return op


def _num(where, value, lo=None, hi=None, integer=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        kind = "an integer" if integer else "a number"
        rng = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
        _fail(where, f"expected {kind}{rng}, got {value!r}")


def _check_op(where: str, op) -> None:
    if hasattr(op, "p"):
        _num(f"{where}.p", op.p, 0.0, 1.0)
    if isinstance(op, Crop):
        _num(f"{where}.pad_ratio", op.pad_ratio, 1, integer=True)
        if op.pad not in PAD_MODES:
            _fail(f"{where}.pad", f"expected one of {', '.join(PAD_MODES)}, got {op.pad!r}")
    elif isinstance(op, CropResize):
        if len(op.ratio) != 2:
            _fail(f"{where}.ratio", f"expected [low, high], got {list(op.ratio)}")
        for r in op.ratio:
            _num(f"{where}.ratio", r, 0.0, 1.0)
        if not 0 < op.ratio[0] <= op.ratio[1]:
            _fail(f"{where}.ratio", f"need 0 < low <= high <= 1, got {list(op.ratio)}")
    elif isinstance(op, Tempo):
        for s in op.speeds:
            _num(f"{where}.speeds", s, 1, integer=True)
        if not isinstance(op.pair, bool):
            _fail(f"{where}.pair", f"expected true or false, got {op.pair!r}")
        if op.same_as is not None and not isinstance(op.same_as, str):
            _fail(f"{where}.same_as", f"expected a view name, got {op.same_as!r}")
        if op.same_as is not None and op.pair:
            _fail(f"{where}", "pair: true and same_as exclude each other")
        if op.align is not None and not isinstance(op.align, str):
            _fail(f"{where}.align", f"expected a view name, got {op.align!r}")
    elif isinstance(op, Shear):
        _num(f"{where}.r", op.r, 0.0)
    elif isinstance(op, Rotate):
        _num(f"{where}.main_deg", op.main_deg, 0.0, 180.0)
        _num(f"{where}.other_deg", op.other_deg, 0.0, 180.0)
    elif isinstance(op, Noise):
        _num(f"{where}.std", op.std, 0.0)
    elif isinstance(op, Blur):
        if len(op.sigma) != 2:
            _fail(f"{where}.sigma", f"expected [low, high], got {list(op.sigma)}")
        for s in op.sigma:
            _num(f"{where}.sigma", s, 0.0)
        if not 0 < op.sigma[0] <= op.sigma[1]:
            _fail(f"{where}.sigma", f"need 0 < low <= high, got {list(op.sigma)}")
        _num(f"{where}.size", op.size, 1, integer=True)
        if op.size % 2 != 1:
            _fail(f"{where}.size", f"the window must have an odd number of taps, got {op.size}")
    elif isinstance(op, JointMask):
        if len(op.count) != 2:
            _fail(f"{where}.count", f"expected [low, high], got {list(op.count)}")
        for c in op.count:
            _num(f"{where}.count", c, 0, 25, integer=True)
        if op.count[0] > op.count[1]:
            _fail(f"{where}.count", f"need low <= high, got {list(op.count)}")


def recipe_from_dict(name: str, raw) -> Recipe:
    """Build and check a Recipe from its YAML mapping."""
    where = f"{name!r}"
    if not isinstance(raw, dict):
        _fail(where, f"expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"window", "views", "description"}
    if unknown:
        _fail(where, f"unknown field(s) {sorted(unknown)} (known: window, views, description)")
    window = raw.get("window")
    if window is not None:
        _num(f"{where}.window", window, 1, integer=True)
        window = int(window)
    raw_views = raw.get("views")
    if not isinstance(raw_views, list) or not raw_views:
        _fail(f"{where}.views", "expected a non-empty list of views")
    views = []
    for i, rv in enumerate(raw_views):
        vwhere = f"{where}.views[{i}]"
        if not isinstance(rv, dict):
            _fail(vwhere, f"expected a mapping, got {rv!r}")
        unknown = set(rv) - {"name", "frames", "ops"}
        if unknown:
            _fail(vwhere, f"unknown field(s) {sorted(unknown)} (known: name, frames, ops)")
        frames = rv.get("frames")
        if window is None:
            if frames is not None:
                _fail(f"{vwhere}.frames", "must be null when the recipe's window is null (whole sequence)")
        else:
            if frames is None:
                _fail(f"{vwhere}.frames", "required (a positive integer) when the recipe has a window")
            _num(f"{vwhere}.frames", frames, 1, integer=True)
            frames = int(frames)
        raw_ops = rv.get("ops") or {}
        if not isinstance(raw_ops, dict):
            _fail(f"{vwhere}.ops", f"expected a mapping of op name -> settings, got {raw_ops!r}")
        ops = {k: _build_op(f"{vwhere}.ops", k, v) for k, v in raw_ops.items()}
        tempo = ops.get("tempo")
        speeds = tempo.speeds if tempo else (1,)
        if window is None and speeds != (1,):
            _fail(f"{vwhere}.ops.tempo", "a whole-sequence view (window null) only allows speeds [1]")
        if window is not None:
            need = max(speeds) * (frames - 1) + 1
            if need > window:
                _fail(
                    vwhere,
                    f"{frames} frames at speed {max(speeds)} need {need} window frames; window is {window}",
                )
        if tempo is not None and tempo.same_as is not None:
            earlier = {v.name: v for v in views}
            ref = earlier.get(tempo.same_as)
            if ref is None:
                _fail(f"{vwhere}.ops.tempo.same_as", f"no earlier view named {tempo.same_as!r}")
            if ref.op("tempo") is None or ref.op("tempo").speeds != tempo.speeds:
                _fail(f"{vwhere}.ops.tempo.same_as", f"{tempo.same_as!r} needs a tempo with the same speeds")
        if tempo is not None and tempo.align is not None:
            ref = {v.name: v for v in views}.get(tempo.align)
            if ref is None or ref.op("tempo") is None:
                _fail(f"{vwhere}.ops.tempo.align", f"no earlier view named {tempo.align!r} with a tempo op")
        views.append(View(name=str(rv.get("name", f"view{i}")), frames=frames, ops=ops))
    paired = [v for v in views if v.op("tempo") is not None and v.op("tempo").pair]
    if paired:
        speeds = paired[0].op("tempo").speeds
        if any(v.op("tempo").speeds != speeds for v in paired) or len(paired) != len(speeds):
            _fail(
                where,
                f"the {len(paired)} views with tempo pair: true need the same speeds, one speed per view",
            )
    return Recipe(name=name, window=window, views=tuple(views), description=str(raw.get("description", "")))


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise SkelclError(f"cannot read augment recipes {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SkelclError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SkelclError(f"{path}: expected a mapping of recipe name -> recipe")
    return data


def load_recipe(name_or_path, name: str | None = None) -> Recipe:
    """A Recipe by built-in name ("skeletonclr", "aimclr", "finetune"), or from a YAML file.

    Only an argument that looks like a path (a Path, or text holding a path separator or ending in .yaml /
    .yml) is read as a file, so a file or folder named like a built-in in the working directory never
    hides it. A file holds either one recipe (fields window, views) or a mapping of recipe names; in the
    second case pass `name` (or the file must hold exactly one recipe). A Recipe passes through unchanged.
    """
    if isinstance(name_or_path, Recipe):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if isinstance(name_or_path, Path) or any(c in text for c in seps) or text.endswith((".yaml", ".yml")):
        data = _read_yaml(path)
        if "views" in data:
            return recipe_from_dict(name or path.stem, data)
        if name is None:
            if len(data) != 1:
                raise SkelclError(f"{path}: holds recipes {sorted(data)}; say which one")
            name = next(iter(data))
        if name not in data:
            raise SkelclError(f"{path}: no recipe {name!r} (has: {', '.join(sorted(data))})")
        return recipe_from_dict(name, data[name])
    builtins = _read_yaml(BUILTIN_PATH)
    if text not in builtins:
        raise SkelclError(
            f"unknown augment recipe {text!r} (built-in: {', '.join(sorted(builtins))}; or a .yaml path)"
        )
    return recipe_from_dict(text, builtins[text])
