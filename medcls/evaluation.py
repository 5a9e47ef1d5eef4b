"""Evaluate a finished run's best checkpoint on its own test split or on another dataset."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .data import DataError, decode_dataset, load_dataset, to_float
from .metrics import classification_metrics
from .models import ClassifierModel
from .predict import load_predictor
from .runs import RunStore

__all__ = ["evaluate_run", "predict_batches"]


@torch.inference_mode()
def predict_batches(model: ClassifierModel, images: torch.Tensor, batch_size: int = 64,
                    tta: bool = False) -> np.ndarray:
    """Class probabilities (N, K) for uint8 images (N, C, H, W); with ``tta`` averaged with the mirror images."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size])
        probs = torch.softmax(model(x), 1)
        if tta:
            probs = (probs + torch.softmax(model(x.flip(-1)), 1)) / 2
        out.append(probs)
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes))


def evaluate_run(store: RunStore, run_id: str, data_source: str | None = None, split: str = "test",
                 class_aliases: list[str] | None = None) -> dict:
    cfg = store.config(run_id)
    predictor = load_predictor(store, run_id)
    data_cfg = cfg.data
    if data_source is not None:
        data_cfg = dataclasses.replace(data_cfg, source=data_source, layout="auto")
    if class_aliases is not None:
        data_cfg = dataclasses.replace(data_cfg, class_aliases=tuple(class_aliases))
    spec = load_dataset(data_cfg)
    decoded = decode_dataset(spec, predictor.image_size, predictor.color, disk_cache=data_cfg.disk_cache)
    run_index = {c.casefold(): i for i, c in enumerate(predictor.classes)}
    unknown = [c for c in decoded.spec.classes if c.casefold() not in run_index]
    if unknown:
        raise DataError(f"The data has class(es) {', '.join(unknown)} that run {run_id} does not know "
                        f"(it knows {', '.join(predictor.classes)}). Add class aliases to match them.")
    remap = np.array([run_index[c.casefold()] for c in decoded.spec.classes])
    keep = [i for i, it in enumerate(decoded.spec.items) if split == "all" or it.split == split]
    if not keep:
        raise DataError(f"The data has no {split} images.")
    images = torch.from_numpy(decoded.images[keep])
    y_true = remap[[decoded.spec.items[i].label for i in keep]]
    probs = predict_batches(predictor.model, images, tta=predictor.tta)
    return classification_metrics(y_true, probs, predictor.classes)
