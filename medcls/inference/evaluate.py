"""Evaluate a finished run's best checkpoint on its own test split or on another dataset."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..analysis.metrics import SplitMetrics, classification_metrics
from ..config import DataConfig
from ..data import DataError, decode_dataset, load_dataset
from ..runs.store import RunStore
from .predictor import load_predictor
from .proba import predict_proba

__all__ = ["evaluate_run", "evaluation_data", "on_runs_data"]


def evaluation_data(store: RunStore, run_id: str, data_source: str | None = None,
                    class_aliases: list[str] | None = None) -> DataConfig:
    """The data an evaluation reads: the run's own, or ``data_source`` split as the run split its data."""
    data_cfg = store.config(run_id).data
    if data_source is not None:
        data_cfg = dataclasses.replace(data_cfg, source=data_source, layout="auto")
    if class_aliases is not None:
        data_cfg = dataclasses.replace(data_cfg, class_aliases=tuple(class_aliases))
    return data_cfg


def on_runs_data(store: RunStore, run_id: str, data_source: str, class_aliases: list[str] | None = None) -> bool:
    """Whether ``data_source`` holds the images, labels and splits the run trained on, read from another place (an
    upload of its .npz, a copy of its folder): then its training split is images the run learned from."""
    record = store.data_record(run_id)
    return record is not None and bool(record.fingerprint) and \
        load_dataset(evaluation_data(store, run_id, data_source, class_aliases)).fingerprint() == record.fingerprint


def evaluate_run(store: RunStore, run_id: str, data_source: str | None = None, split: str = "test",
                 class_aliases: list[str] | None = None) -> SplitMetrics:
    predictor = load_predictor(store, run_id)
    data_cfg = evaluation_data(store, run_id, data_source, class_aliases)
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
    probs = predict_proba(predictor.model, images, tta=predictor.tta)
    return classification_metrics(y_true, probs, predictor.classes)
