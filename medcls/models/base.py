"""The interface every medcls model shares.

Input is a float batch in [0, 1], shape (B, C, H, W) with C = 1 or 3. The
model normalises it itself with the mean and std that belong to it (ImageNet
statistics for pretrained backbones), so no code elsewhere hand-copies
normalisation constants. As in timm, models split into ``forward_features``
(image -> feature vector) and ``forward_head`` (features -> logits), which is
what feature caching for frozen backbones and Grad-CAM build on.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["ClassifierModel", "IMAGENET_MEAN", "IMAGENET_STD", "count_parameters", "map_summary"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _per_channel(values: Sequence[float], channels: int) -> torch.Tensor:
    if channels == len(values):
        t = torch.tensor(values)
    else:  # a gray image is the average of the RGB channels
        t = torch.tensor([sum(values) / len(values)] * channels)
    return t.view(1, channels, 1, 1)


def map_summary(maps: torch.Tensor) -> torch.Tensor:
    """Feature maps (B, C, H, W) as one vector per image: each channel's mean, and its spread when H*W > 1."""
    flat = maps.float().flatten(2)
    parts = [flat.mean(2)]
    if flat.shape[2] > 1:
        parts.append(flat.std(2))
    return torch.cat(parts, 1)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class ClassifierModel(nn.Module):
    """Base class: normalisation buffers plus the features/head split."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"Models take 1 (gray) or 3 (RGB) input channels, not {in_channels}.")
        if num_classes < 2:
            raise ValueError(f"A classifier needs at least 2 classes, got {num_classes}.")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.register_buffer("input_mean", _per_channel(mean, in_channels), persistent=False)
        self.register_buffer("input_std", _per_channel(std, in_channels), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # normalised (B, C, H, W) -> (B, F)
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # (B, F) -> logits (B, K)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(self.normalize(x)))

    def embed_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What the network sees in each image, level by level: a list of (B, F) feature vectors, from the
        first stage (edges, texture, speckle) to the last (what the head reads). Novelty checks compare images
        with these (``medcls.inference.novelty``). ``x`` is a float batch in [0, 1], as for ``forward``.

        By default one level, the head's input; convolutional models give each stage's maps summarised by
        their mean and spread over the image (:func:`map_summary`).
        """
        return [self.forward_features(self.normalize(x)).flatten(1)]

    @property
    def head(self) -> nn.Module:
        raise NotImplementedError

    @property
    def frozen_features(self) -> bool:
        """True when nothing before the head trains, so features can be computed once and cached."""
        return False

    def gradcam_layer(self) -> nn.Module:
        """The last convolutional stage, where Grad-CAM reads activations and gradients."""
        raise NotImplementedError

    def parameter_modules(self) -> list[tuple[str, nn.Module, int]]:
        """(module name, module, parameter count) for every module that owns parameters directly."""
        rows = []
        for name, module in self.named_modules():
            own = sum(p.numel() for p in module.parameters(recurse=False))
            if own:
                rows.append((name or type(module).__name__, module, own))
        return rows

    def layer_parameters(self) -> list[tuple[str, int]]:
        """(layer in words, parameter count), in order; every parameter is counted once. Models name their own
        layers ("block 2 · convolution", "head · output layer"); by default the module names."""
        return [(name, count) for name, _, count in self.parameter_modules()]
