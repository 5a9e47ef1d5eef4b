"""What a run that leaves choices to the data trains: its image size, and one model or an ensemble.

Two options leave the choice to the dataset, and both are on by default:

- **0 folds with *Ensemble for small datasets***: on a few hundred images a 5-fold ensemble is steadier than
  one model and also learns from the validation images (:func:`resolve_folds`). A dataset that would take much
  more work than that (many images, large images or a heavy network: :func:`training_work`), or one with too few
  images of a class to validate five folds, trains one model, and so does one of over 3,000 images (one model
  has enough to learn from).
- ***Image size* 0**: 128 px, unless that small-data ensemble would train on images at least 192 px on their
  shorter side. Those train at 192 px (:func:`resolve_image_size`) as 3 **bagged** models instead of 5 fold models
  at 128 px: each of the three learns from every train + val image to the end of its schedule, and none is
  validated. Cross-validated on BUSI's 256 px ultrasound images (5 outer folds, two seeds), 3 fold models at 192 px
  found 4 to 7 points more of the malignant images than 5 at 128 px, and 3 bagged models beat the 3 fold models by
  2.5 points of macro-F1, for 1.16 to 1.3 times their time (docs/ablation.md). A run that keeps its best
  validation epoch needs held-out images, so it trains 3 fold models at 192 px instead.
  The built-in 128 px phantoms, small MedMNIST files and large datasets keep 128 px and their cost.

Bagged models asked for (``bagged_models``) keep their number: no folds are chosen for them, and *Image size* 0
gives them 192 px on the same data.

Everything here reads only a dataset's listing (the train + val images per class) and its images' typical side,
so the Train page shows before Start exactly what a run will choose.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from ..config import TrainConfig
from ..data.explore import typical_side
from ..data.spec import DatasetSpec
from .pipeline import PreparedData, build_model, cached_views, caches_features

__all__ = ["auto_folds", "folds_for", "resolve_folds", "resolve_image_size", "size_for_data", "pool_labels",
           "pool_counts", "training_work", "too_much_work", "too_rare_for_folds", "one_model_reason", "train_alike",
           "group_models_words", "plan_for", "AUTO_FOLDS", "AUTO_MAX_WORK", "REFERENCE_PASSES", "DEFAULT_SIZE", "DETAIL_SIZE",
           "DETAIL_FOLDS", "DETAIL_BAGGED"]

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
REFERENCE_MODEL, REFERENCE_SIZE = "small_cnn", 128  # the unit of work: one image of the default model at 128 px
# A trained network runs each image forward and backward (about 3 forward passes) every epoch, for at least 15
# epochs (the fewest early stopping let a default run go when the default kept the best epoch; the default now
# trains 20); a frozen backbone with cached features runs it forward once per cached view, and never again. Its
# work is counted in these passes (kept at 45, so that the same datasets and backbones get an ensemble as before).
REFERENCE_PASSES = 45

DEFAULT_SIZE = 128   # Image size 0 trains at this size unless the data calls for DETAIL_SIZE
# A small dataset of images at least this large (shorter side) trains at this size as DETAIL_FOLDS fold models:
# 3 x 2/3 of the images x 2.25 times the pixels is 1.1 times the training arithmetic of 5 x 4/5 at 128 px (a run,
# validation included, takes 1.1 to 1.4 times as long on BUSI). Cross-validated on BUSI
# (5 duplicate-grouped outer folds, two seeds; docs/ablation.md): malignant recall +0.042 (better on 7 folds of 10,
# worse on 1), macro-F1 +0.007 (better on 6).
DETAIL_SIZE = 192
DETAIL_FOLDS = 3
# ... as this many bagged models when the run keeps its last epoch (the default): each learns from every train + val
# image. Cross-validated on BUSI (the same outer folds, two seeds): macro-F1 +0.025 against 3 fold models (better on
# 8 of 10, worse on 2), malignant recall +0.026, for 1.16 to 1.3 times the time (docs/ablation.md).
DETAIL_BAGGED = 3


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
    macs, cached = _forward_cost(cfg.model, cfg.model_options, cfg.chosen_image_size())
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


def folds_for(cfg: TrainConfig, pool_counts: Sequence[int], side: int | None = None) -> int:
    """The folds a run of ``cfg`` trains on a train + val pool with these images per class, typically ``side`` px
    (for *Image size* 0): as set, or chosen for a small dataset (0: one model)."""
    return plan_for(cfg, pool_counts, side).folds


def too_much_work(cfg: TrainConfig, pool_counts: Sequence[int], side: int | None = None) -> str | None:
    """When only its work keeps a run of ``cfg`` from the automatic ensemble on this train + val pool: a
    sentence saying so (None otherwise)."""
    cfg = resolve_image_size(cfg, pool_counts, side)[0]
    if cfg.folds or cfg.bagged_models or not cfg.small_data_ensemble:
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
    if cfg.folds or cfg.bagged_models or not cfg.small_data_ensemble:
        return None
    present = [(count, name) for count, name in zip(pool_counts, classes) if count > 0]
    needed = AUTO_FOLDS * AUTO_MIN_PER_FOLD
    if not _small_pool([count for count, _ in present]) or min(present)[0] >= needed:
        return None
    fewest, name = min(present)
    held = (f"each fold model would be validated on about {fewest / AUTO_FOLDS:.0f} of them" if fewest >= AUTO_FOLDS
            else f"{AUTO_FOLDS - fewest} of the {AUTO_FOLDS} fold models would be validated on none of them")
    return (f"One model, not a {AUTO_FOLDS}-fold ensemble: {name} has only {fewest:,} training + validation "
            f"image{'s' if fewest != 1 else ''}, so {held} "
            f"(the ensemble needs {needed} of every class, {AUTO_MIN_PER_FOLD} for each fold). Set the folds to "
            "train an ensemble anyway.")


def one_model_reason(cfg: TrainConfig, pool_counts: Sequence[int], classes: Sequence[str],
                     side: int | None = None) -> str | None:
    """Why a small dataset trains one model although *Ensemble for small datasets* is on: its work or a rare
    class (None when it does not). One sentence for the Train page before Start and for the run's notes after."""
    return too_much_work(cfg, pool_counts, side) or too_rare_for_folds(cfg, pool_counts, classes)


