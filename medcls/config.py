"""Typed, frozen training configuration.

One ``TrainConfig`` describes a whole run: the data, the model, augmentation
and the optimisation recipe. It is saved with every run as ``config.json`` and
loads back identically (``TrainConfig.from_dict(cfg.to_dict()) == cfg``).

Every field carries a default and a one-line reason in plain words (the
``help`` metadata). The command line and the dashboard build their flags and
form help from that same text, so the explanation lives in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "AugmentConfig",
    "TrainConfig",
    "option",
    "field_help",
    "iter_options",
    "option_info",
    "OptionInfo",
    "config_diff",
    "format_value",
]


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent."""


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    label: str | None = None,
) -> Any:
    """A dataclass field with a default, a plain-language reason and bounds."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "gt": gt, "label": label}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults so configs stay hashable and frozen")
    return field(default=default, metadata=meta)


def _validate_fields(obj: Any) -> None:
    """Check every field against the bounds declared with :func:`option`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        meta = f.metadata
        label = meta.get("label") or f.name.replace("_", " ")
        if value is None:
            continue
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{label} must be one of {', '.join(map(str, choices))} (got {value!r}).")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if meta.get("gt") is not None and not value > meta["gt"]:
            raise ConfigError(f"{label} must be greater than {meta['gt']} (got {value}).")
        if meta.get("min") is not None and value < meta["min"]:
            raise ConfigError(f"{label} must be at least {meta['min']} (got {value}).")
        if meta.get("max") is not None and value > meta["max"]:
            raise ConfigError(f"{label} must be at most {meta['max']} (got {value}).")


@dataclass(frozen=True)
class DataConfig:
    source: str = option("", "Which images to learn from: leave empty for the built-in synthetic phantoms, "
                         "or give a folder, a manifest .csv (path,label[,split]) or a MedMNIST .npz file.")
    layout: str = option("auto", "How the dataset is organised. 'auto' looks at the folder: train/val/test "
                         "sub-folders, class sub-folders, a manifest or an .npz file.",
                         choices=("auto", "split_folders", "class_folders", "manifest", "npz"))
    class_aliases: tuple[str, ...] = option((), "Other names for the same class, written alias=class. "
                                            "Example: malignant=cancer when the test folder says 'malignant' "
                                            "and the training folder says 'cancer'.")
    class_names: tuple[str, ...] = option((), "Class names for .npz files, in label order (0, 1, 2, ...). "
                                          "Empty: MedMNIST's names when known, otherwise class_0, class_1, ...")
    val_fraction: float = option(0.15, "Share of images held out for validation when the data has no split "
                                 "of its own. Validation picks the best epoch.", min=0.0, max=0.5)
    test_fraction: float = option(0.15, "Share of images held out for the final test when the data has no "
                                  "split of its own. Test images are never seen during training.", min=0.0, max=0.5)
    split_seed: int = option(0, "Random seed of the train/val/test split, so the same images land in the "
                             "same split every time.", min=0)
    group_duplicates: bool = option(False, "Keep near-duplicate images in the same split (train, val or test), "
                                    "so a copy of a test image can never be learned in training.")
    include_masks: bool = option(False, "Also use files named *_mask*. These are usually segmentation masks, "
                                 "not images to classify, so they are skipped by default.")
    color: str = option("auto", "Channels the images are turned into. 'auto' uses grayscale when nearly all "
                        "images are gray (ultrasound usually is), which makes training up to 3x cheaper.",
                        choices=("auto", "gray", "rgb"))
    disk_cache: bool = option(True, "Keep decoded, resized images on disk so the next run starts instantly.")

    def __post_init__(self) -> None:
        _validate_fields(self)
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError("val fraction + test fraction must leave at least 10% of the images for training.")
        for alias in self.class_aliases:
            if alias.count("=") != 1 or not all(part.strip() for part in alias.split("=")):
                raise ConfigError(f"Class alias {alias!r} must look like alias=class, e.g. malignant=cancer.")


