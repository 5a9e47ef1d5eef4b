"""k-fold cross-validation: k models, each validated on a different part of the training + validation images.

On a few hundred images one test split is a noisy judge (one malignant image moves recall by several
points). Cross-validation pools the train and val splits, cuts them into k stratified folds (near-duplicates
kept in one fold when the data config asks for it), and trains one model per fold with that fold as its
validation set. The result reports each fold's score and their mean ± standard deviation (the honest
error bar), predicts every pooled image with the model that never saw it (out-of-fold predictions), and
keeps the k models as one ensemble, which is what the test split, Compare and Try it see.

With 0 folds and ``small_data_ensemble`` on (the default), a small dataset is cross-validated anyway
(:func:`resolve_folds`): on a few hundred images a 5-fold ensemble is steadier than one model and also learns
from the validation images. A dataset that would take much more work than that (many images, large images or a
heavy network: :func:`training_work`), or one with too few images of a class to validate five folds, trains
one model, and so does one of over 3,000 images (one model has enough to learn from).
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..analysis.metrics import classification_metrics
from ..config import ConfigError, TrainConfig
from ..data.cache import DecodedSplit
from ..inference.proba import predict_proba
from ..models.ensemble import FoldEnsemble
from ..runs.records import CrossValidation, FoldScore
from .engine import Callback, FitCancelled, FitResult
from .pipeline import (
    PreparedData,
    Stage,
    TrainResult,
    build_model,
    cached_views,
    caches_features,
    prepare_data,
    train_in_memory,
)

__all__ = ["cross_validate", "fold_assignment", "auto_folds", "folds_for", "resolve_folds", "fit", "training_work",
           "too_much_work", "too_rare_for_folds", "one_model_reason", "train_alike", "group_folds_words", "AUTO_FOLDS",
           "AUTO_MAX_WORK", "REFERENCE_PASSES"]

log = logging.getLogger(__name__)

AUTO_FOLDS = 5               # folds of the automatic ensemble
AUTO_MIN_PER_FOLD = 10       # images of every class each fold must be validated on (fewer: epoch picks are luck)
AUTO_MAX_IMAGES = 3000       # beyond this one model has enough to learn from
# Beyond this much work (train + val images x each image's work, 1 = small_cnn at 128 px) five models would take
# too long: BUSI at 128 px is 662 (its ensemble took 3.2 to 14.8 minutes on the 2-core machines in README.md), so
# an automatic ensemble takes at most about three times BUSI's. It was 1,500 with the 16-filter default; the
# 12-filter default has 0.58 of its arithmetic and trains a step 1.3 (bf16) to 1.6 (fp32) times as fast, so 2,000
# keeps the time bound.
AUTO_MAX_WORK = 2000
REFERENCE_MODEL, REFERENCE_SIZE = "small_cnn", 128  # one image of the default model at its default size: work 1
# A trained network runs each image forward and backward (about 3 forward passes) every epoch, for at least the 15
# epochs early stopping lets a default run go; a frozen backbone with cached features runs it forward once per
# cached view, and never again. Its work is counted in these passes.
REFERENCE_PASSES = 45


def auto_folds(pool_counts: Sequence[int], work_per_image: float = 1.0) -> int:
    """Folds the automatic ensemble trains for a train + val pool with these images per class, each image
    ``work_per_image`` times the default model's at 128 px (0: one model)."""
    present = [n for n in pool_counts if n > 0]
    if not _small_pool(present) or sum(present) * work_per_image > AUTO_MAX_WORK \
            or min(present) < AUTO_FOLDS * AUTO_MIN_PER_FOLD:
        return 0
    return AUTO_FOLDS


def _small_pool(present: Sequence[int]) -> bool:
    """Whether a train + val pool with these (non-zero) images per class is small enough for the automatic
    ensemble to be worth it: two classes or more, and few images."""
    return len(present) >= 2 and sum(present) <= AUTO_MAX_IMAGES


