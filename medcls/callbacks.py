"""Callbacks that hang off the training loop: early stopping, the run recorder, progress printing."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, TextIO

from .engine import BatchEvent, Callback, EpochRecord, FitResult, Trainer
from .runs import RunStore

__all__ = ["EarlyStopping", "RunRecorder", "ProgressMeter", "ConsoleProgress"]

log = logging.getLogger(__name__)


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

    ``emit(progress_dict)`` is called at most every ``interval`` seconds, and always at
    epoch ends, so listeners (the run store, a terminal) never drown in updates.
    """

    def __init__(self, emit: Callable[[dict], None], interval: float = 0.5):
        self.emit = emit
        self.interval = interval
        self._last = 0.0
        self._start = time.perf_counter()
        self._val_batches = 1

    def on_fit_start(self, trainer: Trainer) -> None:
        self._start = time.perf_counter()
        self._train_batches = trainer.batches_per_epoch()
        self._val_batches = max(1, -(-len(trainer.val_data) // trainer.batch_size))

    def _snapshot(self, trainer: Trainer, event: BatchEvent) -> dict:
        per_epoch = self._train_batches + self._val_batches
        done_in_epoch = event.batch if event.phase == "train" else self._train_batches + event.batch
        done = (event.epoch - 1) * per_epoch + done_in_epoch
        total = trainer.epochs * per_epoch
        elapsed = time.perf_counter() - self._start
        return {
            "phase": event.phase, "epoch": event.epoch, "epochs": event.epochs, "batch": event.batch,
            "batches": event.batches, "fraction": min(1.0, done / total), "loss": event.loss,
            "images_per_s": event.images_per_s, "elapsed_s": elapsed,
            "eta_s": elapsed / done * (total - done) if done else None, "time": time.time(),
        }

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        now = time.perf_counter()
        last_of_phase = event.batch == event.batches
        if now - self._last >= self.interval or last_of_phase:
            self._last = now
            snap = self._snapshot(trainer, event)
            if event.phase == "val" and trainer.result.history:
                snap["images_per_s"] = trainer.result.history[-1].images_per_s
            self.emit(snap)


class RunRecorder(Callback):
    """Writes each epoch to the run store, saves the best weights, and mirrors progress there."""

    def __init__(self, store: RunStore, run_id: str):
        self.store = store
        self.run_id = run_id

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if record.best:
            self.store.save_weights(self.run_id, trainer.exported_best_state())
        self.store.append_history(self.run_id, record.to_dict())


class ConsoleProgress(Callback):
    """A one-line progress bar and one printed line per epoch, for the command line."""

    def __init__(self, stream: TextIO | None = None, width: int = 28):
        # Looked up now, not at import: sys.stderr may have been replaced since (capture, redirection).
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.meter = ProgressMeter(self._draw, interval=0.2)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.meter.on_fit_start(trainer)

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        self.meter.on_batch_end(trainer, event)

    def _draw(self, p: dict) -> None:
        filled = int(p["fraction"] * self.width)
        eta = f"{p['eta_s']:.0f}s left" if p.get("eta_s") is not None else ""
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] epoch {p['epoch']}/{p['epochs']} {p['phase']} {p['batch']}/{p['batches']} "
                          f"{p['images_per_s']:.0f} img/s {eta}   ")
        self.stream.flush()

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        recalls = " ".join(f"{k}={v:.2f}" for k, v in record.val_recall.items() if v is not None)
        self.stream.write(
            f"\repoch {record.epoch:>3}/{trainer.epochs}  loss {record.train_loss:.4f}  acc {record.train_accuracy:.3f}"
            f"  | val loss {record.val_loss:.4f}  acc {record.val_accuracy:.3f}  macro-F1 {record.val_macro_f1:.3f}"
            f"  recall {recalls}  | {record.images_per_s:.0f} img/s {record.seconds:.1f}s"
            f"{'  *best' if record.best else ''}" + " " * 8 + "\n")
        self.stream.flush()

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        if result.stopped_early:
            self.stream.write(f"stopped early; best epoch {result.best_epoch}\n")