@dataclass(frozen=True)
class ModelConfig:
    name: str = option("small_cnn", "The network. small_cnn is fast on a CPU; seed_cnn and seed_cnn_bn are "
                       "the coursework's networks; resnet18 reuses features learned on ImageNet photos.")
    weights: str = option("imagenet", "Starting weights for pretrained models: 'imagenet', a weights file, or "
                          "'random' to start from scratch on purpose.")
    finetune: str = option("head", "What a pretrained model learns: only the new head (fast, little data "
                           "needed), also the last block, or everything (slow).",
                           choices=("head", "last_block", "all"))
    # Architecture options of the configurable CNN; None keeps the preset's value.
    blocks: int | None = option(None, "Number of conv blocks. More blocks: more capacity, and more risk of "
                                "overfitting on a few hundred images.", min=1, max=6)
    filters: int | None = option(None, "Filters in the first block; later blocks grow from here.", min=4, max=256)
    growth: float | None = option(None, "How much the filter count grows per block (2 = doubles).",
                                  min=1.0, max=3.0)
    kernel_size: int | None = option(None, "Size of each convolution window in pixels (odd).", choices=(3, 5, 7))
    batch_norm: bool | None = option(None, "Batch normalisation: steadier, faster training.")
    activation: str | None = option(None, "The non-linearity after each layer.", choices=("relu", "gelu", "silu"))
    pooling: str | None = option(None, "How each block halves the image: max or average pooling.",
                                 choices=("max", "avg"))
    head: str | None = option(None, "Classifier: 'flatten' + fully connected layers (the seed's, many "
                              "parameters) or 'gap' (global average pooling, few parameters).",
                              choices=("flatten", "gap"))
    fc_widths: tuple[int, ...] | None = option(None, "Widths of the hidden fully connected layers, e.g. 1024,512.")
    dropout: float | None = option(None, "Share of units switched off at random while training, against "
                                   "overfitting.", min=0.0, max=0.9)

    def __post_init__(self) -> None:
        _validate_fields(self)

    def architecture_overrides(self) -> dict[str, Any]:
        """The architecture options that differ from the preset (those not None)."""
        names = ("blocks", "filters", "growth", "kernel_size", "batch_norm", "activation",
                 "pooling", "head", "fc_widths", "dropout")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True)
class AugmentConfig:
    augment: bool = option(True, "Show the network slightly changed copies of the training images each epoch "
                           "(flips, small shifts, brightness). Helps a lot with few images. Never used for "
                           "validation or test.", label="augmentation")
    hflip: bool = option(True, "Mirror images left-right at random (anatomy is roughly symmetric).")
    vflip: bool = option(False, "Flip images upside down at random. Off for ultrasound: depth runs down the "
                         "image and shadows fall below lesions.")
    rotate: float = option(10.0, "Largest random rotation, in degrees.", min=0.0, max=180.0)
    scale: float = option(0.10, "Largest random zoom in or out (0.1 = 10%).", min=0.0, max=0.5)
    translate: float = option(0.05, "Largest random shift, as a share of the image size.", min=0.0, max=0.5)
    brightness: float = option(0.2, "Largest random brightness change (0.2 = 20%), like a different gain.",
                               min=0.0, max=1.0)
    contrast: float = option(0.2, "Largest random contrast change (0.2 = 20%).", min=0.0, max=1.0)

    def __post_init__(self) -> None:
        _validate_fields(self)


