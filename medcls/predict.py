"""Single-image prediction from a finished run: file bytes in, class probabilities out.

The image goes through exactly the preprocessing the run was trained with
(the same decoder, colour mode and size, from ``model.json``), and the model
runs under ``torch.inference_mode``. Weights are read only from the run store,
with ``weights_only=True``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.imageio import open_image, resize_square, to_uint8
from .models import ClassifierModel, create_model
from .runs import CheckpointError, RunNotFoundError, RunStore

__all__ = ["Prediction", "Predictor", "load_predictor", "LOW_CONFIDENCE"]

LOW_CONFIDENCE = 0.6  # below this top probability the app warns that the model is unsure
_CACHE: "OrderedDict[tuple, Predictor]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]
    confidence: float

    @property
    def low_confidence(self) -> bool:
        return self.confidence < LOW_CONFIDENCE


class Predictor:
    def __init__(self, model: ClassifierModel, classes: list[str], image_size: int, color: str, run_id: str = "",
                 tta: bool = False):
        self.model = model.eval()
        self.classes = classes
        self.image_size = image_size
        self.color = color
        self.run_id = run_id
        self.tta = tta  # average with the mirror image, as the run was evaluated

    @classmethod
    def from_run(cls, store: RunStore, run_id: str) -> "Predictor":
        info = store.read_json(run_id, "model.json")
        if not info:
            raise RunNotFoundError(f"Run {run_id!r} has no model description yet (it has not started training).")
        model = create_model(info["name"], num_classes=len(info["classes"]), image_size=info["image_size"],
                             in_channels=info["in_channels"], weights="random", finetune=info.get("finetune"),
                             **info.get("options", {}))
        try:
            model.load_state_dict(store.load_weights(run_id))
        except RuntimeError as exc:  # weights of another shape: the file was swapped or model.json edited
            detail = (str(exc).strip().splitlines() or ["shape mismatch"])[0]
            raise CheckpointError(f"Run {run_id!r}: best.pt does not fit the model described in model.json "
                                  f"({detail}).") from None
        return cls(model, list(info["classes"]), int(info["image_size"]), info["color"], run_id,
                   bool(info.get("tta", False)))

    def pixels(self, source: bytes | str | Path, name: str | None = None) -> np.ndarray:
        """Decoded, resized uint8 pixels (C, S, S) as the model sees them; raises ImageReadError."""
        arr = resize_square(to_uint8(open_image(source, name=name), self.color), self.image_size)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def tensor(self, pixels: np.ndarray) -> torch.Tensor:
        return torch.tensor(pixels, dtype=torch.float32).div_(255.0).unsqueeze(0)

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        x = self.tensor(pixels)
        if self.tta:  # one batch of two: the image and its mirror
            return torch.softmax(self.model(torch.cat([x, x.flip(-1)])), 1).mean(0).numpy()
        return torch.softmax(self.model(x), 1)[0].numpy()

    def predict(self, source: bytes | str | Path, name: str | None = None) -> Prediction:
        probs = self.probabilities(self.pixels(source, name))
        top = int(np.argmax(probs))
        return Prediction(self.classes[top], {c: float(p) for c, p in zip(self.classes, probs)}, float(probs[top]))


def load_predictor(store: RunStore, run_id: str) -> Predictor:
    """A cached predictor per run (reloaded when the run's weights file changes)."""
    weights = store.file(run_id, "best.pt")
    if not weights.is_file():
        raise RunNotFoundError(f"Run {run_id!r} has no saved weights yet.")
    key = (str(store.root.resolve()), run_id, weights.stat().st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    predictor = Predictor.from_run(store, run_id)
    with _CACHE_LOCK:
        _CACHE[key] = predictor
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return predictor
