"""How an option is declared: once, on its config field, with everything every reader needs.

``option(default, help, label=..., group=..., ...)`` makes a dataclass field whose
metadata is one :class:`Option` record: the plain-language help, a short label,
the form group, the bounds or choices, when the option applies (``when(optimizer="sgd")``),
its command-line flags and the values a sweep starts from. The CLI, the app's form,
sweeps, config diffs and the run card all read that record; nothing else holds
labels or field lists (as Ludwig's parameter metadata does, in a dozen small records).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["ConfigError", "Condition", "when", "Option", "option", "option_of", "check_value", "check_fields", "Group",
           "GROUPS", "MAX_SEED"]

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; the message says which and how to fix it."""


@dataclass(frozen=True)
class Condition:
    """When an option has an effect: every named option has one of the allowed values."""

    requirements: tuple[tuple[str, tuple[Any, ...]], ...]

    def holds(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(name) in allowed for name, allowed in self.requirements)

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.requirements)


def when(**requirements: Any) -> Condition:
    """``when(optimizer="sgd")``, ``when(scheduler="step")``, ``when(finetune=("head",), feature_cache=True)``."""
    return Condition(tuple((name, tuple(v) if isinstance(v, (tuple, list)) else (v,))
                           for name, v in requirements.items()))


@dataclass(frozen=True)
class Option:
    """Everything the CLI, the form, sweeps, diffs and the run card need to know about one option."""

    help: str                                   # the reason, in plain words (form tooltip, CLI help)
    label: str                                  # short name in words ("Learning rate"), for forms and tables
    group: str                                  # form group, one of GROUPS
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None  # allowed values (callable: lazy)
    min: float | None = None
    max: float | None = None
    gt: float | None = None                     # strictly greater than
    applies: Condition | None = None            # None: always applies
    flags: tuple[str, ...] = ()                 # CLI flags; empty: --the-name
    sweep: tuple[Any, ...] | None = None        # values a sweep starts from
    sweep_order: int | None = None              # place among the sweep picker's suggestions (None: after them)
    sweepable: bool = True                      # False: varying it would make runs incomparable
    number_format: str | None = None            # how a number box shows it, e.g. "%.1e"
    step: int | None = None                     # what a whole-number box's - and + add (None: 1)
    item_min: float | None = None               # for tuples of numbers: bounds of each item
    item_max: float | None = None
    words: tuple[tuple[Any, str], ...] = ()     # how choices read in words: (("macro_f1", "macro-F1"), ...)

    def word(self, value: Any) -> str | None:
        """The choice ``value`` in words, when declared."""
        return next((text for choice, text in self.words if choice == value), None)

    def allowed(self) -> tuple[Any, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def bounds_text(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {bound_text(self.gt)}")
        if self.min is not None:
            parts.append(f"≥ {bound_text(self.min)}")
        if self.max is not None:
            parts.append(f"≤ {bound_text(self.max)}")
        return ", ".join(parts)


def bound_text(value: float) -> str:
    """A bound or a checked value as people read it: whole numbers in full with thousands separators
    ('4,294,967,295', not '4.29497e+09', which hides the exact limit), others in the shortest form ('0.5').
    A float beyond 15 digits keeps the short form: its full digits are rounding the user never typed."""
    if isinstance(value, int):
        return f"{value:,}"
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}"


def option(default: Any, help: str, *, label: str, group: str, **declaration: Any) -> Any:
    """A dataclass field with a default and its :class:`Option` declaration."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults so configs stay hashable and frozen")
    if group not in GROUPS:
        raise ValueError(f"Unknown form group {group!r}; add it to GROUPS.")
    return field(default=default, metadata={"option": Option(help=help, label=label, group=group, **declaration)})


def option_of(f: dataclasses.Field) -> Option:
    meta = f.metadata.get("option")
    if meta is None:
        raise TypeError(f"Field {f.name!r} is not declared with option().")
    return meta


def _check_number(label: str, value: float, *, gt: float | None = None, lower: float | None = None,
                  upper: float | None = None) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number (got {value}).")
    if gt is not None and not value > gt:
        raise ConfigError(f"{label} must be greater than {bound_text(gt)} (got {bound_text(value)}).")
    if lower is not None and value < lower:
        raise ConfigError(f"{label} must be at least {bound_text(lower)} (got {bound_text(value)}).")
    if upper is not None and value > upper:
        raise ConfigError(f"{label} must be at most {bound_text(upper)} (got {bound_text(value)}).")


def check_value(opt: Option, value: Any) -> None:
    """Raise ConfigError when ``value`` breaks the declaration (choices, bounds, NaN, item bounds)."""
    if value is None:
        return
    choices = opt.allowed()
    if choices and value not in choices:
        raise ConfigError(f"{opt.label} must be one of {', '.join(map(str, choices))} (got {value!r}).")
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        _check_number(opt.label, value, gt=opt.gt, lower=opt.min, upper=opt.max)  # ints stay exact
    elif isinstance(value, tuple):
        for item in value:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                _check_number(f"Each value of {opt.label[:1].lower() + opt.label[1:]}", item,
                              lower=opt.item_min, upper=opt.item_max)


def check_fields(obj: Any) -> None:
    """Check every declared field of a config dataclass against its declaration."""
    for f in dataclasses.fields(obj):
        if "option" in f.metadata:
            check_value(option_of(f), getattr(obj, f.name))


@dataclass(frozen=True)
class Group:
    title: str
    expanded: bool = False   # open in the form by default
    caption: str = ""


# The form's sections, in order. Every option names one of these.
GROUPS: dict[str, Group] = {g.title: g for g in (
    Group("Model", True),
    Group("Architecture", False, "The network's own options. Each model starts from its own values; change one "
                                 "to see its effect on the parameter count and time below."),
    Group("Images and augmentation", False),
    Group("Learning", True),
    Group("Rare classes", True),
    Group("Speed and reproducibility", False),
    Group("Data", False, "Chosen in the sidebar."),
)}
