"""What a model costs before it trains: parameters per layer (in words), memory, and arithmetic per image.

Time is measured, not modelled from parameters: see :mod:`medcls.training.estimate`. The arithmetic
(:func:`forward_macs`) is for decisions that must come out the same on every machine, such as whether a
dataset is small enough to train as a fold ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .base import ClassifierModel

__all__ = ["ModelSummary", "summarize", "forward_macs", "OPTIMIZER_STATE_COPIES"]

# Extra float32 copies of every trainable weight an optimizer keeps (Adam: two moments; SGD: momentum).
OPTIMIZER_STATE_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}


@dataclass
class ModelSummary:
    parameters: int
    trainable: int
    weights_mb: float
    optimizer_mb: float
    layers: list[tuple[str, int]] = field(default_factory=list)
    largest_layer: tuple[str, int] = ("", 0)
    largest_is_linear: bool = False  # a fully connected layer (the seed's flatten head), not a conv

    @property
    def largest_share(self) -> float:
        return self.largest_layer[1] / self.parameters if self.parameters else 0.0


def summarize(model: ClassifierModel, optimizer: str = "adamw") -> ModelSummary:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = model.layer_parameters()
    largest = max(layers, key=lambda row: row[1]) if layers else ("", 0)
    modules = model.parameter_modules()
    biggest_module = max(modules, key=lambda row: row[2])[1] if modules else None
    copies = OPTIMIZER_STATE_COPIES.get(optimizer, 2)
    return ModelSummary(parameters=total, trainable=trainable, weights_mb=total * 4 / 2**20,
                        optimizer_mb=trainable * 4 * (copies + 1) / 2**20,  # + one copy for gradients
                        layers=layers, largest_layer=largest,
                        largest_is_linear=isinstance(biggest_module, nn.Linear))


def forward_macs(model: nn.Module, image_size: int, in_channels: int) -> int:
    """Multiply-adds of the convolutions and linear layers for one image of ``image_size`` px (a forward pass)."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        weight = module.weight
        if isinstance(module, nn.Conv2d):  # every output value: (in channels / groups) x kernel area products
            total += output.numel() * weight[0].numel()
        else:
            total += output.numel() * weight.shape[1]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total
