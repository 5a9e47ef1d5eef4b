"""Training augmentation on whole batches of tensors.

One random affine transform per image (rotation, zoom, shift and the
left-right flip folded into a single 2x3 matrix) is applied to the batch with
one ``grid_sample`` call, then per-image brightness and contrast in one
multiply-add. Working on the batch, not image by image in PIL, keeps augmentation
a small share of a training step on a CPU. It is only used for training;
evaluation sees the images as they are.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..config import AugmentConfig

__all__ = ["BatchAugment", "affine_grid", "to_float"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in 0..255 -> float32 in 0..1."""
    return images.float().div_(255.0)


@lru_cache(maxsize=8)
def _pixel_centres(height: int, width: int) -> torch.Tensor:
    """(H*W, 3) rows of (x, y, 1): each output pixel's centre in grid coordinates, -1..1 (align_corners=False)."""
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                        torch.ones(height, width)], -1).reshape(height * width, 3)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=False)`` as one matrix product with the pixel centres
    kept from call to call: (B, 2, 3) -> (B, H, W, 2), the same grid to float rounding.

    The product is (B*2, 3) @ (3, H*W), returned as a (B, H, W, 2) view of its (B, 2, H, W) result, which
    ``grid_sample`` reads as fast as a contiguous grid. On a CPU, grid and sampling together took 0.55 ms for a
    batch of 32 at 128 px, against 1.3 ms with the built-in, which rebuilds and copies its base grid every call:
    a few percent of a small network's training step."""
    b = theta.shape[0]
    centres = _pixel_centres(height, width).to(theta.dtype)
    return (theta.reshape(b * 2, 3) @ centres.t()).view(b, 2, height, width).permute(0, 2, 3, 1)


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
            grid = affine_grid(theta, x.shape[-2], x.shape[-1])
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        if c.brightness or c.contrast:
            gain = uniform(1.0 - c.brightness, 1.0 + c.brightness).view(b, 1, 1, 1)
            stretch = uniform(1.0 - c.contrast, 1.0 + c.contrast).view(b, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            # ((x - mean) * stretch + mean) * gain, as one pass over the pixels: x * scale + offset.
            x = torch.addcmul(mean * (1.0 - stretch) * gain, x, stretch * gain)
        return x.clamp_(0.0, 1.0)