IMBALANCE_STRATEGIES = ("none", "oversample", "weighted_loss", "weighted_sampler")
SELECT_METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "focus_recall")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    image_size: int = option(128, "Images are resized to this many pixels square. Larger shows more detail "
                             "but trains roughly 4x slower per doubling.", min=16, max=1024)
    batch_size: int = option(32, "Images per training step. Larger is smoother but needs more memory.",
                             min=1, max=4096)
    epochs: int = option(30, "Passes over the training images. More epochs learn more but can overfit; "
                         "the best epoch on validation is kept.", min=1, max=1000)
    optimizer: str = option("adamw", "The rule that updates the weights. Adam/AdamW adapt the step size per "
                            "weight; SGD with momentum is the classic.", choices=("adam", "adamw", "sgd"))
    lr: float = option(2e-3, "Learning rate: how big each update step is. Too high and training jumps "
                       "around or diverges; too low and it learns slowly.", gt=0.0, max=10.0,
                       label="learning rate")
    weight_decay: float = option(1e-4, "Pulls weights gently towards zero, a mild guard against overfitting.",
                                 min=0.0, max=1.0)
    momentum: float = option(0.9, "SGD only: how much of the previous step carries over.", min=0.0, max=0.999)
    scheduler: str = option("onecycle", "How the learning rate changes over training: constant, step down "
                            "every few epochs (the seed's StepLR), cosine decay, or one-cycle (warm up, then "
                            "decay; usually fastest).", choices=("none", "step", "cosine", "onecycle"))
    step_size: int = option(3, "StepLR: lower the learning rate every this many epochs.", min=1)
    gamma: float = option(0.5, "StepLR: multiply the learning rate by this at each step.", gt=0.0, max=1.0)
    imbalance: str = option("oversample", "How to handle rare classes. Oversample repeats rare images; "
                            "weighted loss makes mistakes on rare classes cost more; a weighted sampler draws "
                            "classes equally often. Without one, a model can ignore a rare class such as "
                            "cancer and still look accurate.", choices=IMBALANCE_STRATEGIES)
    oversample: tuple[str, ...] = option((), "Oversampling multipliers per class, e.g. malignant=16 benign=5 "
                                         "(the seed's style). Empty: repeat every class up to the largest.")
    ema_decay: float = option(0.99, "Keep a running average of the weights over the last steps and use the "
                              "average (0 = off; 0.99 averages over roughly the last 100 steps). Smooths out the "
                              "ups and downs of training on few images.", min=0.0, max=0.9999)
    tta: bool = option(True, "Test-time augmentation: judge each validation/test image and its mirror image and "
                       "average the two answers. Usually a little more accurate; prediction takes twice as long.")
    patience: int = option(5, "Stop early when the validation score has not improved for this many epochs, "
                           "but not before half of the epochs (0 = never stop early).", min=0)
    select_metric: str = option("macro_f1", "The validation score that picks the best epoch. Accuracy can "
                                "look good while a rare class is missed; macro-F1, balanced accuracy or the "
                                "focus class's recall do not.", choices=SELECT_METRICS)
    focus_class: str = option("", "The class that matters most, e.g. malignant (missing a cancer costs more "
                              "than a false alarm). Empty: malignant/cancer when present, else the rarest.")
    seed: int = option(0, "Random seed: the same seed and settings give the same run.", min=0)
    precision: str = option("auto", "Number format for training maths. bf16 is faster on some CPUs; 'auto' "
                            "measures both briefly and picks the faster.", choices=("auto", "fp32", "bf16"))
    channels_last: bool = option(True, "Memory layout that makes convolutions faster on CPUs.")
    feature_cache: bool = option(True, "Frozen pretrained backbones: compute their features once instead of "
                                 "every epoch (many times faster).")
    feature_views: int = option(4, "With feature caching and augmentation: how many augmented copies of each "
                                "training image to precompute.", min=1, max=32)
    threads: int = option(0, "CPU threads for training (0 = all cores).", min=0, max=256)

    def __post_init__(self) -> None:
        _validate_fields(self)
        for item in self.oversample:
            name, _, factor = item.partition("=")
            try:
                ok = bool(name.strip()) and float(factor) >= 1
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"Oversampling entry {item!r} must look like class=factor with factor >= 1, "
                                  "e.g. malignant=16.")

    # --- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: Path | str) -> "TrainConfig":
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid JSON: {exc}") from None

    # --- flat access (CLI flags, form fields, sweeps) -------------------
    def flat(self) -> dict[str, Any]:
        """Every option by its own name, e.g. {'lr': 0.002, 'source': '', ...}."""
        return {name: getattr(section, name) for name, section, _ in _walk(self)}

    def with_options(self, **options: Any) -> "TrainConfig":
        """A copy with options changed by their flat names: ``cfg.with_options(lr=1e-3, name='seed_cnn')``."""
        sections: dict[str, dict[str, Any]] = {}
        owners = {name: path for name, _, path in _walk(self)}
        for name, value in options.items():
            if name not in owners:
                raise ConfigError(f"Unknown option {name!r}. Known options: {', '.join(sorted(owners))}.")
            try:
                coerced = _coerce(_field_type(self, owners[name], name), value)
            except ConfigError as exc:  # say which option the bad text was for
                raise ConfigError(f"{str(exc).rstrip('.')} for option {name}.") from None
            sections.setdefault(owners[name], {})[name] = coerced
        top = dict(sections.pop("", {}))
        for section, values in sections.items():
            top[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **top)


