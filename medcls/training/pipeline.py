"""Config -> data -> model -> fit -> val/test probabilities, in memory (no run store).

:func:`train_in_memory` is the whole pipeline; :mod:`medcls.jobs.execute` wraps it
to train a stored run and record everything in its folder.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis.metrics import SplitMetrics, classification_metrics
from ..config import TrainConfig
from ..data import (
    BatchAugment,
    DecodedDataset,
    DecodedSplit,
    decode_dataset,
    load_dataset,
    to_float,
)
from ..data.classes import resolve_focus_class
from ..data.spec import DataError, DatasetSpec
from ..inference.proba import tta_views
from ..models import ClassifierModel, create_model
from ..runs.results import CrossValidation
from .callbacks import BestCheckpoint, EarlyStopping, ResumeCheckpoint, WeightAveraging, ema_steps_to_reach
from .ddp import broadcast_object
from .engine import (
    Callback,
    FitCancelled,
    FitResult,
    TensorData,
    Trainer,
    batches_per_epoch,
)
from .hardware import keep_freed_memory, resolve_precision
from .imbalance import balanced_class_weights, make_sampler
from .optim import build_optimizer, build_scheduler

__all__ = ["PreparedData", "prepare_data", "build_model", "train_in_memory", "TrainResult", "seed_everything",
           "cache_features", "caches_features", "cached_views", "RESUME_FORMAT", "resume_note", "check_resume",
           "averaging_note"]

RESUME_FORMAT = 1  # bump when the saved training state changes shape

log = logging.getLogger(__name__)
Stage = Callable[[str, float], None]  # (message, fraction done) while preparing


@dataclass
class PreparedData:
    decoded: DecodedDataset
    train: DecodedSplit
    val: DecodedSplit
    test: DecodedSplit
    classes: list[str]
    focus_class: str


@dataclass
class TrainResult:
    model: ClassifierModel             # with the best weights loaded
    data: PreparedData
    fit: FitResult                     # history, best epoch and score
    metrics: dict[str, SplitMetrics]   # split -> metrics of the best checkpoint (val, test)
    probs: dict[str, np.ndarray]       # split -> class probabilities (N, K)
    precision: str                     # 'fp32' or 'bf16', as resolved
    cancelled: bool = False            # stopped on request: the metrics are of the best checkpoint so far
    notes: list[str] = field(default_factory=list)  # what the run adjusted, and why
    trainer: Trainer | None = None     # the loop, for inspection (its data, loss, callbacks)
    checkpoint: BestCheckpoint | None = None
    cv: CrossValidation | None = None  # cross-validation runs: each fold's score
    member_epochs: tuple[int, ...] = ()  # bagged runs: the epochs each model trained (a stop can leave fewer)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_data(cfg: TrainConfig, stage: Stage | None = None, *, spec: DatasetSpec | None = None) -> PreparedData:
    """Find (unless ``spec`` is the dataset's listing already), decode and split the dataset; check it can be
    trained on. *Image size* 0 must have been chosen for the data first (``autoplan.size_for_data``)."""
    stage = stage or (lambda message, fraction: None)
    stage("Finding images", 0.0)
    spec = spec or load_dataset(cfg.data)
    decoded = decode_dataset(spec, cfg.chosen_image_size(), cfg.data.color, disk_cache=cfg.data.disk_cache,
                             progress=lambda done, total: stage(f"Decoding images {done}/{total}", done / total))
    train, val, test = (decoded.split(s) for s in ("train", "val", "test"))
    if len(train) == 0:
        raise DataError("No training images could be decoded; see the data report for the reasons.")
    classes = decoded.spec.classes
    counts = decoded.spec.counts()["train"]
    missing = [name for name in classes if not counts.get(name)]
    if missing:
        raise DataError(f"Class(es) {', '.join(missing)} have no training image, so the model cannot learn them. "
                        "Add training images of each class, or remove the class folder.")
    return PreparedData(decoded, train, val, test, classes, resolve_focus_class(classes, cfg.focus_class, counts))


def caches_features(cfg: TrainConfig, model: ClassifierModel) -> bool:
    """Whether training ``model`` computes its frozen backbone's features once instead of every epoch."""
    return bool(getattr(cfg.model_options, "feature_cache", False)) and model.frozen_features


def cached_views(cfg: TrainConfig) -> int:
    """Views of each training image a frozen backbone's feature cache holds: the image and, while augmenting,
    ``feature_views`` - 1 augmented copies."""
    return getattr(cfg.model_options, "feature_views", 1) if cfg.augment.active else 1


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int, *, weights: str | None = None) -> ClassifierModel:
    """The configured model; ``weights`` overrides a pretrained model's starting weights (e.g. 'random')."""
    overrides = {"weights": weights} if weights is not None and hasattr(cfg.model_options, "weights") else {}
    return create_model(cfg.model, num_classes=num_classes, image_size=cfg.chosen_image_size(), in_channels=in_channels,
                        options=cfg.model_options, **overrides)


