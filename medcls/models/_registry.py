"""The model registry: ``@register_model`` builders with their own typed options, ``create_model``, ``list_models``.

As in timm and torchvision, a model is a short builder function registered by name;
nothing else in medcls branches on model names. Each entry names its options type
(a frozen dataclass whose fields are declared with :func:`medcls.config.option`) and
the values this model starts from, so ``seed_cnn`` and ``small_cnn`` share one
``CNNOptions`` declaration with different defaults.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from ..config.options import ConfigError
from ..config.serialize import build

__all__ = ["register_model", "create_model", "list_models", "model_entry", "model_option_types", "ModelEntry",
           "UnknownModelError"]


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    pretrained: bool                       # can start from ImageNet weights
    options_type: type | None = None       # the model's own options (a frozen dataclass), or None
    defaults: Mapping[str, Any] = field(default_factory=dict)  # this model's starting values of those options

    def make_options(self, values: Mapping[str, Any] | None = None) -> Any:
        """This model's options: its defaults, with ``values`` (checked and converted) on top."""
        values = dict(values or {})
        if self.options_type is None:
            if values:
                raise ConfigError(f"Model {self.name} has no options of its own (got {', '.join(values)}).")
            return None
        return build(self.options_type, {**self.defaults, **values})

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options_type)] if self.options_type else []


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(description: str, *, options: type | None = None, defaults: Mapping[str, Any] | None = None,
                   pretrained: bool = False) -> Callable[[Callable], Callable]:
    """Register ``fn`` under its own name. Duplicate names are refused."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        entry = ModelEntry(name, fn, description, pretrained, options, dict(defaults or {}))
        entry.make_options()  # the defaults must be valid options
        _REGISTRY[name] = entry
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"Unknown model {name!r}. Available: {', '.join(list_models())}.") from None


def model_option_types() -> dict[str, type | None]:
    """Each registered model's options type, by name (the option table is built from these)."""
    return {name: entry.options_type for name, entry in _REGISTRY.items()}


def create_model(name: str, *, num_classes: int, image_size: int = 128, in_channels: int = 3,
                 options: Any = None, **overrides: Any) -> nn.Module:
    """Build a registered model from its typed ``options`` (default: the model's own), with ``overrides``."""
    entry = model_entry(name)
    if options is None:
        options = entry.make_options(overrides)
    elif overrides:
        options = dataclasses.replace(options, **overrides)
    kwargs = {"options": options} if entry.options_type is not None else {}
    return entry.builder(num_classes=num_classes, image_size=image_size, in_channels=in_channels, **kwargs)