def _walk(cfg: TrainConfig) -> Iterator[tuple[str, Any, str]]:
    """(option name, owning dataclass instance, section name or '') for every leaf option."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                yield sub.name, value, f.name
        else:
            yield f.name, cfg, ""


def format_value(value: Any) -> str:
    """A setting's value as people read it: on/off, 0.002 (not 0.0020000000000000000), '—' for empty."""
    if value is None:
        return "preset default"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(map(str, value)) or "—"
    if value == "":
        return "—"
    return str(value)


def iter_options(cfg: TrainConfig | None = None) -> Iterator[tuple[str, dataclasses.Field, str]]:
    """(flat name, dataclass field, section) for every option, in declaration order."""
    cfg = cfg or TrainConfig()
    for name, owner, section in _walk(cfg):
        yield name, {f.name: f for f in dataclasses.fields(owner)}[name], section


@dataclass(frozen=True)
class OptionInfo:
    """One option as forms, flags and sweeps need it."""

    name: str
    field: dataclasses.Field
    section: str      # '' for top-level TrainConfig fields, else 'data', 'model' or 'augment'
    hint: Any         # the declared type, e.g. ``int | None``
    base: Any         # that type without None, e.g. ``int`` or ``tuple[int, ...]``
    optional: bool    # None is allowed ("keep the preset's value")

    @property
    def help(self) -> str:
        return self.field.metadata.get("help", "")


@functools.lru_cache(maxsize=1)
def option_info() -> dict[str, OptionInfo]:
    """Every option by flat name, in declaration order (computed once)."""
    out = {}
    for name, f, section in iter_options():
        owner = TrainConfig if not section else _type_hints(TrainConfig)[section]
        hint = _type_hints(owner)[name]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        out[name] = OptionInfo(name, f, section, hint, base, optional)
    return out


def field_help(name: str) -> str:
    """The plain-language help text of an option, by flat name."""
    for option_name, f, _ in iter_options():
        if option_name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


def config_diff(a: TrainConfig, b: TrainConfig) -> list[tuple[str, Any, Any]]:
    """The options that differ between two configs: (name, value in a, value in b)."""
    fa, fb = a.flat(), b.flat()
    return [(name, fa[name], fb[name]) for name in fa if fa[name] != fb[name]]


# --- dict -> dataclass ---------------------------------------------------

def _field_type(cfg: Any, section: str, name: str) -> Any:
    owner = getattr(cfg, section) if section else cfg
    return _type_hints(type(owner))[name]


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """typing.get_type_hints once per class: it evaluates every annotation again on each call, and forms
    and CLI parsing ask for one field at a time."""
    return typing.get_type_hints(cls)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"Expected a JSON object for {cls.__name__}, got {type(data).__name__}.")
    hints = _type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"Unknown option(s) {', '.join(unknown)} in {cls.__name__}. "
                          f"Known: {', '.join(sorted(known))}.")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value)
        else:
            kwargs[name] = _coerce(hint, value)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    """Turn JSON or text values into the field's declared type (lists to tuples, '3' to 3, ...)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "default")):
            return None
        return _coerce(args[0], value)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [v for v in value.replace(";", ",").split(",") if v.strip()]
        return tuple(_coerce(item_type, v) for v in value)
    if hint is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"Expected true/false, got {value!r}.")
        return bool(value)
    if hint in (int, float):
        try:
            number = hint(value) if not isinstance(value, str) else hint(float(value)) if hint is int else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Expected a number, got {value!r}.") from None
        if hint is int and isinstance(value, (float, str)) and float(value) != number:
            raise ConfigError(f"Expected a whole number, got {value!r}.")  # '2.5' must not become 2
        return number
    if hint is str:
        return str(value).strip() if value is not None else ""
    return value