def _image_prepare(augment: BatchAugment | None, channels_last: bool,
                   generator: torch.Generator) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    def prepare(images: torch.Tensor, train: bool) -> torch.Tensor:
        x = to_float(images)
        if train and augment is not None:
            x = augment(x, generator)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return prepare


def _pick_view(generator: torch.Generator) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """Cached features are (B, views, F). Training picks one random view per image; evaluation averages all
    views (the image and, with test-time augmentation, its mirror) in predict_proba."""

    def prepare(features: torch.Tensor, train: bool) -> torch.Tensor:
        if not train:
            return features
        if features.shape[1] == 1:
            return features[:, 0]
        choice = torch.randint(features.shape[1], (features.shape[0],), generator=generator)
        return features[torch.arange(features.shape[0]), choice]

    return prepare


@torch.inference_mode()
def cache_features(model: ClassifierModel, images: torch.Tensor, views: int, augment: BatchAugment | None,
                   generator: torch.Generator, batch_size: int = 64, stage: Stage | None = None,
                   label: str = "", tta: bool = False) -> torch.Tensor:
    """Backbone features of every image: (N, V, F).

    For training (``tta`` False) view 0 is the image as it is and the other ``views - 1`` are random
    augmentations. For evaluation the views are the test-time views (the image and, with TTA, its mirror).
    """
    model.eval()
    out = []
    n = len(images)
    for start in range(0, n, batch_size):
        x = to_float(images[start:start + batch_size])
        if tta or views == 1 or augment is None:
            per_view = tta_views(x, tta)
        else:
            per_view = [x] + [augment(x.clone(), generator) for _ in range(views - 1)]
        feats = [model.forward_features(model.normalize(v.contiguous(memory_format=torch.channels_last)))
                 for v in per_view]
        out.append(torch.stack(feats, 1).float())
        if stage:
            stage(f"Computing {label} features {min(n, start + batch_size)}/{n}", min(1.0, (start + batch_size) / n))
    return torch.cat(out) if out else torch.zeros(0, 1, 1)


