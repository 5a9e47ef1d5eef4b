"""Callbacks that hang off the training loop.

Order matters within an epoch's end: :class:`BestCheckpoint` marks the record as
best (and keeps its weights) before :class:`EarlyStopping` and the recorders read it.
:func:`medcls.training.pipeline.standard_callbacks` puts them in that order.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from itertools import chain
from typing import Any, Callable, Sequence, TextIO

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..runs.records import EpochRecord, Progress
from .ddp import unwrap
from .engine import BatchEvent, Callback, FitResult, Trainer
from .hardware import CpuSample, choose_threads, cores_used_by_others, cpu_sample

__all__ = ["WeightAveraging", "BestCheckpoint", "improves", "EarlyStopping", "ProgressMeter", "HistoryRecorder",
           "Heartbeat", "ResumeCheckpoint", "ConsoleProgress", "ThreadBudget", "ema_decay_at",
           "ema_steps_to_reach"]

log = logging.getLogger(__name__)


EMA_WARMUP = 10.0  # the average's decay ramps up as (1 + n) / (EMA_WARMUP + n) after n updates


def ema_decay_at(decay: float, updates: float) -> float:
    """The decay the weight average uses after ``updates`` updates: the warm-up ramp, capped at ``decay``.
    The ramp averages over about the last ninth of the steps so far (a window of (10 + n) / 9 steps), as
    TensorFlow's ExponentialMovingAverage with ``num_updates``. Without the ramp, the average of a short run still
    holds much of the random initial weights; with it, a run shorter than :func:`ema_steps_to_reach` never reaches
    ``decay``."""
    return min(decay, (1.0 + updates) / (EMA_WARMUP + updates))


def ema_steps_to_reach(decay: float) -> int:
    """Updates after which the warm-up ramp reaches ``decay`` (0.99: 890)."""
    return max(0, math.ceil((EMA_WARMUP * decay - 1.0) / (1.0 - decay) - 1e-9))


class WeightAveraging(Callback):
    """An exponential moving average of the weights (and batch-norm statistics) after every step.

    It becomes the trainer's ``eval_model``: what is validated, selected and saved.
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.average: AveragedModel | None = None
        self._pairs: tuple | None = None  # (model, averaged floats, its floats, integer pairs), see update
        self._pending: dict[str, Any] | None = None  # a resumed fit's average, loaded once the average exists

    def on_fit_start(self, trainer: Trainer) -> None:
        trainer.eval_model = self.start(unwrap(trainer.model))

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        if event.phase == "train":
            self.update(unwrap(trainer.model))

    def start(self, model: nn.Module) -> nn.Module:
        """The average of ``model`` (a copy of it until the first update; a resumed fit's average once loaded)."""
        if self.average is None:
            self.average = AveragedModel(model, use_buffers=True)
        if self._pending is not None:
            self.average.load_state_dict(self._pending)
            self._pending = None
        return self.average.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights and batch-norm statistics by 1 - :func:`ema_decay_at`.

        ``AveragedModel.update_parameters``'s own arithmetic (the first update copies), on tensor lists gathered
        once: that method walks, detaches and groups the model's tensors again at every step, 0.9 ms of a 55 ms
        step of the default at 128 px, against 0.4 ms for one ``_foreach_lerp_``."""
        if self._pairs is None or self._pairs[0] is not model:
            pairs = [(a.detach(), c.detach()) for a, c in zip(chain(self.average.module.parameters(),
                                                                     self.average.module.buffers()),
                                                               chain(model.parameters(), model.buffers()))]
            floats = [p for p in pairs if torch.is_floating_point(p[0])]
            self._pairs = (model, [a for a, _ in floats], [c for _, c in floats],
                           [p for p in pairs if not torch.is_floating_point(p[0])])
        _, averaged, current, counters = self._pairs
        n = self.average.n_averaged
        if n == 0:  # the first update copies the weights, as AveragedModel does
            torch._foreach_copy_(averaged, current)
        else:
            torch._foreach_lerp_(averaged, current, 1.0 - ema_decay_at(self.decay, float(n)))
        for a, c in counters:  # integer buffers (batch-norm step counters) simply follow the model
            a.copy_(c)
        n += 1

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average.state_dict()} if self.average is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("average") is None:
            return
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        else:
            self._pending = state["average"]


# A tie goes to the later epoch only when its validation loss is lower by at least this much (in nats per
# image): once every validation image is right, the loss keeps creeping towards 0 (0.0002, 0.0001, ...), and
# counting that as progress would keep early stopping from ever ending a run on easy data.
TIE_LOSS_MARGIN = 1e-3


def improves(record: EpochRecord, result: FitResult) -> bool:
    """Whether ``record`` beats the best epoch so far: a higher validation score, or the same score with a
    validation loss lower by at least ``TIE_LOSS_MARGIN``. A small or easy validation set often gives many epochs
    the same score (every image right from the first epoch on); without the tie-break the first of them, the
    least trained, would be kept. Without validation images there is nothing to choose by: every epoch improves,
    so the last one is kept (and early stopping never stops)."""
    if not record.validated:
        return True
    if record.score != result.best_score:
        return record.score > result.best_score
    best = next((r for r in result.history if r.epoch == result.best_epoch), None)
    return best is not None and record.val_loss < best.val_loss - TIE_LOSS_MARGIN


class BestCheckpoint(Callback):
    """Keeps the weights of the epoch with the best validation score (on a tie, the lower validation loss), or with
    ``keep_last`` of the latest epoch; marks that epoch's record as best (the kept one).

    ``export`` turns the kept state into what is saved (e.g. backbone + head when only the head trained);
    ``on_best(state)`` is called with the exported state at every new best (the run store saves it).
    """

    def __init__(self, export: Callable[[dict], dict] | None = None,
                 on_best: Callable[[dict], None] | None = None, keep_last: bool = False):
        self.export = export or (lambda state: state)
        self.on_best = on_best
        self.keep_last = keep_last  # keep every epoch as it ends: the last one's weights are the checkpoint
        self.state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if self.keep_last or improves(record, trainer.result):
            trainer.result.best_score, trainer.result.best_epoch = record.score, record.epoch
            record.best = True
            self.state = copy.deepcopy(unwrap(trainer.eval_model).state_dict())
            if self.on_best is not None:
                self.on_best(self.exported())

    def exported(self) -> dict[str, torch.Tensor]:
        return self.export(self.state)

    def restore(self, trainer: Trainer) -> None:
        """Put the best weights back into the model (and into the average) after fitting or a stop."""
        if self.state is None:
            return
        unwrap(trainer.model).load_state_dict(self.state)
        if trainer.eval_model is not trainer.model:
            unwrap(trainer.eval_model).load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state.get("best")


class EarlyStopping(Callback):
    """Stop when the validation score has not improved for ``patience`` epochs (0 = never).

    Never before half of the planned epochs: learning-rate schedules (one-cycle, cosine) do much of their
    good late, while the rate comes down, and an early plateau is common on small validation sets.
    """

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if record.epoch < trainer.epochs / 2:
            return
        if self.patience and record.epoch - trainer.result.best_epoch >= self.patience:
            log.info("Early stop: no improvement for %d epochs (best epoch %d)", self.patience,
                     trainer.result.best_epoch)
            trainer.should_stop = True


class ProgressMeter(Callback):
    """Turns batch events into overall progress: fraction done, images/s and time remaining.

    ``emit(progress)`` is called at most every ``interval`` seconds, and always at the end of a phase, so
    listeners (the run store, a terminal) never drown in updates. Time remaining comes from the epochs
    measured so far once one has finished (the first epoch's share before that); it is the time to the
    last planned epoch, so early stopping can only make it shorter.
    """

    def __init__(self, emit: Callable[[Progress], None], interval: float = 0.5, part: tuple[int, int] = (0, 1)):
        self.emit = emit
        self.interval = interval
        self.part = part  # cross-validation: (this fold, number of folds); each fold is an equal share
        self._last = 0.0
        self._start = time.perf_counter()
        self._train_batches = 1
        self._val_batches = 1

    def on_fit_start(self, trainer: Trainer) -> None:
        self._start = time.perf_counter()
        self._epoch_start = self._start
        self._epoch = 0
        self._train_batches = trainer.batches_per_epoch()
        self._val_batches = max(1, -(-len(trainer.val_data) // trainer.batch_size))

    def snapshot(self, trainer: Trainer, event: BatchEvent) -> Progress:
        now = time.perf_counter()
        if event.epoch != self._epoch:
            self._epoch, self._epoch_start = event.epoch, now
        per_epoch = self._train_batches + self._val_batches
        done_in_epoch = event.batch if event.phase == "train" else self._train_batches + event.batch
        epoch_share = min(1.0, done_in_epoch / per_epoch)
        done_epochs = event.epoch - 1
        fraction = min(1.0, (done_epochs + epoch_share) / trainer.epochs)
        measured = [h.seconds for h in trainer.result.history[-5:]]
        if measured:  # whole epochs measured in this process: the best guide to the rest
            per = sorted(measured)[len(measured) // 2]
            eta = per * (trainer.epochs - event.epoch) + max(0.0, per - (now - self._epoch_start))
        else:
            elapsed_epoch = now - self._epoch_start
            eta = elapsed_epoch / epoch_share * (trainer.epochs - done_epochs - epoch_share) if epoch_share else None
        index, parts = self.part
        if parts > 1 and eta is not None:  # the folds still to come take about as long as this one
            eta += (parts - index - 1) * ((now - self._start) + eta)
        return Progress(phase=event.phase, epoch=event.epoch, epochs=event.epochs, batch=event.batch,
                        batches=event.batches, fraction=(index + fraction) / parts, prepare_fraction=1.0,
                        loss=event.loss, images_per_s=event.images_per_s if event.phase == "train" or
                        not trainer.result.history else trainer.result.history[-1].images_per_s,
                        elapsed_s=now - self._start, eta_s=eta, time=time.time(),
                        fold=index + 1 if parts > 1 else 0, folds=parts if parts > 1 else 0)

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        if event.phase not in ("train", "val"):
            return  # the final test of the kept checkpoint is not part of the epochs
        now = time.perf_counter()
        if now - self._last >= self.interval or event.batch == event.batches:
            self._last = now
            self.emit(self.snapshot(trainer, event))


class HistoryRecorder(Callback):
    """Hands every finished epoch to ``record`` (the run store appends it to history.jsonl)."""

    def __init__(self, record: Callable[[EpochRecord], None]):
        self.record = record

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self.record(record)


class Heartbeat(Callback):
    """Tells the run store that the training loop itself is alive, at most every ``interval`` seconds.

    A loop that stops beating (a hung or frozen process) is noticed and ended by the job manager. ``beat`` may
    raise to end the fit (e.g. when the run was handed to another process meanwhile); OSError is ignored.
    """

    def __init__(self, beat: Callable[[], None], interval: float = 2.0):
        self.beat = beat
        self.interval = interval
        self._last = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            try:
                self.beat()
            except OSError:
                pass  # the run folder was deleted; the run fails on its next write

    def on_fit_start(self, trainer: Trainer) -> None:
        self()

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        self()


class ResumeCheckpoint(Callback):
    """Saves the trainer's whole state after every epoch (``save(state)``), so a killed run can continue.

    It goes last among the callbacks: the epoch is then recorded everywhere else (history, best checkpoint)
    before its state is saved. Saving a large model's state (weights, optimizer moments, average, best weights)
    costs time; when one save takes over a second and more than ``budget`` of an epoch, saves are spaced out so
    that they stay within that share of training time (every epoch for the usual models).
    """

    def __init__(self, save: Callable[[dict], None], extra: Callable[[], dict] | None = None, budget: float = 0.1):
        self.save = save
        self.extra = extra or dict
        self.budget = budget
        self._cost = 0.0          # seconds the last save took
        self._since = 0.0         # training seconds since the last save

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self._since += record.seconds
        last = record.epoch >= trainer.epochs or trainer.should_stop
        if not last and self._cost > max(1.0, self.budget * self._since):
            return
        start = time.perf_counter()
        self.save({**trainer.state_dict(), **self.extra()})
        self._cost, self._since = time.perf_counter() - start, 0.0


class ThreadBudget(Callback):
    """Every second of training, sets torch's threads to the cores other processes left free meanwhile.

    Two threads on two cores when another process takes one of them make every step wait for the starved
    thread (5-8x slower on the machines measured); one thread does not (see :mod:`medcls.training.hardware`).
    Checking every second, not every epoch, keeps what a load that appears mid-epoch costs to a second or two.
    Threads are lowered only when the last two seconds were both busy (the run's first second, with none before
    it, counts alone): a browser watching the run redraws the page in bursts that fill one second and not the
    next, and dropping a thread for each burst made the default run on the built-in data slower, not faster
    (and every change of threads changes the run's arithmetic, so a seed repeats a run only when the threads did
    not change). Raised as soon as a second was quiet. Only for runs whose thread count was not fixed.
    """

    def __init__(self, cores: int | None = None, sample: Callable[[], CpuSample] = cpu_sample,
                 interval: float = 1.0):
        self.cores = cores
        self.sample = sample
        self.interval = interval
        self._last: CpuSample | None = None
        self._last_others = math.inf  # cores others used in the previous second (none measured yet: no limit)
        self.changes: list[tuple[int, int]] = []  # (epoch, threads) whenever the count changed

    def on_fit_start(self, trainer: Trainer) -> None:
        self._last = self.sample()

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        # Samples are taken on time.monotonic()'s clock: reading /proc/stat waits until one is due, not every batch.
        if self._last is None or time.monotonic() < self._last.wall + self.interval:
            return
        now = self.sample()
        if now.wall - self._last.wall < self.interval:
            return
        others = cores_used_by_others(self._last, now)
        self._last = now
        if others is None:
            return
        # The lower of the last two seconds: a load must last two seconds to take a thread away, one quiet
        # second gives it back.
        sustained, self._last_others = min(others, self._last_others), others
        threads = choose_threads(self.cores, sustained)
        if threads != torch.get_num_threads():
            log.info("Other processes used %.1f core(s) during epoch %d: training goes on with %d thread(s)",
                     sustained, event.epoch, threads)
            torch.set_num_threads(threads)
            self.changes.append((event.epoch, threads))


def _picks_best(trainer: Trainer, record: EpochRecord) -> bool:
    """Whether the kept checkpoint is chosen by validation in this fit (not every epoch in turn: the last epoch kept,
    or no validation images)."""
    keeps_last = any(isinstance(cb, BestCheckpoint) and cb.keep_last for cb in trainer.callbacks)
    return record.validated and not keeps_last


class ConsoleProgress(Callback):
    """Progress for the command line: a one-line bar on a terminal, one printed line per epoch always.

    When the output is not a terminal (a log file, CI), only the epoch lines are written, so logs stay short.
    ``notes()`` (the run's notes so far) is read as each fold and each fit starts, and the notes not written
    yet are written then: what the run chose or adjusted (cross-validation, a lowered batch, a limited epoch)
    shows before its first epoch, not only when the run ends. ``shown_notes`` keeps what was written.
    ``member`` names one model of an ensemble ('fold', 'bagged model').
    """

    def __init__(self, stream: TextIO | None = None, width: int = 28, live: bool | None = None,
                 notes: Callable[[], Sequence[str]] | None = None, member: str = "fold"):
        # Looked up now, not at import: sys.stderr may have been replaced since (capture, redirection).
        self.stream = stream if stream is not None else sys.stderr
        self.live = live if live is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.meter = ProgressMeter(self._draw, interval=0.2)
        self.notes = notes
        self.member = member
        self.shown_notes: list[str] = []

    def _write_new_notes(self) -> None:
        for note in self.notes() if self.notes is not None else ():
            if note not in self.shown_notes:
                self.shown_notes.append(note)
                self.stream.write(f"note: {note}\n")
        self.stream.flush()

    def on_fold_start(self, fold: int, folds: int) -> None:
        self._write_new_notes()  # why there are folds, before the first of them
        self.stream.write(f"{self.member} {fold + 1} of {folds}\n")

    def on_fit_start(self, trainer: Trainer) -> None:
        self._write_new_notes()
        self.meter.on_fit_start(trainer)

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        if self.live:
            self.meter.on_batch_end(trainer, event)

    def _draw(self, p: Progress) -> None:
        filled = int(p.fraction * self.width)
        eta = f"{p.eta_s:.0f}s left" if p.eta_s is not None else ""
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] epoch {p.epoch}/{p.epochs} {p.phase} {p.batch}/{p.batches} "
                          f"{p.images_per_s or 0:.0f} img/s {eta}   ")
        self.stream.flush()

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        recalls = " ".join(f"{k}={v:.2f}" for k, v in record.val_recall.items() if v is not None)
        start = "\r" if self.live else ""
        pad = " " * 8 if self.live else ""
        val = (f"val loss {record.val_loss:.4f}  acc {record.val_accuracy:.3f}  macro-F1 {record.val_macro_f1:.3f}  "
               f"recall {recalls}" if record.validated else "no validation images")
        self.stream.write(
            f"{start}epoch {record.epoch:>3}/{trainer.epochs}  loss {record.train_loss:.4f}  "
            f"acc {record.train_accuracy:.3f}  | {val}  | {record.images_per_s:.0f} img/s "
            f"{record.seconds:.1f}s{'  *best' if record.best and _picks_best(trainer, record) else ''}{pad}\n")
        self.stream.flush()

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        if result.stopped_early:
            self.stream.write(f"stopped early; best epoch {result.best_epoch}\n")
