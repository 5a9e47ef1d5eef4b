"""What a model costs before it trains: parameters per layer (in words) and memory.

Time is measured, not modelled from parameters: see :mod:`medcls.training.estimate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .base import ClassifierModel

__all__ = ["ModelSummary", "summarize", "OPTIMIZER_STATE_COPIES"]

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
