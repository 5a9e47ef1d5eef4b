"""Train one stored run and record everything in its folder.

The CLI, the app's worker processes and ``torchrun`` all call :func:`execute_run`.
It marks the run running, records every epoch through the run store, lets the
training loop beat the run's heartbeat, and ends the run as finished, cancelled or
failed with a readable error. A stopped run's best checkpoint is still tested, so
it can be compared like any other.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from torch import nn

from ..analysis.calibration import expected_calibration_error
from ..analysis.metrics import SplitMetrics
from ..analysis.uncertainty import bootstrap_intervals
from ..config import ConfigError
from ..data.spec import DataError
from ..inference.novelty import embed_images, fit_reference
from ..models import ClassifierModel
from ..runs.records import DataRecord, ModelRecord, Progress, RunMetrics
from ..runs.store import RunStore
from ..training.callbacks import Heartbeat, HistoryRecorder, ProgressMeter, ThreadBudget
from ..training.engine import Callback, FitCancelled, NonFiniteLossError
from ..training.hardware import configure_threads, describe_machine
from ..training.pipeline import PreparedData, TrainResult, prepare_data, train_in_memory

__all__ = ["execute_run", "RunOutcome", "STOPPED_MESSAGE"]

log = logging.getLogger(__name__)
STOPPED_MESSAGE = "Stopped on request. Its best checkpoint so far was tested and is kept."


@dataclass
class RunOutcome:
    state: str                       # finished, cancelled or failed
    metrics: dict[str, SplitMetrics] = field(default_factory=dict)
    error: str = ""


def execute_run(store: RunStore, run_id: str, *, callbacks: Sequence[Callback] = (),
                should_cancel: Callable[[], bool] | None = None, is_writer: bool = True,
                shard: tuple[int, int] = (0, 1), wrap: Callable[[nn.Module], nn.Module] | None = None,
                adapt_threads: bool = False) -> RunOutcome:
    """Train the run stored under ``run_id`` and record everything in its folder.

    With ``adapt_threads`` (a worker whose thread count nobody fixed), the threads follow the free cores
    from epoch to epoch (:class:`~medcls.training.callbacks.ThreadBudget`), unless the run's config fixes them.
    """
    cfg = store.config(run_id)
    cancel = should_cancel or (lambda: store.stop_requested(run_id))
    if not is_writer:  # DDP ranks other than 0 compute but never write
        train_in_memory(cfg, callbacks=callbacks, should_cancel=cancel, shard=shard, wrap=wrap)
        return RunOutcome("finished")
    if cfg.threads:
        configure_threads(cfg.threads)
    elif adapt_threads:
        callbacks = [*callbacks, ThreadBudget()]
    store.set_status(run_id, "running")
    heartbeat = Heartbeat(lambda: store.beat(run_id))
    heartbeat.beat()

    def stage(message: str, fraction: float) -> None:
        heartbeat()  # decoding and feature caching are part of the loop's life too
        store.write_progress(run_id, Progress(phase="preparing", message=message, prepare_fraction=fraction))

    data: PreparedData | None = None

    def on_model(model: ClassifierModel) -> None:
        store.write_model_record(run_id, ModelRecord(
            classes=tuple(data.classes), image_size=cfg.image_size, in_channels=data.decoded.channels,
            color=data.decoded.color, focus_class=data.focus_class,
            parameters=sum(p.numel() for p in model.parameters()), tta=cfg.tta))

    recorders = [HistoryRecorder(lambda record: store.append_history(run_id, record)),
                 ProgressMeter(lambda progress: store.write_progress(run_id, progress)), heartbeat]
    try:
        data = prepare_data(cfg, stage)
        _record_data(store, run_id, data)
        result = train_in_memory(cfg, data, callbacks=[*recorders, *callbacks], should_cancel=cancel, stage=stage,
                                 on_model=on_model, on_best=lambda state: store.save_weights(run_id, state),
                                 shard=shard, wrap=wrap)
        _record_results(store, run_id, result)
        _record_novelty(store, run_id, result)
        for note in result.notes:
            store.add_note(run_id, note)
        if result.cancelled:
            store.set_status(run_id, "cancelled", error=STOPPED_MESSAGE, best_epoch=result.fit.best_epoch)
            return RunOutcome("cancelled", result.metrics)
        store.set_status(run_id, "finished", best_epoch=result.fit.best_epoch, stopped_early=result.fit.stopped_early)
        return RunOutcome("finished", result.metrics)
    except FitCancelled:
        store.set_status(run_id, "cancelled", error="Stopped on request, before its first epoch ended.")
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


def _record_data(store: RunStore, run_id: str, data: PreparedData) -> None:
    spec = data.decoded.spec
    store.write_split(run_id, [(it.path, spec.classes[it.label], it.split) for it in spec.items])
    store.write_data_report(run_id, spec.report.to_dict())
    store.write_data_record(run_id, DataRecord(
        root=spec.root, layout=spec.layout, synthetic=spec.synthetic, fingerprint=spec.fingerprint(),
        classes=tuple(spec.classes), counts=spec.counts(), color=data.decoded.color))
    store.write_env(run_id, {**describe_machine(), "numpy": np.__version__, "platform": platform.platform(),
                             "torchvision": _version("torchvision"), "scikit-learn": _version("sklearn"),
                             "pillow": _version("PIL")})


def _record_results(store: RunStore, run_id: str, result: TrainResult) -> None:
    names, paths, truths, probs = [], [], [], []
    for split, split_probs in result.probs.items():
        part = getattr(result.data, split)
        names += [split] * len(part)
        paths += part.paths
        truths.append(part.labels.numpy())
        probs.append(split_probs)
    if probs:
        store.write_predictions(run_id, names, paths, np.concatenate(truths), np.concatenate(probs),
                                result.data.classes)
    labels = {split: getattr(result.data, split).labels.numpy() for split in result.probs}
    store.write_metrics(run_id, RunMetrics(
        splits=result.metrics, best_epoch=result.fit.best_epoch,
        best_val_score=result.fit.best_score if np.isfinite(result.fit.best_score) else None,
        precision=result.precision, focus_class=result.data.focus_class,
        # 95% bootstrap intervals and calibration per split (milliseconds)
        intervals={s: bootstrap_intervals(labels[s], p, result.data.classes) for s, p in result.probs.items()},
        ece={s: expected_calibration_error(labels[s], p) for s, p in result.probs.items()},
        stopped=result.cancelled))


def _record_novelty(store: RunStore, run_id: str, result: TrainResult) -> None:
    """The tested checkpoint's features of the training and validation images: what Try it compares new
    images with (medcls.inference.novelty). A run never fails for want of it."""
    try:
        reference = fit_reference(embed_images(result.model, result.data.train.images),
                                  embed_images(result.model, result.data.val.images), seed=0)
        store.write_feature_reference(run_id, reference)
    except Exception:  # the check is an extra; the trained model and its results stand without it
        log.exception("Run %s: could not record its training images' features", run_id)


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:
        return "?"