def train_alike(configs: Sequence[TrainConfig], pool_counts: Sequence[int],
                side: int | None = None) -> tuple[list[TrainConfig], str | None]:
    """Runs compared side by side (a lesson, a sweep) must train alike. When the automatic ensemble would take
    some of ``configs`` but not the others (its work limit: larger images, a heavier network), it is switched
    off for all of them. Returns the configs and a note for each run saying so (None when nothing changed)."""
    auto = [not c.folds and not c.bagged_models and c.small_data_ensemble for c in configs]
    if len({_models(plan_for(c, pool_counts, side)) for c, a in zip(configs, auto) if a}) < 2:
        return list(configs), None
    note = ("'Ensemble for small datasets' is off for every run of this comparison: the automatic ensemble would "
            "train some of its runs but not the others, or not alike (too much work: larger images or a heavier "
            "network; fold models for a run that keeps its best epoch, bagged models for one that keeps its last), "
            "and runs compared side by side must train alike, so each trains one model.")
    return [c.with_options(small_data_ensemble=False) if a else c for c, a in zip(configs, auto)], note


def _models(plan: TrainConfig) -> tuple[int, int]:
    """The ensemble a planned run trains: (fold models, bagged models); (0, 0) for one model."""
    return plan.folds, plan.bagged_models


def group_models_words(plan: TrainConfig, group: str) -> str | None:
    """What a group of runs (a 'lesson', a 'sweep') costs when each of its runs trains the ensemble of ``plan``
    (:func:`plan_for`); None when each trains one model."""
    if not (models := plan.bagged_models or plan.folds):
        return None
    what = (f"{models} bagged models at {plan.image_size} px that predict together ('Ensemble for small datasets', "
            "the default for a small dataset of large images; none is validated)" if plan.bagged_models else
            f"{models} fold models that predict together ('Ensemble for small datasets', the default for a small "
            "dataset)")
    return f"On this dataset each run trains {what}, so the {group} takes about {models} times as long as with one " \
           "model per run."


def resolve_folds(cfg: TrainConfig, data: PreparedData) -> tuple[TrainConfig, str | None]:
    """The config as trained on ``data``: with 0 folds and ``small_data_ensemble``, the automatic folds; and
    the note saying what was chosen and why, or why a small dataset trains one model (None otherwise)."""
    labels = torch.cat([data.train.labels, data.val.labels]).numpy()
    counts = np.bincount(labels, minlength=len(data.classes)).tolist()
    if cfg.folds or not (folds := folds_for(cfg, counts)):
        return cfg, one_model_reason(cfg, counts, data.classes)
    words = f"{sum(counts):,} training + validation images, the fewest of a class {min(c for c in counts if c):,}"
    note = (f"A small dataset ({words}): trained as a {folds}-fold cross-validation ensemble ('Ensemble for small "
            f"datasets'). Turn that off, or set the folds, for one model.")
    log.info("automatic cross-validation: %d folds (%s)", folds, words)
    return cfg.with_options(folds=folds), note


