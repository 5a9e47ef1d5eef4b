"""One training run from config to finished run folder: data -> model -> fit -> test metrics.

The CLI, the app's worker processes and ``torchrun`` all call :func:`execute_run`.
It marks the run running, keeps a heartbeat, records every epoch through the
run store, and ends the run as finished, cancelled or failed with a readable
error. :func:`train_in_memory` is the same pipeline without the store.
"""

from __future__ import annotations

import logging
import platform
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .calibration import expected_calibration_error
from .callbacks import EarlyStopping, ProgressMeter, RunRecorder
from .config import ConfigError, TrainConfig
from .data import BatchAugment, DecodedDataset, DecodedSplit, decode_dataset, default_focus_class, load_dataset, to_float
from .data.spec import DataError
from .engine import Callback, FitCancelled, NonFiniteLossError, TensorData, Trainer, batches_per_epoch
from .hardware import configure_threads, describe_machine, keep_freed_memory, resolve_precision
from .imbalance import balanced_class_weights, make_sampler
from .metrics import classification_metrics
from .models import ClassifierModel, create_model
from .optim import build_optimizer, build_scheduler
from .runs import RunStore
from .uncertainty import bootstrap_intervals

__all__ = ["PreparedData", "prepare_data", "build_model", "execute_run", "train_in_memory", "TrainResult", "RunOutcome",
           "seed_everything"]

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
    model: ClassifierModel           # with the best weights loaded
    data: PreparedData
    trainer: Trainer
    metrics: dict[str, dict]         # split -> classification metrics (val, test)
    probs: dict[str, np.ndarray]     # split -> class probabilities (N, K)
    precision: str                   # 'fp32' or 'bf16', as resolved


@dataclass
class RunOutcome:
    state: str                       # finished, cancelled or failed
    metrics: dict = field(default_factory=dict)
    error: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_data(cfg: TrainConfig, stage: Stage | None = None) -> PreparedData:
    """Find, decode and split the dataset; check it fits the config."""
    stage = stage or (lambda message, fraction: None)
    stage("Finding images", 0.0)
    spec = load_dataset(cfg.data)
    decoded = decode_dataset(spec, cfg.image_size, cfg.data.color, disk_cache=cfg.data.disk_cache,
                             progress=lambda done, total: stage(f"Decoding images {done}/{total}", done / total))
    train, val, test = (decoded.split(s) for s in ("train", "val", "test"))
    if len(train) == 0:
        raise DataError("No training images could be decoded; see the data report for the reasons.")
    if cfg.batch_size > len(train):
        raise ConfigError(f"Batch size {cfg.batch_size} is larger than the {len(train)} training images. "
                          f"Use a batch size of at most {len(train)}.")
    classes = decoded.spec.classes
    counts = decoded.spec.counts()["train"]
    focus = cfg.focus_class.strip()
    if focus:
        match = [c for c in classes if c.casefold() == focus.casefold()]
        if not match:
            raise ConfigError(f"Focus class {focus!r} is not in this dataset (classes: {', '.join(classes)}).")
        focus = match[0]
    else:
        focus = default_focus_class(classes, counts)
    return PreparedData(decoded, train, val, test, classes, focus)


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int, *, weights: str | None = None) -> ClassifierModel:
    return create_model(cfg.model.name, num_classes=num_classes, image_size=cfg.image_size, in_channels=in_channels,
                        weights=weights or cfg.model.weights, finetune=cfg.model.finetune,
                        **cfg.model.architecture_overrides())


def _image_prepare(augment: BatchAugment | None, channels_last: bool,
                   generator: torch.Generator) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    def prepare(images: torch.Tensor, train: bool) -> torch.Tensor:
        x = to_float(images)
        if train and augment is not None:
            x = augment(x, generator)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return prepare


def _pick_view(generator: torch.Generator) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """Cached features are (B, views, F). Training picks one random view per image; evaluation keeps
    all views (the image and, with test-time augmentation, its mirror), which the trainer averages."""

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
                   label: str = "", mirror: bool = False) -> torch.Tensor:
    """Backbone features of every image: (N, views, F). View 0 is the image as it is; the other views
    are random augmentations, or with ``mirror`` (test-time augmentation) the left-right mirror."""
    model.eval()
    out = []
    n = len(images)
    views = 2 if mirror else views
    for start in range(0, n, batch_size):
        x = to_float(images[start:start + batch_size])
        per_view = []
        for v in range(views):
            if v == 0:
                xv = x
            elif mirror:
                xv = x.flip(-1)
            else:
                xv = augment(x.clone(), generator) if augment is not None else x
            per_view.append(model.forward_features(model.normalize(xv.contiguous(memory_format=torch.channels_last))))
        out.append(torch.stack(per_view, 1).float())
        if stage:
            stage(f"Computing {label} features {min(n, start + batch_size)}/{n}", min(1.0, (start + batch_size) / n))
    return torch.cat(out) if out else torch.zeros(0, views, 1)


