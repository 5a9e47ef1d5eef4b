"""What a model costs before it trains: parameters per layer, memory, and seconds per epoch here.

The time estimate comes from a short probe: a couple of real training steps on
random inputs of the configured size and batch on this machine, scaled to the
number of steps in an epoch, plus validation (inference costs about a third of
a training step per image).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import ClassifierModel

__all__ = ["ModelSummary", "summarize", "time_step", "estimate_epoch_seconds", "OPTIMIZER_STATE_COPIES"]

# Extra float32 copies of every trainable weight an optimizer keeps (Adam: two moments; SGD: momentum).
OPTIMIZER_STATE_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}
EVAL_COST_SHARE = 1 / 3  # an inference pass costs about a third of a training step


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
    copies = OPTIMIZER_STATE_COPIES.get(optimizer, 2)
    return ModelSummary(parameters=total, trainable=trainable, weights_mb=total * 4 / 2**20,
                        optimizer_mb=trainable * 4 * (copies + 1) / 2**20,  # + one copy for gradients
                        layers=layers, largest_layer=largest,
                        largest_is_linear=isinstance(dict(model.named_modules()).get(largest[0]), nn.Linear))


def time_step(model: nn.Module, batch_size: int, in_channels: int, image_size: int, num_classes: int,
              *, repeats: int = 2, channels_last: bool = True) -> float:
    """Median seconds of one forward+backward+optimizer step at this batch size (weights restored)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(batch_size, in_channels, image_size, image_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
    y = torch.arange(batch_size) % num_classes
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-9)
    was_training = model.training
    model.train()
    times = []
    try:
        for i in range(repeats + 1):  # the first step pays for allocations; not counted
            start = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i:
                times.append(time.perf_counter() - start)
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    return sorted(times)[len(times) // 2]


def estimate_epoch_seconds(step_seconds: float, batch_size: int, train_images: int, val_images: int) -> float:
    """Seconds for one epoch: the training steps plus a validation pass."""
    steps = max(1, math.ceil(train_images / batch_size))
    per_image = step_seconds / batch_size
    return steps * step_seconds + val_images * per_image * EVAL_COST_SHARE