def _effective_batch(cfg: TrainConfig, train_images: int, notes: list[str]) -> int:
    """The configured batch, or a smaller one when the training split has fewer images (a tiny dataset)."""
    if cfg.batch_size <= train_images:
        return cfg.batch_size
    batch = max(1, min(train_images, 2 ** int(np.log2(max(2, train_images // 2)))))
    notes.append(f"The batch size was lowered from {cfg.batch_size} to {batch}: there are only {train_images} "
                 "training images.")
    return batch


def averaging_note(cfg: TrainConfig, steps_per_epoch: int) -> str | None:
    """When the weight averaging's decay, changed from the default, is never reached in the run's planned steps:
    a sentence saying that it then trains exactly as any other unreached decay would (None otherwise).

    The average's decay warms up (:func:`~medcls.training.callbacks.ema_decay_at`), so on a short run a higher
    decay changes nothing; someone trying decays would otherwise see identical runs and not know why. The words
    depend on the config only, so that the fold models of one run give one note."""
    if not cfg.ema_decay or cfg.ema_decay == TrainConfig().ema_decay:
        return None
    needed = ema_steps_to_reach(cfg.ema_decay)
    if steps_per_epoch * cfg.epochs > needed:  # the first step copies the weights: step k averages with k - 1
        return None
    return (f"Weight averaging: a decay of {cfg.ema_decay:g} is reached only after {needed:,} training steps (the "
            "decay warms up as (1 + n) / (10 + n) after n steps, so that the random starting weights fade out), and "
            f"this run plans only {steps_per_epoch * cfg.epochs:,}. Its average stays on the warm-up throughout, so any "
            "decay the warm-up does not reach trains exactly the same run: lower the decay, or train more steps, to "
            "change it.")


def train_in_memory(cfg: TrainConfig, data: PreparedData | None = None, *, callbacks: Sequence[Callback] = (),
                    should_cancel: Callable[[], bool] | None = None, stage: Stage | None = None,
                    on_model: Callable[[ClassifierModel], None] | None = None,
                    on_best: Callable[[dict], None] | None = None,
                    shard: tuple[int, int] = (0, 1), wrap: Callable[[nn.Module], nn.Module] | None = None,
                    resume: dict | None = None, on_checkpoint: Callable[[dict], None] | None = None,
                    on_note: Callable[[str], None] | None = None) -> TrainResult:
    """Train, then test the best weights on val and test; no run store involved.

    A stop request ends training after the current batch; the best checkpoint so far is then still tested
    (``cancelled`` is set), so a stopped run has honest results too. ``on_best(state)`` receives every new
    best checkpoint as it is found. ``on_checkpoint(state)`` receives the whole training state after each
    epoch (single-process runs); given back as ``resume``, training continues after that epoch as if it had
    never stopped: same data order, augmentations, schedule and weight average. ``on_note(text)`` receives
    each of the result's notes before the first epoch starts, so that a long run says what it adjusted while
    it trains, not only when it ends.
    """
    keep_freed_memory()  # this process trains: reuse big activation buffers instead of re-faulting them
    seed_everything(cfg.seed)
    data = data or prepare_data(cfg, stage)
    notes: list[str] = []
    model = build_model(cfg, len(data.classes), data.decoded.channels)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if on_model:
        on_model(model)
    generator = torch.Generator().manual_seed(cfg.seed)
    augment = BatchAugment(cfg.augment) if cfg.augment.augment else None

    use_cache = caches_features(cfg, model)
    if use_cache:
        feats = {name: cache_features(model, split.images, cached_views(cfg), augment, generator, stage=stage,
                                      label=name)
                 if name == "train" else
                 cache_features(model, split.images, 1, None, generator, stage=stage, label=name, tta=cfg.tta)
                 for name, split in (("train", data.train), ("val", data.val), ("test", data.test))}
        inputs = {name: TensorData(feats[name], getattr(data, name).labels) for name in feats}
        trained: nn.Module = model.head
        prepare = _pick_view(generator)
    else:
        inputs = {name: TensorData(getattr(data, name).images, getattr(data, name).labels)
                  for name in ("train", "val", "test")}
        trained = model
        prepare = _image_prepare(augment, cfg.channels_last, generator)

    labels = data.train.labels.numpy()
    sampler = make_sampler(labels, data.classes, cfg.imbalance, cfg.seed, cfg.oversample)
    if limited := sampler.limit_note():
        notes.append(limited)
    weight = balanced_class_weights(labels, len(data.classes)) if cfg.imbalance == "weighted_loss" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    rank, world = shard
    batch = _effective_batch(cfg, len(data.train), notes)
    if resume is not None:
        check_resume(resume, data)
    # The probe's batch is not augmented: augmenting would draw from the run's augmentation stream, so a seed
    # would train another run on a machine that has not yet probed this model than on one that has.
    precision = resume["precision"] if resume is not None else "fp32" if use_cache else resolve_precision(
        cfg.precision, model, lambda: (prepare(inputs["train"].inputs[:batch], False),
                                       inputs["train"].labels[:batch]),
        key=f"{cfg.model}|{cfg.model_options!r}|{cfg.image_size}|{data.decoded.channels}|{batch}|"
            f"{cfg.channels_last}")
    precision = broadcast_object(precision)  # DDP: every rank trains in the same number format
    module = wrap(trained) if wrap else trained
    if rank:  # other DDP ranks draw their own augmentations and dropout; rank 0 keeps the single-process stream
        generator.manual_seed(cfg.seed * 1000 + rank)
        torch.manual_seed(cfg.seed * 1000 + rank)
    optimizer = build_optimizer(cfg, module.parameters())
    # The configured batch is the global batch: under DDP each of the N ranks takes batch/N of it, so a step
    # sees the same images as the single-process step (the shards interleave) and the optimiser settings carry over.
    batch_size = -(-batch // world)
    steps = batches_per_epoch(len(sampler), batch_size, world)
    if unreached := averaging_note(cfg, steps):
        notes.append(unreached)
    scheduler, interval = build_scheduler(cfg, optimizer, steps)
    best = BestCheckpoint(export=_full_state(model, trained), on_best=on_best, keep_last=cfg.keeps_last())
    averaging = [WeightAveraging(cfg.ema_decay)] if cfg.ema_decay > 0 else []
    fingerprint = data.decoded.spec.fingerprint()
    saving = [ResumeCheckpoint(on_checkpoint, extra=lambda: {"format": RESUME_FORMAT, "precision": precision,
                                                             "data_fingerprint": fingerprint})] \
        if on_checkpoint is not None and world == 1 else []
    trainer = Trainer(module, inputs["train"], inputs["val"], classes=data.classes, loss_fn=loss_fn,
                      optimizer=optimizer, scheduler=scheduler, scheduler_interval=interval, sampler=sampler,
                      batch_size=batch_size, epochs=cfg.epochs, prepare=prepare, select_metric=cfg.select_metric,
                      focus_class=data.focus_class, bf16=precision == "bf16", tta=cfg.tta,
                      callbacks=[*averaging, best, EarlyStopping(cfg.stopping_patience()), *callbacks, *saving],
                      should_cancel=should_cancel, shard=shard, generator=generator)
    if resume is not None:
        trainer.load_state_dict(resume)
        if best.state is not None and on_best is not None:
            on_best(best.exported())  # the kept checkpoint is the resumed state's, even if a later one was saved
        notes.append(resume_note(resume["epoch"], cfg.epochs))
    for note in notes if on_note is not None else ():
        on_note(note)
    cancelled = False
    try:
        trainer.fit()
    except FitCancelled:
        if best.state is None:  # stopped before the first epoch ended: nothing to test
            raise
        cancelled = True
    # Testing the kept checkpoint takes seconds: a stop asked meanwhile (or after the last epoch) lets it finish,
    # so that a run whose epochs are done is not lost, nor a fold model that had finished its epochs.
    trainer.should_cancel = lambda: False
    best.restore(trainer)
    metrics, probs = {}, {}
    for split in ("val", "test"):
        if len(inputs[split]):
            _, probs[split] = trainer.evaluate(inputs[split])
            metrics[split] = classification_metrics(inputs[split].labels.numpy(), probs[split], data.classes)
    return TrainResult(model, data, trainer.result, metrics, probs, precision, cancelled, notes, trainer, best)


def resume_note(epoch: int, epochs: int) -> str:
    return (f"Resumed after epoch {epoch} of {epochs} from its resume checkpoint: the same data order, "
            "augmentations and schedule continued.")


def check_resume(state: dict, data: PreparedData) -> None:
    """Raises DataError when a resume state cannot continue on ``data``: another medcls wrote it, or the dataset
    changed since the run started."""
    if state.get("format") != RESUME_FORMAT:
        raise DataError("This run's resume checkpoint was written by another medcls version and cannot be "
                        "continued. Start a new run with the same settings.")
    if state.get("data_fingerprint") != data.decoded.spec.fingerprint():
        raise DataError("The dataset changed since this run started (images added, removed, relabelled or moved "
                        "between splits), so it cannot continue where it stopped. Start a new run with the same "
                        "settings.")


def _full_state(model: ClassifierModel, trained: nn.Module) -> Callable[[dict], dict]:
    """Saved checkpoints hold the whole model, also when only its head trained (cached features)."""
    prefix = "" if trained is model else next(n for n, m in model.named_modules() if m is trained) + "."

    def export(best: dict) -> dict:
        return {**model.state_dict(), **{prefix + k: v for k, v in best.items()}}

    return export
