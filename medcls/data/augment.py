"""Training augmentation on whole batches of tensors.

One random affine transform per image (rotation, zoom, shift and the
left-right flip folded into a single 2x3 matrix) is applied to the batch with
one ``affine_grid`` + ``grid_sample`` call, then per-image brightness and
contrast. Working on the batch, not image by image in PIL, keeps augmentation
a small share of a training step on a CPU. It is only used for training;
evaluation sees the images as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig

__all__ = ["BatchAugment", "to_float"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in 0..255 -> float32 in 0..1."""
    return images.float().div_(255.0)


class BatchAugment:
    """Random per-image flips, affine jitter, brightness and contrast for a float batch in [0, 1]."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    @property
    def active(self) -> bool:
        return self.cfg.active

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.active:
            return x
        c = self.cfg
        b = x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:  # (B,)
            return torch.rand(b, generator=generator) * (high - low) + low

        if c.rotate or c.scale or c.translate or c.hflip or c.vflip:
            angle = uniform(-c.rotate, c.rotate) * (math.pi / 180.0)
            zoom = uniform(1.0 - c.scale, 1.0 + c.scale)
            # grid coordinates run from -1 to 1, so a shift of f image widths is 2f.
            shift = torch.stack([uniform(-c.translate, c.translate), uniform(-c.translate, c.translate)], 1) * 2
            flip_x = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if c.hflip else torch.ones(b)
            flip_y = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if c.vflip else torch.ones(b)
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            # theta maps output pixel coordinates to input coordinates: (B, 2, 3).
            theta = torch.stack([
                torch.stack([cos * flip_x, -sin * flip_y, shift[:, 0]], 1),
                torch.stack([sin * flip_x, cos * flip_y, shift[:, 1]], 1),
            ], 1).to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        if c.brightness or c.contrast:
            gain = uniform(1.0 - c.brightness, 1.0 + c.brightness).view(b, 1, 1, 1)
            stretch = uniform(1.0 - c.contrast, 1.0 + c.contrast).view(b, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * stretch + mean) * gain
        return x.clamp_(0.0, 1.0)
