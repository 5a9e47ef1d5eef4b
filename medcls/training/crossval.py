"""k-fold cross-validation: k models, each validated on a different part of the training + validation images.

On a few hundred images one test split is a noisy judge (one malignant image moves recall by several
points). Cross-validation pools the train and val splits, cuts them into k stratified folds (near-duplicates
kept in one fold when the data config asks for it), and trains one model per fold with that fold as its
validation set. The result reports each fold's score and their mean ± standard deviation (the honest
error bar), predicts every pooled image with the model that never saw it (out-of-fold predictions), and
keeps the k models as one ensemble, which is what the test split, Compare and Try it see.

With 0 folds and ``small_data_ensemble`` on (the default), a small dataset is cross-validated anyway, and
*Image size* 0 (the default) is chosen for the data: :mod:`medcls.training.autoplan` says when and why.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..analysis.metrics import classification_metrics
from ..config import ConfigError, TrainConfig
from ..data.cache import DecodedSplit
from ..data.sources import load_dataset
from ..data.spec import DatasetSpec
from ..inference.proba import predict_proba
from ..models.ensemble import FoldEnsemble
from ..runs.results import CrossValidation, FoldScore
from .autoplan import resolve_folds, size_for_data
from .engine import Callback, FitResult
from .members import train_members
from .pipeline import PreparedData, Stage, TrainResult, prepare_data, train_in_memory

__all__ = ["cross_validate", "fold_assignment", "fit", "pool_of", "subset"]

log = logging.getLogger(__name__)

def fit(cfg: TrainConfig, data: PreparedData | None = None, *, callbacks: Sequence[Callback] = (),
        should_cancel: Callable[[], bool] | None = None, stage: Stage | None = None) -> TrainResult:
    """Train as configured: one model, k fold models (set, or chosen for a small dataset) or k bagged models, at
    the image size set or chosen for the data (:mod:`~medcls.training.autoplan`). ``data``, when given, was
    prepared at the chosen size."""
    spec = data.decoded.spec if data is not None else load_dataset(cfg.data)
    cfg, size_note = size_for_data(cfg, spec)
    data = data or prepare_data(cfg, stage, spec=spec)
    if data.decoded.image_size != cfg.image_size:
        raise ValueError(f"The data was prepared at {data.decoded.image_size} px but the run trains at {cfg.image_size} "
                         "px: prepare it with the config size_for_data gives.")
    cfg, note = resolve_folds(cfg, data)
    note = note or size_note
    if cfg.folds:
        result = cross_validate(cfg, data, callbacks_for=lambda fold, folds: callbacks, should_cancel=should_cancel,
                                stage=stage)
    elif cfg.bagged_models:
        from .bagging import train_bagged  # bagging builds on this module's member loop

        result = train_bagged(cfg, data, callbacks_for=lambda member, members: callbacks,
                              should_cancel=should_cancel, stage=stage)
    else:
        result = train_in_memory(cfg, data, callbacks=callbacks, should_cancel=should_cancel, stage=stage)
    if note:
        result.notes.insert(0, note)
    return result


def subset(split: DecodedSplit, index: np.ndarray) -> DecodedSplit:
    """The images of ``split`` at ``index``."""
    idx = torch.from_numpy(index)
    return DecodedSplit(images=split.images[idx], labels=split.labels[idx], paths=[split.paths[i] for i in index])


def pool_of(data: PreparedData) -> DecodedSplit:
    """The training and validation images together: what the members of an ensemble learn from."""
    return DecodedSplit(images=torch.cat([data.train.images, data.val.images]),
                        labels=torch.cat([data.train.labels, data.val.labels]),
                        paths=data.train.paths + data.val.paths)


def fold_assignment(cfg: TrainConfig, pool: DecodedSplit, classes: Sequence[str],
                    spec: DatasetSpec | None = None) -> np.ndarray:
    """The fold of each pooled image; near-duplicates share a fold when ``group_duplicates`` is on, and the
    images of a subfolder (of ``spec``'s folder) with ``group_subfolders``."""
    from ..data.splits import split_groups, stratified_folds

    labels = pool.labels.numpy()
    counts = np.bincount(labels, minlength=len(classes))
    too_few = [classes[i] for i, n in enumerate(counts) if 0 < n < cfg.folds]
    if too_few:
        raise ConfigError(f"Class(es) {', '.join(too_few)} have fewer training + validation images than the "
                          f"{cfg.folds} folds, so some folds would never see them. Use fewer folds (at most "
                          f"{int(counts[counts > 0].min())}).")
    place = (spec.root, spec.layout, spec.group_of, spec.group_column) if spec is not None else ()
    groups = split_groups(cfg.data, pool.paths, labels.tolist(), *place).groups
    return stratified_folds(labels, cfg.folds, cfg.data.split_seed, groups)


def _score(result: TrainResult, fold: int, focus: str) -> FoldScore:
    m = result.metrics["val"]
    return FoldScore(fold=fold, images=m.n, macro_f1=m.macro_f1, accuracy=m.accuracy or 0.0,
                     balanced_accuracy=m.balanced_accuracy or 0.0, focus_recall=m.recall(focus),
                     best_epoch=result.fit.best_epoch, epochs=len(result.fit.history))


def cross_validate(cfg: TrainConfig, data: PreparedData | None = None, *,
                   callbacks_for: Callable[[int, int], Sequence[Callback]] = lambda fold, folds: (),
                   should_cancel: Callable[[], bool] | None = None, stage: Stage | None = None,
                   on_member_end: Callable[[list[TrainResult]], None] | None = None,
                   on_note: Callable[[str], None] | None = None, resume: dict | None = None,
                   on_checkpoint: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``cfg.folds`` models and return them as one ensemble, like :func:`train_in_memory` returns one.

    ``callbacks_for(fold, folds)`` gives each fold's callbacks (fold counts from 0); ``on_member_end`` receives
    the fold models trained so far after each fold (the run store saves them, so a stopped run keeps what it has);
    ``on_note`` receives each fold's notes as its training starts (see :func:`train_in_memory`). A stop ends the
    current fold (its best checkpoint so far joins the ensemble) and skips the rest. ``resume``: an interrupted
    run's resume state, whose finished folds are kept (:func:`~medcls.training.members.train_members`).
    """
    if cfg.folds < 2:
        raise ConfigError("Cross-validation needs at least 2 folds.")
    data = data or prepare_data(cfg, stage)
    pool = pool_of(data)
    assignment = fold_assignment(cfg, pool, data.classes, data.decoded.spec)
    held_out = [np.flatnonzero(assignment == fold) for fold in range(cfg.folds)]
    parts = [replace(data, train=subset(pool, np.flatnonzero(assignment != fold)), val=subset(pool, held_out[fold]))
             for fold in range(cfg.folds)]
    results, cancelled = train_members(cfg, parts, "fold", callbacks_for=callbacks_for, should_cancel=should_cancel,
                                       stage=stage, on_member_end=on_member_end, on_note=on_note, resume=resume,
                                       on_checkpoint=on_checkpoint)
    oof = np.zeros((len(pool), len(data.classes)), dtype=np.float32)
    covered = np.zeros(len(pool), dtype=bool)
    for fold, result in enumerate(results):
        oof[held_out[fold]] = result.probs["val"]
        covered[held_out[fold]] = True
    ensemble = FoldEnsemble([r.model for r in results]).eval()
    probs = {"val": oof[covered]}
    view = replace(data, val=subset(pool, np.flatnonzero(covered)))
    if len(data.test):
        probs["test"] = predict_proba(ensemble, data.test.images, tta=cfg.tta, batch_size=cfg.batch_size)
    metrics = {split: classification_metrics(getattr(view, split).labels.numpy(), p, data.classes)
               for split, p in probs.items()}
    scores = [_score(r, i + 1, data.focus_class) for i, r in enumerate(results)]
    cv = CrossValidation(folds=cfg.folds, grouped=cfg.data.group_duplicates, by_subfolder=cfg.data.group_subfolders,
                         patient_column=data.decoded.spec.group_column if cfg.data.group_subfolders else "",
                         scores=tuple(scores),
                         completed=sum(not r.cancelled for r in results))
    if len(scores) > 1:
        log.info("cross-validation: macro-F1 %.3f ± %.3f over %d folds", statistics.mean(s.macro_f1 for s in scores),
                 statistics.stdev(s.macro_f1 for s in scores), len(scores))
    notes = [note for r in results for note in r.notes]
    return TrainResult(ensemble, view, FitResult(), metrics, probs, results[-1].precision, cancelled,
                       list(dict.fromkeys(notes)), cv=cv)
