"""Class probabilities for a batch of images: the one place where a model is asked, with or without TTA.

Training's validation, the final test, evaluation on other data, single-image
prediction and the frozen-feature cache all call :func:`predict_proba` or
:func:`tta_views`, so test-time augmentation (averaging an image and its mirror)
means the same thing everywhere.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from ..data.augment import to_float

__all__ = ["tta_views", "predict_proba"]


def tta_views(x: torch.Tensor, tta: bool) -> list[torch.Tensor]:
    """The views a float image batch (B, C, H, W) is judged on: itself and, with TTA, its left-right mirror."""
    return [x, x.flip(-1)] if tta else [x]


@torch.inference_mode()
def predict_proba(model: nn.Module, inputs: torch.Tensor, *, tta: bool = False, batch_size: int = 64,
                  prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  autocast: Callable[[], ContextManager] = nullcontext,
                  on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Class probabilities (N, K) in eval mode.

    ``inputs`` are uint8 images (N, C, H, W), turned into floats by ``prepare`` (default: scaled to [0, 1])
    and judged on :func:`tta_views`; or precomputed features (N, V, F) with V views each (a frozen
    backbone's cache, whose views already include the mirror), which are averaged the same way.
    ``on_batch(done, total)`` is called after each batch (progress, cancellation).
    """
    model.eval()
    prepare = prepare or to_float
    n = len(inputs)
    batches = math.ceil(n / batch_size)
    out = []
    for b in range(batches):
        chunk = inputs[b * batch_size:(b + 1) * batch_size]
        views = [chunk[:, v] for v in range(chunk.shape[1])] if chunk.dim() == 3 else tta_views(prepare(chunk), tta)
        with autocast():
            probs = torch.stack([torch.softmax(model(view).float(), 1) for view in views]).mean(0)
        out.append(probs)
        if on_batch is not None:
            on_batch(b + 1, batches)
    if not out:
        return np.zeros((0, _num_classes(model)), dtype=np.float32)
    return torch.cat(out).numpy()


def _num_classes(model: nn.Module) -> int:
    inner = getattr(model, "module", model)
    if hasattr(inner, "num_classes"):
        return int(inner.num_classes)
    last = [m for m in inner.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 0
