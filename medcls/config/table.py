"""The flat table of every option: name -> where it lives, its declaration and its type.

Options are addressed by their own names everywhere outside the config classes
(``--lr``, ``cfg.with_options(blocks=3)``, a sweep over ``imbalance``). A model's
own options (``blocks``, ``weights``, ...) are in the table once, with the models
that declare them; the same name declared by two models (``dropout``) must mean the
same thing there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

from .options import Option, option_of
from .serialize import base_type, type_hints

__all__ = ["OptionSpec", "option_table", "option_spec", "SECTIONS", "MODEL_SECTION"]

MODEL_SECTION = "model_options"
SECTIONS = ("", "data", "augment", MODEL_SECTION)  # '' is TrainConfig itself


@dataclass(frozen=True)
class OptionSpec:
    """One option as the CLI, forms, sweeps and diffs need it."""

    name: str
    section: str                      # '', 'data', 'augment' or 'model_options'
    option: Option
    hint: Any                         # the declared type, e.g. ``tuple[int, ...]``
    base: Any                         # that type without None
    default: Any                      # for a model option: the first declaring model's default
    models: tuple[str, ...] = ()      # model options only: the models that declare it

    @property
    def label(self) -> str:
        return self.option.label

    @property
    def help(self) -> str:
        return self.option.help

    @property
    def is_model_option(self) -> bool:
        return self.section == MODEL_SECTION


def _fields(cls: type) -> Iterator[tuple[dataclasses.Field, Any]]:
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if "option" in f.metadata:
            yield f, hints[f.name]


def _build(model_types: tuple[tuple[str, type | None], ...]) -> dict[str, OptionSpec]:
    from .schema import AugmentConfig, DataConfig, TrainConfig

    table: dict[str, OptionSpec] = {}

    def add(spec: OptionSpec) -> None:
        if spec.name in table:
            raise TypeError(f"Option {spec.name!r} is declared twice ({table[spec.name].section or 'top'} and "
                            f"{spec.section or 'top'}); option names must be unique.")
        table[spec.name] = spec

    for f, hint in _fields(TrainConfig):
        add(OptionSpec(f.name, "", option_of(f), hint, base_type(hint)[0], f.default))
        if f.name == "model":  # the model's own options follow the model picker
            declared: dict[str, OptionSpec] = {}
            for model, options_type in model_types:
                if options_type is None:
                    continue
                for mf, mhint in _fields(options_type):
                    if mf.name in declared:
                        declared[mf.name] = dataclasses.replace(declared[mf.name],
                                                                models=declared[mf.name].models + (model,))
                    else:
                        declared[mf.name] = OptionSpec(mf.name, MODEL_SECTION, option_of(mf), mhint,
                                                       base_type(mhint)[0], mf.default, (model,))
            for spec in declared.values():
                add(spec)
    for section, cls in (("augment", AugmentConfig), ("data", DataConfig)):
        for f, hint in _fields(cls):
            add(OptionSpec(f.name, section, option_of(f), hint, base_type(hint)[0], f.default))
    return table


_CACHE: dict[tuple, dict[str, OptionSpec]] = {}


def option_table() -> dict[str, OptionSpec]:
    """Every option by flat name, in declaration order (the model's options right after the model)."""
    from ..models import model_option_types

    key = tuple(model_option_types().items())
    table = _CACHE.get(key)
    if table is None:
        table = _CACHE[key] = _build(key)
    return table


def option_spec(name: str) -> OptionSpec:
    table = option_table()
    if name not in table:
        from .options import ConfigError

        raise ConfigError(f"Unknown option {name!r}. Known options: {', '.join(sorted(table))}.")
    return table[name]