def training_work(cfg: TrainConfig) -> float:
    """One image's training work for ``cfg``'s model at its image size, relative to small_cnn at 128 px.

    Measured in multiply-adds of a forward pass: a proxy for time that comes out the same on every machine, so
    that a config trains the same way everywhere (the Train page's estimate gives the time on this one). A frozen
    backbone whose features are cached costs its cached views' forward passes once, not training every epoch
    (:data:`REFERENCE_PASSES`)."""
    macs, cached = _forward_cost(cfg.model, cfg.model_options, cfg.image_size)
    work = macs / _forward_cost(REFERENCE_MODEL, None, REFERENCE_SIZE)[0]
    if cached:
        work *= cached_views(cfg) / REFERENCE_PASSES
    return work


@functools.lru_cache(maxsize=32)
def _forward_cost(model: str, options: Any, image_size: int) -> tuple[int, bool]:
    """Multiply-adds of one image through ``model`` with ``options`` (None: its defaults), and whether its
    frozen backbone's features are cached."""
    from ..models.summary import forward_macs

    cfg = TrainConfig().with_options(model=model, image_size=image_size)
    if options is not None:
        cfg = replace(cfg, model_options=options)
    # The arithmetic does not depend on the starting weights, and pretrained ones need not be on this machine.
    built = build_model(cfg, num_classes=2, in_channels=3, weights="random")
    return forward_macs(built, image_size, 3), caches_features(cfg, built)


def folds_for(cfg: TrainConfig, pool_counts: Sequence[int]) -> int:
    """The folds a run of ``cfg`` trains on a train + val pool with these images per class: as set, or chosen
    for a small dataset (0: one model)."""
    if cfg.folds or not cfg.small_data_ensemble:
        return cfg.folds
    return auto_folds(pool_counts, training_work(cfg))


def too_much_work(cfg: TrainConfig, pool_counts: Sequence[int]) -> str | None:
    """When only its work keeps a run of ``cfg`` from the automatic ensemble on this train + val pool: a
    sentence saying so (None otherwise)."""
    if cfg.folds or not cfg.small_data_ensemble:
        return None
    work_per_image = training_work(cfg)
    if not auto_folds(pool_counts, work_per_image=0.0) or auto_folds(pool_counts, work_per_image):
        return None  # not small anyway, or small enough
    images = sum(pool_counts)
    over = (f"are over the automatic ensemble's limit of {AUTO_MAX_WORK:,} such images"
            if math.isclose(work_per_image, 1.0) else  # the reference itself: no conversion to explain
            f"are as much work as {images * work_per_image:,.0f} images with {REFERENCE_MODEL} at {REFERENCE_SIZE} "
            f"px, over the automatic ensemble's limit of {AUTO_MAX_WORK:,}")
    return (f"One model, not a {AUTO_FOLDS}-fold ensemble: {images:,} training + validation images with {cfg.model} "
            f"at {cfg.image_size} px {over} ({AUTO_FOLDS} models would take {AUTO_FOLDS} times as long). Set the "
            "folds to train an ensemble anyway.")


def too_rare_for_folds(cfg: TrainConfig, pool_counts: Sequence[int], classes: Sequence[str]) -> str | None:
    """When only a rare class keeps a small dataset from the automatic ensemble: a sentence saying so (None
    otherwise). The Train page shows it beside the option, which is on while the run trains one model."""
    if cfg.folds or not cfg.small_data_ensemble:
        return None
    present = [(count, name) for count, name in zip(pool_counts, classes) if count > 0]
    needed = AUTO_FOLDS * AUTO_MIN_PER_FOLD
    if not _small_pool([count for count, _ in present]) or min(present)[0] >= needed:
        return None
    fewest, name = min(present)
    return (f"One model, not a {AUTO_FOLDS}-fold ensemble: {name} has only {fewest:,} training + validation "
            f"images, so each fold model would pick its best epoch on about {fewest / AUTO_FOLDS:.0f} of them "
            f"(the ensemble needs {needed} of every class, {AUTO_MIN_PER_FOLD} for each fold). Set the folds to "
            "train an ensemble anyway.")


def one_model_reason(cfg: TrainConfig, pool_counts: Sequence[int], classes: Sequence[str]) -> str | None:
    """Why a small dataset trains one model although *Cross-validate small datasets* is on: its work or a rare
    class (None when it does not). One sentence for the Train page before Start and for the run's notes after."""
    return too_much_work(cfg, pool_counts) or too_rare_for_folds(cfg, pool_counts, classes)


