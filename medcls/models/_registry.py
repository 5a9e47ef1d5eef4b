"""The model registry: ``@register_model`` builders, ``create_model`` and ``list_models``.

As in timm and torchvision, a model is a short builder function registered by
name; nothing else in medcls branches on model names.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_entry", "ModelEntry", "UnknownModelError"]

# Options every model accepts silently even when they do not apply (they come from the
# shared config form); any other option a builder does not take is an error.
SOFT_OPTIONS = frozenset({"weights", "finetune"})


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    pretrained: bool  # can start from ImageNet weights
    options: frozenset[str] | None = None  # keyword options; None: read from the builder's signature

    def accepts(self) -> set[str]:
        if self.options is not None:
            return set(self.options)
        return set(inspect.signature(self.builder).parameters) - {"num_classes", "image_size", "in_channels"}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(description: str, *, pretrained: bool = False,
                   options: frozenset[str] | None = None) -> Callable[[Callable], Callable]:
    """Register ``fn`` under its own name. Duplicate names are refused."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        _REGISTRY[name] = ModelEntry(name, fn, description, pretrained, options)
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


def create_model(name: str, *, num_classes: int, image_size: int = 128, in_channels: int = 3,
                 **options: Any) -> nn.Module:
    """Build a registered model. ``None`` options keep the model's defaults."""
    entry = model_entry(name)
    accepted = entry.accepts()
    given = {k: v for k, v in options.items() if v is not None}
    unsupported = sorted(set(given) - accepted - SOFT_OPTIONS)
    if unsupported:
        raise ValueError(f"Model {name!r} does not take the option(s) {', '.join(unsupported)}. "
                         f"Its options: {', '.join(sorted(accepted)) or 'none'}.")
    kwargs = {k: v for k, v in given.items() if k in accepted}
    return entry.builder(num_classes=num_classes, image_size=image_size, in_channels=in_channels, **kwargs)