def train_in_memory(cfg: TrainConfig, data: PreparedData | None = None, *, callbacks: Sequence[Callback] = (),
                    should_cancel: Callable[[], bool] | None = None, stage: Stage | None = None,
                    on_model: Callable[[ClassifierModel], None] | None = None,
                    shard: tuple[int, int] = (0, 1), wrap: Callable[[nn.Module], nn.Module] | None = None,
                    ) -> TrainResult:
    """Train, then evaluate the best weights on val and test; no run store involved."""
    keep_freed_memory()  # this process trains: reuse big activation buffers instead of re-faulting them
    seed_everything(cfg.seed)
    data = data or prepare_data(cfg, stage)
    model = build_model(cfg, len(data.classes), data.decoded.channels)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if on_model:
        on_model(model)
    generator = torch.Generator().manual_seed(cfg.seed)
    augment = BatchAugment(cfg.augment) if cfg.augment.augment else None

    use_cache = cfg.feature_cache and model.frozen_features
    if use_cache:
        views = cfg.feature_views if augment is not None and augment.active else 1
        feats = {name: cache_features(model, split.images, views if name == "train" else 1, augment, generator,
                                      stage=stage, label=name, mirror=cfg.tta and name != "train")
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
    weight = balanced_class_weights(labels, len(data.classes)) if cfg.imbalance == "weighted_loss" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    precision = "fp32" if use_cache else resolve_precision(
        cfg.precision, model, lambda: (prepare(inputs["train"].inputs[:cfg.batch_size], True),
                                       inputs["train"].labels[:cfg.batch_size]),
        key=f"{cfg.model.name}|{sorted(cfg.model.architecture_overrides().items())}|{cfg.image_size}|"
            f"{data.decoded.channels}|{cfg.batch_size}|{cfg.channels_last}")
    rank, world = shard
    if world > 1:  # DDP: every rank must train in the same number format
        from .distributed import broadcast_object

        precision = broadcast_object(precision)
    module = wrap(trained) if wrap else trained
    if rank:  # other DDP ranks draw their own augmentations and dropout; rank 0 keeps the single-process stream
        generator.manual_seed(cfg.seed * 1000 + rank)
        torch.manual_seed(cfg.seed * 1000 + rank)
    optimizer = build_optimizer(cfg, module.parameters())
    # The configured batch is the global batch: under DDP each of the N ranks takes batch/N of it, so a step
    # sees the same images as the single-process step (the shards interleave) and the optimiser settings carry over.
    batch_size = -(-cfg.batch_size // world)
    steps = batches_per_epoch(len(sampler), batch_size, world)
    scheduler, interval = build_scheduler(cfg, optimizer, steps)
    trainer = Trainer(module, inputs["train"], inputs["val"], classes=data.classes, loss_fn=loss_fn,
                      optimizer=optimizer, scheduler=scheduler, scheduler_interval=interval, sampler=sampler,
                      batch_size=batch_size, epochs=cfg.epochs, prepare=prepare,
                      select_metric=cfg.select_metric, focus_class=data.focus_class, bf16=precision == "bf16",
                      callbacks=[EarlyStopping(cfg.patience), *callbacks], should_cancel=should_cancel, shard=shard,
                      ema_decay=cfg.ema_decay, tta=cfg.tta, export=_full_state(model, trained))
    try:
        trainer.fit()
    finally:
        trainer.restore_best()
    metrics, probs = {}, {}
    for split in ("val", "test"):
        if len(inputs[split]):
            _, probs[split] = trainer.evaluate(inputs[split])
            metrics[split] = classification_metrics(inputs[split].labels.numpy(), probs[split], data.classes)
    return TrainResult(model, data, trainer, metrics, probs, precision)


def _full_state(model: ClassifierModel, trained: nn.Module) -> Callable[[dict], dict]:
    """Saved checkpoints hold the whole model, also when only its head trained (cached features)."""
    prefix = "" if trained is model else next(n for n, m in model.named_modules() if m is trained) + "."

    def export(best: dict) -> dict:
        return {**model.state_dict(), **{prefix + k: v for k, v in best.items()}}

    return export


@contextmanager
def _heartbeat(store: RunStore, run_id: str, interval: float = 3.0) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                store.beat(run_id)
            except OSError:
                pass  # the run folder was deleted; the run will fail on its next write

    store.beat(run_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def execute_run(store: RunStore, run_id: str, *, callbacks: Sequence[Callback] = (),
                should_cancel: Callable[[], bool] | None = None, is_writer: bool = True,
                shard: tuple[int, int] = (0, 1), wrap: Callable[[nn.Module], nn.Module] | None = None) -> RunOutcome:
    """Train the run stored under ``run_id`` and record everything in its folder."""
    cfg = store.config(run_id)
    cancel = should_cancel or (lambda: store.stop_requested(run_id))
    if not is_writer:  # DDP ranks other than 0 compute but never write
        train_in_memory(cfg, callbacks=callbacks, should_cancel=cancel, shard=shard, wrap=wrap)
        return RunOutcome("finished")
    if cfg.threads:
        configure_threads(cfg.threads)
    store.set_status(run_id, "running")

    def stage(message: str, fraction: float) -> None:
        store.write_progress(run_id, {"phase": "preparing", "message": message, "fraction": 0.0,
                                      "prepare_fraction": fraction})

    def on_model(model: ClassifierModel) -> None:
        store.write_json(run_id, "model.json", {
            "name": cfg.model.name, "classes": data.classes, "focus_class": data.focus_class,
            "image_size": cfg.image_size, "in_channels": data.decoded.channels, "color": data.decoded.color,
            "finetune": cfg.model.finetune, "options": cfg.model.architecture_overrides(),
            "architecture": model.architecture(), "parameters": sum(p.numel() for p in model.parameters()),
            "tta": cfg.tta,
        })

    recorder = RunRecorder(store, run_id)
    meter = ProgressMeter(lambda p: store.write_progress(run_id, p))
    try:
        with _heartbeat(store, run_id):
            data = prepare_data(cfg, stage)
            _record_data(store, run_id, cfg, data)
            result = train_in_memory(
                cfg, data, callbacks=[recorder, meter, *callbacks], should_cancel=cancel, stage=stage,
                on_model=on_model, shard=shard, wrap=wrap)
            _record_results(store, run_id, result)
        store.set_status(run_id, "finished", best_epoch=result.trainer.result.best_epoch,
                         stopped_early=result.trainer.result.stopped_early)
        return RunOutcome("finished", result.metrics)
    except FitCancelled:
        store.set_status(run_id, "cancelled", error="Stopped on request. The best checkpoint so far is kept.")
        return RunOutcome("cancelled")
    except (NonFiniteLossError, DataError, ConfigError, ValueError, MemoryError) as exc:
        message = str(exc) if not isinstance(exc, MemoryError) else \
            "Out of memory: use smaller images, a smaller batch or a smaller model."
        log.error("Run %s failed: %s", run_id, message)
        store.set_status(run_id, "failed", error=message)
        return RunOutcome("failed", error=message)
    except Exception as exc:  # record unexpected errors too; the worker must not die silently
        log.exception("Run %s failed", run_id)
        message = f"{type(exc).__name__}: {exc}"
        store.set_status(run_id, "failed", error=message)
        return RunOutcome("failed", error=message)


def _record_data(store: RunStore, run_id: str, cfg: TrainConfig, data: PreparedData) -> None:
    spec = data.decoded.spec
    store.write_split(run_id, [(it.path, spec.classes[it.label], it.split) for it in spec.items])
    store.write_json(run_id, "data_report.json", spec.report.to_dict())
    store.write_json(run_id, "data.json", {
        "root": spec.root, "layout": spec.layout, "synthetic": spec.synthetic, "fingerprint": spec.fingerprint(),
        "classes": spec.classes, "counts": spec.counts(), "color": data.decoded.color,
    })
    store.write_json(run_id, "env.json", {**describe_machine(), "numpy": np.__version__,
                                          "platform": platform.platform(), "torchvision": _version("torchvision"),
                                          "scikit-learn": _version("sklearn"), "pillow": _version("PIL")})


def _record_results(store: RunStore, run_id: str, result: TrainResult) -> None:
    names, paths, truths, probs = [], [], [], []
    for split, split_probs in result.probs.items():
        part: DecodedSplit = getattr(result.data, split)
        names += [split] * len(part)
        paths += part.paths
        truths.append(part.labels.numpy())
        probs.append(split_probs)
    if probs:
        store.write_predictions(run_id, names, paths, np.concatenate(truths), np.concatenate(probs),
                                result.data.classes)
    fit = result.trainer.result
    labels = {split: getattr(result.data, split).labels.numpy() for split in result.probs}
    store.write_json(run_id, "metrics.json", {**result.metrics, "best_epoch": fit.best_epoch,
                                              "best_val_score": fit.best_score, "precision": result.precision,
                                              "focus_class": result.data.focus_class,
                                              # 95% bootstrap intervals and calibration per split (milliseconds)
                                              "intervals": {s: bootstrap_intervals(labels[s], p, result.data.classes)
                                                            for s, p in result.probs.items()},
                                              "calibration": {s: {"ece": expected_calibration_error(labels[s], p)}
                                                              for s, p in result.probs.items()}})


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:
        return "?"
