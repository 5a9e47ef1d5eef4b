"""Train one stored run and record everything in its folder.

The CLI, the app's worker processes and ``torchrun`` all call :func:`execute_run`.
It marks the run running, records every epoch through the run store, lets the
training loop beat the run's heartbeat, and ends the run as finished, cancelled or
failed with a readable error. A stopped run's best checkpoint is still tested, so
it can be compared like any other.

After every epoch the whole training state goes to the run's resume checkpoint (an
ensemble's holds its finished models too); a run that was interrupted (its process
killed, its server restarted) and is started again continues from there, with one
continuous history. A worker that finds its run taken from it (ended as hung, or
resumed elsewhere) stops without writing.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import platform
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from torch import nn

from ..analysis.calibration import expected_calibration_error
from ..analysis.copies import copied_test_images, learning_splits
from ..analysis.metrics import SplitMetrics
from ..analysis.uncertainty import metric_intervals
from ..atomic import DiskFullError, disk_full_message, is_disk_full
from ..config import ConfigError, TrainConfig
from ..data.explore import enlargement_note, image_properties, small_validation_note, squash_note, typical_side_of
from ..data.sources import load_dataset
from ..data.spec import DataError
from ..data.storage import stored_by_class_note
from ..data.subfolders import subfolder_note
from ..inference.novelty import embed_images, fit_reference
from ..models import ClassifierModel
from ..models.ensemble import FoldEnsemble
from ..runs.records import DataRecord, EpochRecord, ModelRecord, Progress, member_word
from ..runs.results import RunMetrics
from ..runs.store import CheckpointError, RunStore
from ..training.autoplan import pool_counts, resolve_folds, resolve_image_size
from ..training.bagging import train_bagged
from ..training.callbacks import Heartbeat, HistoryRecorder, ProgressMeter, ThreadBudget
from ..training.crossval import cross_validate
from ..training.engine import Callback, FitCancelled, NonFiniteLossError
from ..training.hardware import configure_threads, describe_machine
from ..training.members import kept_history, members_state
from ..training.pipeline import PreparedData, TrainResult, prepare_data, resume_note, train_in_memory

__all__ = ["execute_run", "RunOutcome", "stopped_message", "RunTakenOver"]

log = logging.getLogger(__name__)


def stopped_message(cfg: TrainConfig, result: TrainResult) -> str:
    """What a run stopped on request keeps and was tested with: which epoch's weights, and which fold (or bagged)
    models."""
    if result.member_epochs:  # bagged models: each keeps its last epoch (nothing is validated)
        last = result.member_epochs[-1]
        return _stopped_members(len(result.member_epochs), cfg.bagged_models, last, cfg.epochs,
                                _kept_words(cfg, last, validated=False), bagged=True)
    if result.cv is not None and result.cv.scores:
        last, trained = result.cv.scores[-1], len(result.cv.scores)
        # A fold model that ended (early stopping may end it before the last epoch) counts as trained to the end.
        epochs = cfg.epochs if result.cv.completed == trained else last.epochs
        return _stopped_members(trained, cfg.folds, epochs, cfg.epochs,
                                _kept_words(cfg, last.best_epoch, validated=last.images > 0))
    history = result.fit.history
    kept = _kept_words(cfg, result.fit.best_epoch, validated=bool(history) and history[-1].validated)
    return f"Stopped on request after {len(history)} of {cfg.epochs} epochs. It keeps {kept}, and they were tested."


def _stopped_members(models: int, planned: int, last_epochs: int, epochs: int, kept: str, bagged: bool = False) -> str:
    """A stopped ensemble's message: ``models`` of ``planned`` trained, the last of them for ``last_epochs`` of
    ``epochs`` epochs (all of them: it ended, and the stop came before the next one finished an epoch)."""
    word, words = member_word(bagged), member_word(bagged, plural=True)
    trained = f"The {models} {words}" if models > 1 else f"Its one {words[:-1]}"
    verbs = ("are", "were") if models > 1 else ("is", "was")
    if last_epochs >= epochs:  # stopped before the next model had finished an epoch
        return (f"Stopped on request before {word} {models + 1} of {planned} had finished an epoch. "
                f"{trained} trained to the end {verbs[0]} kept and {verbs[1]} tested.")
    return (f"Stopped on request in {word} {models} of {planned}, after {last_epochs} of its {epochs} epochs. "
            f"{trained} trained so far {verbs[0]} kept and {verbs[1]} tested ({word} {models} with {kept}).")


def _kept_words(cfg: TrainConfig, epoch: int, *, validated: bool) -> str:
    """'the weights of its last epoch (4)' or 'the weights of its best validation epoch so far (3)'."""
    last = cfg.keeps_last() or not validated
    return f"the weights of its {'last epoch' if last else 'best validation epoch so far'} ({epoch})"


class RunTakenOver(Exception):
    """The run is no longer this process's to train (a job manager ended it as hung, or it was resumed
    elsewhere): stop at once and write nothing more."""


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
    me = os.getpid()

    def mine() -> None:  # checked before every write: a worker that lost its run must not touch it
        if not store.owns(run_id, me):
            raise RunTakenOver(f"Run {run_id} is no longer running in this process ({store.raw_status(run_id).state}).")

    def beat() -> None:
        store.beat(run_id)
        mine()

    heartbeat = Heartbeat(beat)
    heartbeat.beat()

    def stage(message: str, fraction: float) -> None:
        heartbeat()  # decoding and feature caching are part of the loop's life too
        # A stop asked while the data is prepared ends the run now, not at the first batch. (Under torchrun,
        # ``cancel`` is a collective every rank calls before each batch: only rank 0 prepares here, so no.)
        if shard[1] == 1 and cancel():
            raise FitCancelled()
        store.write_progress(run_id, Progress(phase="preparing", message=message, prepare_fraction=fraction))

    data: PreparedData | None = None

    def on_model(model: ClassifierModel, folds: int = 0) -> None:
        store.write_model_record(run_id, ModelRecord(
            classes=tuple(data.classes), image_size=cfg.image_size, in_channels=data.decoded.channels,
            color=data.decoded.color, focus_class=data.focus_class,
            parameters=sum(p.numel() for p in model.parameters()), tta=cfg.tta, folds=folds,
            bagged=bool(folds and cfg.bagged_models)))

    def on_member_end(members: list[TrainResult]) -> None:  # what a stop keeps: the fold (or bagged) models so far
        mine()
        if not members[-1].cancelled:  # an interrupted run resumes after the finished ones
            store.save_resume(run_id, members_state(members))
        ensemble = FoldEnsemble([r.model for r in members])
        store.save_weights(run_id, ensemble.state_dict())
        on_model(ensemble, folds=len(members))

    def add_note(text: str) -> None:  # shown while the run trains (the live panel, the command line)
        mine()
        store.add_note(run_id, text)

    def recorders(fold: int = 0, folds: int = 1) -> list[Callback]:
        def record(epoch: EpochRecord) -> None:
            mine()
            store.append_history(run_id, dataclasses.replace(epoch, fold=fold + 1) if folds > 1 else epoch)

        return [HistoryRecorder(record), heartbeat,
                ProgressMeter(lambda progress: mine() or store.write_progress(run_id, progress), part=(fold, folds))]

    try:
        resume = _resume_state(store, run_id, shard)
        stage("Finding images", 0.0)
        spec = load_dataset(cfg.data)
        sizes = image_properties(spec, limit=100)  # read once: for the size chosen and the notes on the images
        side = typical_side_of(sizes)
        # A small dataset may be cross-validated automatically, and its image size chosen (in one process only).
        queued = cfg
        cfg, chosen = resolve_image_size(cfg, pool_counts(spec), side if shard[1] == 1 else None)
        if shard[0] == 0:
            store.name_chosen_size(run_id, queued, cfg)  # "… · auto size" -> "… · 192 px"
        data = prepare_data(cfg, stage, spec=spec)
        _record_data(store, run_id, data, side)
        if shard[1] == 1 and not chosen:
            cfg, chosen = resolve_folds(cfg, data)
        if shard[0] == 0:
            store.write_plan(run_id, cfg)  # what every page reads as trained from now on (bagged models, folds)
        if chosen:
            store.add_note(run_id, chosen)
        if enlarged := enlargement_note(cfg.image_size, side):
            store.add_note(run_id, enlarged)
        if squashed := squash_note(sizes, cfg.image_size, of=len(spec.items)):
            store.add_note(run_id, squashed)
        if shortcut := stored_by_class_note(sizes):
            store.add_note(run_id, shortcut)
        if patients := subfolder_note(spec):
            store.add_note(run_id, patients)
        # Folds validate on their own part; bagged models validate nothing.
        if not (cfg.folds or cfg.bagged_models) and (few := small_validation_note(data.decoded.spec)):
            store.add_note(run_id, few)
        if cfg.folds or cfg.bagged_models:  # a resumed ensemble keeps the models it had finished
            kept = resume if resume is not None and "members" in resume else None
            # one continuous history: the finished models' epochs and those the unfinished one's state has seen
            store.write_history(run_id, kept_history(kept) if kept else [])
            train = cross_validate if cfg.folds else train_bagged
            result = train(cfg, data, callbacks_for=lambda fold, folds: [*recorders(fold, folds), *callbacks],
                           should_cancel=cancel, stage=stage, on_member_end=on_member_end, on_note=add_note,
                           resume=kept, on_checkpoint=lambda state: mine() or store.save_resume(run_id, state))
            mine()
            if result.cv is not None:
                store.write_cross_validation(run_id, result.cv)
        else:
            if resume is not None:  # one continuous history: exactly the epochs the resumed state has seen
                store.write_history(run_id, [EpochRecord.from_dict(h) for h in resume["history"]])
                store.add_note(run_id, resume_note(resume["epoch"], cfg.epochs))
            result = train_in_memory(cfg, data, callbacks=[*recorders(), *callbacks], should_cancel=cancel,
                                     stage=stage, on_model=on_model, shard=shard, wrap=wrap, resume=resume,
                                     on_best=lambda state: mine() or store.save_weights(run_id, state),
                                     on_checkpoint=lambda state: mine() or store.save_resume(run_id, state),
                                     on_note=add_note)
            mine()
        _record_results(store, run_id, result, learning_splits(cfg.folds or cfg.bagged_models, cfg.keeps_last()))
        _record_novelty(store, run_id, result)
        for note in result.notes:
            store.add_note(run_id, note)
        store.delete_resume(run_id)
        if result.cancelled:
            store.set_status(run_id, "cancelled", error=stopped_message(cfg, result), best_epoch=result.fit.best_epoch)
            return RunOutcome("cancelled", result.metrics)
        store.set_status(run_id, "finished", best_epoch=result.fit.best_epoch, stopped_early=result.fit.stopped_early)
        return RunOutcome("finished", result.metrics)
    except RunTakenOver as exc:
        log.warning("%s Stopping without writing.", exc)
        return RunOutcome("interrupted", error=str(exc))
    except FitCancelled:
        store.delete_resume(run_id)
        resumed = bool(store.history(run_id))
        store.set_status(run_id, "cancelled", error="Stopped on request before it continued; its history and best "
                         "checkpoint so far are kept." if resumed else
                         "Stopped on request, before its first epoch ended.")
        return RunOutcome("cancelled")
    except (NonFiniteLossError, DataError, ConfigError, ValueError, MemoryError, DiskFullError) as exc:
        message = str(exc) if not isinstance(exc, MemoryError) else \
            "Out of memory: use smaller images, a smaller batch or a smaller model."
        log.error("Run %s failed: %s", run_id, message)
        return _fail(store, run_id, message, keep_resume=isinstance(exc, DiskFullError))
    except OSError as exc:
        if is_disk_full(exc):  # a write that did not go through atomic writes (a library's own file)
            message = disk_full_message(store.root / run_id)
            log.error("Run %s failed: %s", run_id, message)
            return _fail(store, run_id, message, keep_resume=True)
        log.exception("Run %s failed", run_id)
        return _fail(store, run_id, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # record unexpected errors too; the worker must not die silently
        log.exception("Run %s failed", run_id)
        return _fail(store, run_id, f"{type(exc).__name__}: {exc}")


def _fail(store: RunStore, run_id: str, message: str, keep_resume: bool = False) -> RunOutcome:
    """Record the failure; a full disk keeps the resume checkpoint (the run can continue once there is room)."""
    if not keep_resume:
        store.delete_resume(run_id)
    try:
        store.set_status(run_id, "failed", error=message)
    except OSError as exc:  # a full disk may refuse even the status
        log.error("Could not record the failure of run %s: %s", run_id, exc)
    return RunOutcome("failed", error=message)


def _resume_state(store: RunStore, run_id: str, shard: tuple[int, int]) -> dict | None:
    """The state to continue from; None to start at the first epoch (with a clean history)."""
    if shard[1] > 1:  # torchrun: every rank would need the state; such runs start over
        return None
    try:
        state = store.load_resume(run_id)
    except CheckpointError as exc:
        store.add_note(run_id, f"{exc} Training started again from the first epoch.")
        state = None
    if state is None and store.history(run_id):
        store.write_history(run_id, [])  # an earlier attempt without a usable state: its epochs are redone
    return state


def _record_data(store: RunStore, run_id: str, data: PreparedData, side: int | None) -> None:
    spec = data.decoded.spec
    store.write_split(run_id, [(it.path, spec.classes[it.label], it.split) for it in spec.items])
    store.write_data_report(run_id, spec.report.to_dict())
    store.write_data_record(run_id, DataRecord(
        root=spec.root, layout=spec.layout, synthetic=spec.synthetic, fingerprint=spec.fingerprint(),
        classes=tuple(spec.classes), counts=spec.counts(), color=data.decoded.color, focus_class=data.focus_class,
        typical_side=side or 0))
    store.write_env(run_id, {**describe_machine(), "numpy": np.__version__, "platform": platform.platform(),
                             "torchvision": _version("torchvision"), "scikit-learn": _version("scikit-learn"),
                             "pillow": _version("pillow")})


def _record_results(store: RunStore, run_id: str, result: TrainResult, learning: Sequence[str]) -> None:
    """``learning``: the splits the run learned from (whose copies among the test images make them no test)."""
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
        # 95% intervals and calibration per split (milliseconds)
        intervals={s: metric_intervals(labels[s], p, result.data.classes) for s, p in result.probs.items()},
        ece={s: expected_calibration_error(labels[s], p) for s, p in result.probs.items()},
        stopped=result.cancelled, test_copies=_test_copies(result.data, learning)))


def _test_copies(data: PreparedData, learning: Sequence[str]) -> tuple[str, ...] | None:
    """The test images with a copy among those the run learned from (a run never fails for want of it)."""
    spec = data.decoded.spec
    try:
        return copied_test_images([(it.path, it.split) for it in spec.items], learning)
    except Exception as exc:  # an odd file or a full cache disk must not cost the run its results
        log.warning("Could not check the test images for copies of training images: %s", exc)
        return None


def _record_novelty(store: RunStore, run_id: str, result: TrainResult) -> None:
    """The tested checkpoint's features of the training and validation images: what Try it compares new
    images with (medcls.inference.novelty). A run never fails for want of it."""
    train, val = result.data.train, result.data.val
    if result.cv is not None:
        # A fold ensemble's results view validates on all of train + val (each image predicted by the fold model
        # that never saw it). The training images in it are the reference itself and would count themselves among
        # their nearest neighbours, so the limits and the typical score come from the validation split alone.
        seen = set(train.paths)
        val_images = val.images[[i for i, path in enumerate(val.paths) if path not in seen]]
    else:
        val_images = val.images
    try:
        reference = fit_reference(embed_images(result.model, train.images), embed_images(result.model, val_images),
                                  seed=0)
        store.write_feature_reference(run_id, reference)
    except Exception:  # the check is an extra; the trained model and its results stand without it
        log.exception("Run %s: could not record its training images' features", run_id)


def _version(distribution: str) -> str:
    """An installed package's version, read from its metadata: importing torchvision and scikit-learn to ask
    them would hold the first epoch up by about 4 s."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"
