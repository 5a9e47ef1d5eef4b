"""Grad-CAM: which parts of an image raised the model's score for a class.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps of the last
convolutional stage by how much the class score grows with each of them, keeps
the positive part and scales it up to the image. Captum's ``LayerGradCam`` does
the work on the layer each model names with ``gradcam_layer()``, so every
registered model is supported without model-specific code.

Captum reads the layer through temporary hooks. The predictor's model is
shared by every page and user of the app, so the map is computed on a private
copy ("twin") that receives the model's current weights on each call: the
shared model is never hooked, put in another mode, or given gradients.
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import TYPE_CHECKING

import numpy as np
import plotly.colors
import torch

from ..models import ClassifierModel
from ..models.ensemble import FoldEnsemble

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["gradcam_map", "gradcam_overlay", "heat_colors", "gradcam_grid", "coarse_map_note", "ensemble_note"]

COLORSCALE = "Turbo"  # dark blue (little) -> green -> yellow -> dark red (most)

_TWINS: "weakref.WeakKeyDictionary[ClassifierModel, tuple[ClassifierModel, threading.Lock]]" = \
    weakref.WeakKeyDictionary()
_TWINS_LOCK = threading.Lock()
_LUT: np.ndarray | None = None


def _twin(model: ClassifierModel) -> tuple[ClassifierModel, threading.Lock]:
    with _TWINS_LOCK:
        entry = _TWINS.get(model)
        if entry is None:
            with torch.inference_mode(False):  # a copy made in inference mode could never load weights again
                twin = copy.deepcopy(model).eval()
            twin.requires_grad_(False)  # only the layer's activations need gradients, never the weights
            entry = (twin, threading.Lock())
            _TWINS[model] = entry
    return entry


def _check(model: ClassifierModel, pixels: np.ndarray, class_index: int) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError("Grad-CAM needs the image as uint8 pixels shaped (channels, size, size), "
                         "as Predictor.pixels returns them.")
    if pixels.shape[0] != model.in_channels:
        raise ValueError(f"The model takes {model.in_channels} channel(s) but the image has {pixels.shape[0]}. "
                         "Decode it with the run's own predictor (Predictor.pixels).")
    if not 0 <= int(class_index) < model.num_classes:
        raise ValueError(f"Class index {class_index} is out of range: the model has {model.num_classes} classes "
                         f"(0 to {model.num_classes - 1}).")


def gradcam_map(model: ClassifierModel, pixels: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM of ``class_index`` for one image: float32 (S, S) in [0, 1], 1 where the evidence is strongest.

    ``pixels`` is uint8 (C, S, S). An all-zero map means nothing in the image raised that class's score.
    """
    _check(model, pixels, class_index)
    if isinstance(model, FoldEnsemble):  # the ensemble's evidence: its members' maps, averaged
        heat = np.mean([gradcam_map(member, pixels, class_index) for member in model.members], axis=0)
        top = float(heat.max())
        return (heat / top if top > 0 else heat).astype(np.float32)
    size = pixels.shape[1:]
    x = torch.tensor(pixels, dtype=torch.float32).div_(255.0).unsqueeze(0)
    twin, lock = _twin(model)
    # Callers may sit inside torch.inference_mode or no_grad; Grad-CAM needs autograd.
    with lock, torch.inference_mode(False), torch.enable_grad():
        twin.load_state_dict(model.state_dict())  # follow the model's current weights
        from captum.attr import (  # imported on first use: ~0.5 s
            LayerAttribution,
            LayerGradCam,
        )

        cam = LayerGradCam(twin, twin.gradcam_layer()).attribute(x, target=int(class_index),
                                                                   relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach(), tuple(size), interpolate_mode="bilinear")
    heat = cam[0, 0].numpy().astype(np.float32)
    heat = np.nan_to_num(heat, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    top = float(heat.max())
    return (heat / top if top > 0 else np.zeros_like(heat)).clip(0.0, 1.0).astype(np.float32)


def gradcam_grid(model: ClassifierModel, image_size: int) -> tuple[int, int]:
    """The size of the layer Grad-CAM reads (its map has this many cells before it is scaled to the image)."""
    if isinstance(model, FoldEnsemble):  # its members share one architecture, and the map averages theirs
        return gradcam_grid(model.members[0], image_size)
    shape: list[tuple[int, int]] = []
    twin, lock = _twin(model)
    with lock, torch.no_grad():
        handle = twin.gradcam_layer().register_forward_hook(lambda m, i, out: shape.append(tuple(out.shape[-2:])))
        try:
            twin(torch.zeros(1, twin.in_channels, image_size, image_size))
        finally:
            handle.remove()
    return shape[0] if shape else (image_size, image_size)


def coarse_map_note(model: ClassifierModel, image_size: int) -> str:
    """A warning when the map is too coarse to show where anything is ('' when it is fine)."""
    rows, cols = gradcam_grid(model, image_size)
    if rows * cols > 4:
        return ""
    cells = "one cell" if rows * cols == 1 else f"{rows} x {cols} cells"
    return (f"At {image_size} px this network's last layer is only {cells}, so the heatmap cannot show where in the "
            "image the evidence lies: it colours the whole image (nearly) evenly. Fewer conv blocks or larger images "
            "give it room.")


def ensemble_note(model: ClassifierModel) -> str:
    """For an ensemble (fold or bagged models), a sentence saying its map is its members' maps averaged ('' for one
    model)."""
    if not isinstance(model, FoldEnsemble):
        return ""
    n = len(model.members)
    if n == 1:  # an ensemble run stopped in its first model holds that model only
        return "This run holds one model of its ensemble (it was stopped before the others), so the map is that model's."
    return (f"This run is {n} models predicting together, so the map is the average of their {n} maps: "
            "where they agree, it is brightest.")


def heat_colors(heat: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB colours of the heatmap colour scale (shape + (3,))."""
    global _LUT
    if _LUT is None:
        samples = plotly.colors.sample_colorscale(COLORSCALE, list(np.linspace(0.0, 1.0, 256)), colortype="tuple")
        _LUT = np.round(np.array(samples) * 255).astype(np.uint8)
    index = np.round(np.clip(heat, 0.0, 1.0) * 255).astype(np.intp)
    return _LUT[index]


def gradcam_overlay(predictor: "Predictor", pixels: np.ndarray, class_index: int, alpha: float = 0.4) -> np.ndarray:
    """The image (gray shown as RGB) with its Grad-CAM heatmap blended in at ``alpha``: uint8 (S, S, 3)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"Heatmap opacity must be between 0 and 1 (got {alpha}).")
    heat = gradcam_map(predictor.model, pixels, class_index)
    image = pixels.transpose(1, 2, 0)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat_colors(heat).astype(np.float32)
    return np.round(blended).clip(0, 255).astype(np.uint8)
