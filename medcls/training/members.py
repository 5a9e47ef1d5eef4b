"""The models of an ensemble (fold models or bagged models), trained one after another, and what an interrupted
run keeps of them.

Each member trains with seed ``cfg.seed + k`` on its own part of the data (:mod:`~medcls.training.crossval` cuts
the folds, :mod:`~medcls.training.bagging` gives every member all images). After each member the run store saves
the members so far; their resume state (:func:`members_state`) holds each finished member's weights, held-out
probabilities, epochs and notes, and after each epoch of member k + 1 its whole training state too (as one
model's run saves it). A run interrupted in member k + 1 (a killed worker, a server restart) resumes with the k
members as they were (:func:`kept_members`) and member k + 1 after its last saved epoch, so that it ends with the
same ensemble as a run never interrupted, instead of training the finished members (or epochs) again.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..analysis.metrics import classification_metrics
from ..config import TrainConfig
from ..data.spec import DataError
from ..runs.records import EpochRecord, best_record
from .engine import Callback, FitCancelled, FitResult
from .pipeline import RESUME_FORMAT, PreparedData, Stage, TrainResult, build_model, check_resume, train_in_memory

__all__ = ["train_members", "members_state", "kept_members", "kept_history", "members_resumed_note"]

log = logging.getLogger(__name__)


def train_members(cfg: TrainConfig, parts: Sequence[PreparedData], word: str, *,
                  callbacks_for: Callable[[int, int], Sequence[Callback]],
                  should_cancel: Callable[[], bool] | None, stage: Stage | None,
                  on_member_end: Callable[[list[TrainResult]], None] | None,
                  on_note: Callable[[str], None] | None,
                  resume: dict | None = None,
                  on_checkpoint: Callable[[dict], None] | None = None) -> tuple[list[TrainResult], bool]:
    """Train one model on each of ``parts`` (member k with seed ``cfg.seed + k``), one after another, and
    whether a stop ended them early. ``word`` names a member in the log ('fold', 'bagged model').

    ``on_member_end`` receives the members trained so far after each one (the run store saves them, so a stopped
    run keeps what it has, and an interrupted one resumes after them). A stop ends the current member (its kept
    weights so far join the ensemble) and skips the rest; a stop before any member finished an epoch raises
    :class:`FitCancelled`. ``resume``: the resume state an interrupted run saved (:func:`members_state`); its
    finished members are kept and training goes on with the next one, after its last saved epoch when the state
    holds one. ``on_checkpoint(state)`` receives that state after each epoch of a member."""
    results = kept_members(resume, cfg, parts) if resume is not None else []
    unfinished = resume.get("current") if resume is not None and len(results) < len(parts) else None
    if (results or unfinished) and on_note is not None:
        on_note(members_resumed_note(len(results), len(parts), word, continued=unfinished is not None))
    cancelled = False
    for index in range(len(results), len(parts)):
        part = parts[index]
        log.info("%s %d of %d: %d training, %d held-out images", word, index + 1, len(parts), len(part.train),
                 len(part.val))
        callbacks = callbacks_for(index, len(parts))
        for callback in callbacks:
            callback.on_fold_start(index, len(parts))
        finished = list(results)
        save = (lambda state, done=finished: on_checkpoint(members_state(done, current=state))) \
            if on_checkpoint else None
        try:
            result = train_in_memory(replace(cfg, seed=cfg.seed + index), part, callbacks=callbacks,
                                     should_cancel=should_cancel, stage=stage, on_note=on_note,
                                     resume=unfinished, on_checkpoint=save)
            unfinished = None  # only the member that was interrupted continues; the next ones start afresh
        except FitCancelled:
            cancelled = True
            break
        results.append(result)
        if on_member_end is not None:
            on_member_end(list(results))
        if result.cancelled:
            cancelled = True
            break
    if not results:
        raise FitCancelled()
    return results, cancelled


def members_state(results: Sequence[TrainResult], current: dict | None = None) -> dict:
    """What a resumed run needs of finished members (plain values and tensors, for the run's resume file):
    each one's weights, held-out probabilities, epochs and notes, the number format they trained in, and the
    data they trained on (its fingerprint); ``current``: the next member's whole training state after its last
    epoch (:class:`~medcls.training.callbacks.ResumeCheckpoint`'s), which carries the format and data too."""
    state = {"format": RESUME_FORMAT}
    if current is not None:
        state.update(current=current, data_fingerprint=current["data_fingerprint"], precision=current["precision"])
    if results:
        state.update(data_fingerprint=results[0].data.decoded.spec.fingerprint(), precision=results[-1].precision)
    return {**state,
            "members": [{"weights": r.model.state_dict(),
                         "val_probs": torch.from_numpy(np.array(r.probs["val"], dtype=np.float32))
                         if "val" in r.probs else None,
                         "history": [h.to_dict() for h in r.fit.history], "notes": list(r.notes)}
                        for r in results]}


def kept_members(state: dict, cfg: TrainConfig, parts: Sequence[PreparedData]) -> list[TrainResult]:
    """The finished members in an interrupted run's resume state, as the results they were: their weights,
    held-out probabilities (so out-of-fold scores come out as without the interruption) and epochs.

    Raises DataError when the state cannot continue on this data (see :func:`check_resume`) or does not fit
    this run's models."""
    members = state.get("members") or []
    if not parts or len(members) > len(parts):
        raise DataError(f"This run's resume checkpoint holds {len(members)} finished models, more than the "
                        f"{len(parts)} it trains, so it cannot continue. Start a new run with the same settings.")
    check_resume(state, parts[0])
    kept = []
    for member, part in zip(members, parts):
        model = build_model(cfg, len(part.classes), part.decoded.channels, weights="random")  # the weights follow
        try:
            model.load_state_dict(member["weights"])
        except RuntimeError:
            raise DataError("This run's resume checkpoint holds models of another shape, so it cannot continue. "
                            "Start a new run with the same settings.") from None
        history = [EpochRecord.from_dict(h) for h in member["history"]]
        best = best_record(history)
        probs, metrics = {}, {}
        if member.get("val_probs") is not None and len(part.val):
            probs["val"] = member["val_probs"].numpy()
            metrics["val"] = classification_metrics(part.val.labels.numpy(), probs["val"], part.classes)
        fit = FitResult(history=history, best_epoch=best.epoch if best else 0,
                        best_score=best.score if best else -np.inf)
        kept.append(TrainResult(model.eval(), part, fit, metrics, probs, str(state["precision"]),
                                notes=list(member["notes"])))
    return kept


def kept_history(state: dict) -> list[EpochRecord]:
    """The epochs of the finished members in a resume state, and of the member it continues, numbered by member
    (1..k + 1) as a run records them."""
    members = [member["history"] for member in state.get("members") or []]
    if state.get("current") is not None:
        members.append(state["current"]["history"])
    return [replace(EpochRecord.from_dict(h), fold=index + 1) for index, history in enumerate(members) for h in history]


def members_resumed_note(kept: int, total: int, word: str, continued: bool = False) -> str:
    """What a resumed ensemble did, in words ('bagged model', 3 members: 'Resumed after bagged model 1 of 3 …');
    ``continued``: the next member goes on after its last saved epoch (its own note says which)."""
    finished = "the finished model was kept" if kept == 1 else f"the {kept} finished models were kept"
    if kept >= total:
        return f"Resumed after its last {word} ({total} of {total}): {finished} and tested."
    if continued:
        kept_words = f"{finished} as {'it was' if kept == 1 else 'they were'}, and " if kept else ""
        return (f"Resumed in {word} {kept + 1} of {total}: {kept_words}{word} {kept + 1} continued from its resume "
                "checkpoint.")
    return (f"Resumed after {word} {kept} of {total}: {finished} as {'it was' if kept == 1 else 'they were'}, and "
            f"{word} {kept + 1} started from its first epoch.")