def train_alike(configs: Sequence[TrainConfig],
                pool_counts: Sequence[int]) -> tuple[list[TrainConfig], str | None]:
    """Runs compared side by side (a lesson, a sweep) must train alike. When the automatic ensemble would take
    some of ``configs`` but not the others (its work limit: larger images, a heavier network), it is switched
    off for all of them. Returns the configs and a note for each run saying so (None when nothing changed)."""
    auto = [not c.folds and c.small_data_ensemble for c in configs]
    if len({folds_for(c, pool_counts) for c, a in zip(configs, auto) if a}) < 2:
        return list(configs), None
    note = ("'Cross-validate small datasets' is off for every run of this comparison: the automatic "
            f"{AUTO_FOLDS}-fold ensemble would train some of its runs but not the others (too much work: larger "
            "images or a heavier network), and runs compared side by side must train alike, so each trains one "
            "model.")
    return [c.with_options(small_data_ensemble=False) if a else c for c, a in zip(configs, auto)], note


def group_folds_words(folds: int, group: str) -> str:
    """What a group of runs (a 'lesson', a 'sweep') costs when each of its runs trains ``folds`` fold models."""
    return (f"On this dataset each run trains {folds} fold models that predict together ('Cross-validate small "
            f"datasets', the default for a small dataset), so the {group} takes about {folds} times as long as "
            "with one model per run.")


def resolve_folds(cfg: TrainConfig, data: PreparedData) -> tuple[TrainConfig, str | None]:
    """The config as trained on ``data``: with 0 folds and ``small_data_ensemble``, the automatic folds; and
    the note saying what was chosen and why, or why a small dataset trains one model (None otherwise)."""
    labels = torch.cat([data.train.labels, data.val.labels]).numpy()
    counts = np.bincount(labels, minlength=len(data.classes)).tolist()
    if cfg.folds or not (folds := folds_for(cfg, counts)):
        return cfg, one_model_reason(cfg, counts, data.classes)
    words = f"{sum(counts):,} training + validation images, the fewest of a class {min(c for c in counts if c):,}"
    note = (f"A small dataset ({words}): trained as a {folds}-fold cross-validation ensemble ('Cross-validate small "
            f"datasets'). Turn that off, or set the folds, for one model.")
    log.info("automatic cross-validation: %d folds (%s)", folds, words)
    return cfg.with_options(folds=folds), note


def fit(cfg: TrainConfig, data: PreparedData | None = None, *, callbacks: Sequence[Callback] = (),
        should_cancel: Callable[[], bool] | None = None, stage: Stage | None = None) -> TrainResult:
    """Train as configured: one model, or k fold models (set, or chosen by :func:`resolve_folds`)."""
    data = data or prepare_data(cfg, stage)
    cfg, note = resolve_folds(cfg, data)
    if cfg.folds:
        result = cross_validate(cfg, data, callbacks_for=lambda fold, folds: callbacks, should_cancel=should_cancel,
                                stage=stage)
    else:
        result = train_in_memory(cfg, data, callbacks=callbacks, should_cancel=should_cancel, stage=stage)
    if note:
        result.notes.insert(0, note)
    return result


def _subset(split: DecodedSplit, index: np.ndarray) -> DecodedSplit:
    idx = torch.from_numpy(index)
    return DecodedSplit(images=split.images[idx], labels=split.labels[idx], paths=[split.paths[i] for i in index])


def _pool(data: PreparedData) -> DecodedSplit:
    return DecodedSplit(images=torch.cat([data.train.images, data.val.images]),
                        labels=torch.cat([data.train.labels, data.val.labels]),
                        paths=data.train.paths + data.val.paths)


def fold_assignment(cfg: TrainConfig, pool: DecodedSplit, classes: Sequence[str]) -> np.ndarray:
    """The fold of each pooled image; near-duplicates share a fold when ``group_duplicates`` is on."""
    from ..data.splits import stratified_folds

    labels = pool.labels.numpy()
    counts = np.bincount(labels, minlength=len(classes))
    too_few = [classes[i] for i, n in enumerate(counts) if 0 < n < cfg.folds]
    if too_few:
        raise ConfigError(f"Class(es) {', '.join(too_few)} have fewer training + validation images than the "
                          f"{cfg.folds} folds, so some folds would never see them. Use fewer folds (at most "
                          f"{int(counts[counts > 0].min())}).")
    groups = None
    if cfg.data.group_duplicates:
        from ..data.health import duplicate_group_ids

        groups = duplicate_group_ids(pool.paths)
    return stratified_folds(labels, cfg.folds, cfg.data.split_seed, groups)


