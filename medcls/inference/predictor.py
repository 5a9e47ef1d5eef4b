"""Predicting with a trained run: file bytes (or a dataset item) in, class probabilities out.

:func:`load_run_model` is the one way to rebuild a run's model: its config names the
model and its options, its model record the classes and input format, and its
checkpoint the weights (read only from the run store, with ``weights_only=True``).
The image goes through exactly the preprocessing the run was trained with (the same
decoder, colour mode and size), and the model answers through
:func:`~medcls.inference.proba.predict_proba`, with the run's test-time augmentation.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.imageio import decode_resized
from ..models import ClassifierModel, create_model
from ..models.ensemble import FoldEnsemble
from ..runs.records import ModelRecord
from ..runs.reference import FeatureReference
from ..runs.store import CheckpointError, RunNotFoundError, RunStore
from .novelty import Novelty, judge
from .proba import predict_proba

__all__ = ["Prediction", "Predictor", "load_predictor", "load_run_model", "LOW_CONFIDENCE"]

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


def load_run_model(store: RunStore, run_id: str) -> tuple[ClassifierModel, ModelRecord]:
    """The run's model with its best weights, in eval mode, and its model record."""
    record = store.model_record(run_id)
    if record is None:
        raise RunNotFoundError(f"Run {run_id!r} has no model description yet (it has not started training).")
    cfg = store.config(run_id)
    options = cfg.model_options
    if hasattr(options, "weights"):  # the checkpoint brings the weights; never fetch pretrained ones again
        options = dataclasses.replace(options, weights="random")
    def build() -> ClassifierModel:
        return create_model(cfg.model, num_classes=len(record.classes), image_size=record.image_size,
                            in_channels=record.in_channels, options=options)

    # A cross-validation run's checkpoint holds its fold models, which answer together.
    model = FoldEnsemble([build() for _ in range(record.folds)]) if record.folds else build()
    try:
        model.load_state_dict(store.load_weights(run_id))
    except RuntimeError as exc:  # weights of another shape: the file was swapped or a record edited
        detail = (str(exc).strip().splitlines() or ["shape mismatch"])[0]
        raise CheckpointError(f"Run {run_id!r}: best.pt does not fit the model its config describes "
                              f"({detail}).") from None
    return model.eval(), record


class Predictor:
    def __init__(self, model: ClassifierModel, classes: list[str], image_size: int, color: str, run_id: str = "",
                 tta: bool = False, reference: FeatureReference | None = None):
        self.model = model.eval()
        self.classes = list(classes)
        self.image_size = image_size
        self.color = color
        self.run_id = run_id
        self.tta = tta  # average with the mirror image, as the run was evaluated
        self.reference = reference  # the training images' features (None: a run from before the check)

    @classmethod
    def from_run(cls, store: RunStore, run_id: str) -> "Predictor":
        model, record = load_run_model(store, run_id)
        return cls(model, list(record.classes), record.image_size, record.color, run_id, record.tta,
                   store.feature_reference(run_id))

    def novelty(self, pixels: np.ndarray) -> Novelty | None:
        """How unlike the training images this image is (None when the run recorded no training features)."""
        if self.reference is None:
            return None
        return judge(self.model, self.reference, pixels)

    def pixels(self, source: bytes | str | Path, name: str | None = None) -> np.ndarray:
        """Decoded, resized uint8 pixels (C, S, S) as the model sees them; raises ImageReadError.

        ``source`` is file bytes, a file path, or a dataset item's path (a MedMNIST ``file.npz::split/index``).
        """
        return decode_resized(str(source) if isinstance(source, Path) else source, self.image_size, self.color,
                              name=name)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (K,) for uint8 pixels (C, S, S)."""
        return predict_proba(self.model, torch.from_numpy(np.array(pixels, dtype=np.uint8))[None], tta=self.tta)[0]

    def prediction(self, probs: np.ndarray) -> Prediction:
        top = int(np.argmax(probs))
        return Prediction(self.classes[top], {c: float(p) for c, p in zip(self.classes, probs)}, float(probs[top]))

    def predict(self, source: bytes | str | Path, name: str | None = None) -> Prediction:
        return self.prediction(self.probabilities(self.pixels(source, name)))


def load_predictor(store: RunStore, run_id: str) -> Predictor:
    """A cached predictor per run (reloaded when the run's weights file changes)."""
    if not store.has_weights(run_id):
        raise RunNotFoundError(f"Run {run_id!r} has no saved weights yet.")
    novelty = store.file(run_id, "novelty.npz")  # written when the run is tested, after its last weights
    key = (str(store.root.resolve()), run_id, store.weights_version(run_id),
           novelty.stat().st_mtime_ns if novelty.is_file() else 0)
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