def resolve_image_size(cfg: TrainConfig, pool_counts: Sequence[int],
                       side: int | None) -> tuple[TrainConfig, str | None]:
    """``cfg`` with its image size chosen when it is 0 (as set otherwise), for a train + val pool with these
    images per class whose shorter side is typically ``side`` px (None: unknown); and a note when the choice
    is the larger size, which also sets the ensemble: :data:`DETAIL_BAGGED` bagged models for a run that keeps its
    last epoch (the default), :data:`DETAIL_FOLDS` fold models for one that picks its best validation epoch (it
    needs held-out images), and bagged models asked for keep their number."""
    if cfg.image_size:
        return cfg, None
    default = cfg.with_options(image_size=DEFAULT_SIZE)
    # Bagged models take the larger size on the same data as the automatic ensemble would (measured so: 3 at 192 px).
    small = default.with_options(bagged_models=0, small_data_ensemble=True) if cfg.bagged_models else default
    if side is None or side < DETAIL_SIZE or cfg.folds or folds_for(small, pool_counts) != AUTO_FOLDS:
        return default, None
    words = f"{sum(pool_counts):,} training + validation images, typically {side:,} px on their shorter side"
    if cfg.bagged_models:
        log.info("automatic image size: %d px for %d bagged models (%s)", DETAIL_SIZE, cfg.bagged_models, words)
        return cfg.with_options(image_size=DETAIL_SIZE), (
            f"A small dataset of large images ({words}): its {cfg.bagged_models} bagged models train at "
            f"{DETAIL_SIZE} px ('Image size' 0): more of the images' detail, in 2.25 times the pixels of "
            f"{DEFAULT_SIZE} px. Set an image size to choose it yourself.")
    if cfg.keeps_last():
        log.info("automatic image size: %d px, %d bagged models (%s)", DETAIL_SIZE, DETAIL_BAGGED, words)
        return cfg.with_options(image_size=DETAIL_SIZE, bagged_models=DETAIL_BAGGED), (
            f"A small dataset of large images ({words}): trained at {DETAIL_SIZE} px as {DETAIL_BAGGED} bagged "
            f"models ('Image size' 0 and 'Ensemble for small datasets'): each learns from every training and "
            "validation image, and they predict together (a higher macro-F1 than fold models in cross-validation "
            "on BUSI). No image is held out, so the curves show training only and the test images are the only "
            "check. For validation curves and a cross-validation score, set 'Checkpoint kept' to the best epoch "
            f"({DETAIL_FOLDS} fold models at {DETAIL_SIZE} px, each choosing its epoch on its own held-out part) or "
            f"set the folds yourself (at {DEFAULT_SIZE} px unless you set an image size); set an image size to "
            f"choose it yourself, or turn 'Ensemble for small datasets' off for one model at {DEFAULT_SIZE} px.")
    log.info("automatic image size: %d px, %d folds (%s)", DETAIL_SIZE, DETAIL_FOLDS, words)
    return cfg.with_options(image_size=DETAIL_SIZE, folds=DETAIL_FOLDS), (
        f"A small dataset of large images ({words}): trained at {DETAIL_SIZE} px as a {DETAIL_FOLDS}-fold "
        f"cross-validation ensemble ('Image size' 0 and 'Ensemble for small datasets', keeping each model's best "
        f"validation epoch, which needs held-out images): more of the images' detail, for up to a third more time "
        f"than {AUTO_FOLDS} fold models at {DEFAULT_SIZE} px. Set an image size to choose it yourself "
        f"({DEFAULT_SIZE} px trains {AUTO_FOLDS} fold models), or turn 'Ensemble for small datasets' off for one "
        f"model at {DEFAULT_SIZE} px.")


def plan_for(cfg: TrainConfig, pool_counts: Sequence[int], side: int | None = None) -> TrainConfig:
    """What a run of ``cfg`` trains on a train + val pool with these images per class, typically ``side`` px: its
    image size (for *Image size* 0), and its fold or bagged models, as set or chosen for the data."""
    cfg = resolve_image_size(cfg, pool_counts, side)[0]
    if cfg.folds or cfg.bagged_models or not cfg.small_data_ensemble:
        return cfg
    return cfg.with_options(folds=auto_folds(pool_counts, training_work(cfg)), strict=False)


def size_for_data(cfg: TrainConfig, spec: DatasetSpec) -> tuple[TrainConfig, str | None]:
    """:func:`resolve_image_size` for a dataset's listing (a sample of its images' headers gives the side)."""
    if cfg.image_size:
        return cfg, None
    return resolve_image_size(cfg, pool_counts(spec), typical_side(spec))


def pool_labels(spec: DatasetSpec) -> np.ndarray:
    """The labels of the train + val images: what cross-validation cuts into folds."""
    return np.array([it.label for it in spec.items if it.split in ("train", "val")], dtype=np.int64)


def pool_counts(spec: DatasetSpec) -> list[int]:
    """Images per class in the train + val splits."""
    return np.bincount(pool_labels(spec), minlength=len(spec.classes)).tolist()