def _score(result: TrainResult, fold: int, focus: str) -> FoldScore:
    m = result.metrics["val"]
    return FoldScore(fold=fold, images=m.n, macro_f1=m.macro_f1, accuracy=m.accuracy or 0.0,
                     balanced_accuracy=m.balanced_accuracy or 0.0, focus_recall=m.recall(focus),
                     best_epoch=result.fit.best_epoch, epochs=len(result.fit.history))


def cross_validate(cfg: TrainConfig, data: PreparedData | None = None, *,
                   callbacks_for: Callable[[int, int], Sequence[Callback]] = lambda fold, folds: (),
                   should_cancel: Callable[[], bool] | None = None, stage: Stage | None = None,
                   on_fold_end: Callable[[FoldEnsemble], None] | None = None,
                   on_note: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``cfg.folds`` models and return them as one ensemble, like :func:`train_in_memory` returns one.

    ``callbacks_for(fold, folds)`` gives each fold's callbacks (fold counts from 0); ``on_fold_end`` receives
    the ensemble of the folds trained so far after each fold (the run store saves it, so a stopped run keeps
    what it has); ``on_note`` receives each fold's notes as its training starts (see :func:`train_in_memory`).
    A stop ends the current fold (its best checkpoint so far joins the ensemble) and skips the rest.
    """
    if cfg.folds < 2:
        raise ConfigError("Cross-validation needs at least 2 folds.")
    data = data or prepare_data(cfg, stage)
    pool = _pool(data)
    assignment = fold_assignment(cfg, pool, data.classes)
    results: list[TrainResult] = []
    oof = np.zeros((len(pool), len(data.classes)), dtype=np.float32)
    covered = np.zeros(len(pool), dtype=bool)
    cancelled = False
    for fold in range(cfg.folds):
        held_out = np.flatnonzero(assignment == fold)
        fold_data = replace(data, train=_subset(pool, np.flatnonzero(assignment != fold)),
                            val=_subset(pool, held_out))
        log.info("fold %d of %d: %d training, %d held-out images", fold + 1, cfg.folds, len(fold_data.train),
                 len(held_out))
        callbacks = callbacks_for(fold, cfg.folds)
        for callback in callbacks:
            callback.on_fold_start(fold, cfg.folds)
        try:
            result = train_in_memory(replace(cfg, seed=cfg.seed + fold), fold_data, callbacks=callbacks,
                                     should_cancel=should_cancel, stage=stage, on_note=on_note)
        except FitCancelled:
            cancelled = True
            break
        results.append(result)
        oof[held_out] = result.probs["val"]
        covered[held_out] = True
        if on_fold_end is not None:
            on_fold_end(FoldEnsemble([r.model for r in results]))
        if result.cancelled:
            cancelled = True
            break
    if not results:
        raise FitCancelled()
    ensemble = FoldEnsemble([r.model for r in results]).eval()
    probs = {"val": oof[covered]}
    view = replace(data, val=_subset(pool, np.flatnonzero(covered)))
    if len(data.test):
        probs["test"] = predict_proba(ensemble, data.test.images, tta=cfg.tta, batch_size=cfg.batch_size)
    metrics = {split: classification_metrics(getattr(view, split).labels.numpy(), p, data.classes)
               for split, p in probs.items()}
    scores = [_score(r, i + 1, data.focus_class) for i, r in enumerate(results)]
    cv = CrossValidation(folds=cfg.folds, grouped=cfg.data.group_duplicates, scores=tuple(scores),
                         completed=sum(not r.cancelled for r in results))
    if len(scores) > 1:
        log.info("cross-validation: macro-F1 %.3f ± %.3f over %d folds", statistics.mean(s.macro_f1 for s in scores),
                 statistics.stdev(s.macro_f1 for s in scores), len(scores))
    notes = [note for r in results for note in r.notes]
    return TrainResult(ensemble, view, FitResult(), metrics, probs, results[-1].precision, cancelled,
                       list(dict.fromkeys(notes)), cv=cv)
