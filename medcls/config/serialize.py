"""Turning JSON and text into typed config values, and config files from earlier versions into today's.

``coerce`` converts one value to a field's declared type ('3' -> 3, lists -> tuples,
'on' -> True) and refuses what does not fit with a message that says what was
expected. ``migrate`` reads configs written by earlier medcls versions, which kept
every option of every model (a ``small_cnn`` run held ResNet's ``weights``), so
that old runs still load, compare and predict.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from .options import ConfigError

__all__ = ["coerce", "type_hints", "base_type", "build", "migrate", "MAX_NESTING", "CONFIG_FORMAT"]

MAX_NESTING = 8  # a config is two levels deep; anything deeper is not a config
# Written into every saved config ("format"): which options an older config left out, and what they meant then,
# is known from it. Raise it when an option is added whose default changes what an older config trained.
CONFIG_FORMAT = 3
# Options every config medcls ever saved holds (a saved config holds every option that applies). A config with
# no format number that lacks one of them was written by hand, and takes today's defaults for what it leaves out.
_ALWAYS_SAVED = ("data", "model", "image_size", "epochs", "batch_size", "seed")


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict[str, Any]:
    """typing.get_type_hints once per class: it evaluates every annotation again on each call."""
    return typing.get_type_hints(cls)


def base_type(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed): ``int | None`` -> (int, True)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _number(hint: type, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"Expected a number, got {value!r}.")
    try:
        number = _parse_number(value, hint) if isinstance(value, str) else value
    except ValueError:
        raise ConfigError(f"Expected a number, got {value!r}.") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"Expected a finite number, got {value!r}.")
    if hint is int:
        if isinstance(number, float) and not number.is_integer():
            raise ConfigError(f"Expected a whole number, got {value!r}.")  # '2.5' must not become 2
        return int(number)
    return float(number)


def _parse_number(text: str, hint: type) -> int | float:
    """'42' as the exact int (a float would round a long one), '1e3' or '2.5' as a float."""
    if hint is int:
        try:
            return int(text)  # like float(), int() allows surrounding spaces and digit underscores
        except ValueError:
            pass
    return float(text)


def coerce(hint: Any, value: Any) -> Any:
    """Turn JSON or text values into the field's declared type (lists to tuples, '3' to 3, ...)."""
    base, optional = base_type(hint)
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "default")):
            return None
        return coerce(base, value)
    if typing.get_origin(base) is tuple:
        item_type = typing.get_args(base)[0]
        if isinstance(value, str):
            value = [v for v in value.replace(";", ",").replace(" ", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Expected a list, got {value!r}.")
        return tuple(coerce(item_type, v) for v in value)
    if base is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"Expected true/false, got {value!r}.")
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ConfigError(f"Expected true/false, got {value!r}.")
    if base in (int, float):
        return _number(base, value)
    if base is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"Expected text, got {type(value).__name__}.")
        return str(value).strip() if value is not None else ""
    return value


def build(cls: type, data: Any, *, ignore: frozenset[str] = frozenset()) -> Any:
    """An instance of the config dataclass ``cls`` from a JSON object; unknown keys are refused."""
    if not isinstance(data, dict):
        raise ConfigError(f"Expected a JSON object for {cls.__name__}, got {type(data).__name__}.")
    hints = type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known - ignore)
    if unknown:
        raise ConfigError(f"Unknown option(s) {', '.join(map(str, unknown))} in {cls.__name__}. "
                          f"Known: {', '.join(sorted(known))}.")
    kwargs = {}
    for name, value in data.items():
        if name not in known:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value)
        else:
            try:
                kwargs[name] = coerce(hint, value)
            except ConfigError as exc:
                raise ConfigError(f"{str(exc).rstrip('.')} for option {name}.") from None
    return cls(**kwargs)


def _depth(value: Any, limit: int) -> int:
    if limit < 0:
        return 0
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


# Options that older versions kept at the top level but that now belong to a model's own options.
_MOVED_TO_MODEL = ("feature_cache", "feature_views")


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict in today's layout, from today's or an earlier version's.

    Format 1 is every config saved before format numbers. The first of them (before options were declared per
    model) had ``"model": {"name": ..., "weights": ...,
    "blocks": null, ...}`` with every model's options, ``None`` meaning "the preset's value", and
    ``feature_cache``/``feature_views`` at the top. Today: ``"model": "small_cnn"`` and
    ``"model_options": {...}`` holding only that model's options. Options added since then take the value
    that reproduces what such a config trained (``small_data_ensemble`` off, a CNN's ``pool_first`` off).
    Since format 2 every saved config says its format (``"format": 2``); a config without one that lacks options
    every saved config holds was written by hand, and gets today's defaults. Before format 3 the default
    ``checkpoint`` was ``best`` (now ``last``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"A config must be a JSON object, got {type(data).__name__}.")
    if _depth(data, MAX_NESTING + 1) > MAX_NESTING:
        raise ConfigError("This config is nested too deeply to be a medcls config.")
    data = dict(data)
    written = _format(data.pop("format", None))
    legacy_model = data.get("model")
    if isinstance(legacy_model, dict):
        legacy_model = dict(legacy_model)
        data["model"] = legacy_model.pop("name", "small_cnn")
        options = {k: v for k, v in legacy_model.items() if v is not None}
        for key in _MOVED_TO_MODEL:
            if key in data:
                options[key] = data.pop(key)
        data["model_options"] = options
        data["_legacy"] = True  # options another model declared are dropped, not refused
    if written is None:  # saved before format numbers (format 1), or written by hand (today's defaults)
        written = 1 if data.get("_legacy") or all(key in data for key in _ALWAYS_SAVED) else CONFIG_FORMAT
    if written < 3 and "checkpoint" not in data:  # before format 3 every run kept its best validation epoch
        data["checkpoint"] = "best"
    if written < 2:  # options added since take the value that reproduces what the run trained
        if "small_data_ensemble" not in data:  # such a run trained one model
            data["small_data_ensemble"] = False
        options = data.get("model_options")
        if isinstance(options, dict) and ("batch_norm" in options or data.get("_legacy")) \
                and "pool_first" not in options:
            # A CNN's checkpoint trained with the seed's block order must predict with it.
            data["model_options"] = {**options, "pool_first": False}
    return data


def _format(value: Any) -> int | None:
    """The format number a config says it was written with (None: it does not say)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"The config's format must be a whole number of at least 1, got {value!r}.")
    if value > CONFIG_FORMAT:
        raise ConfigError(f"This config was written by a newer medcls (config format {value}; this medcls reads up "
                          f"to format {CONFIG_FORMAT}). Update medcls to use it.")
    return value
