"""The training loop. It knows nothing of files, the app or particular models.

``Trainer.fit`` runs epochs of mini-batches over tensors already in memory,
validates after each epoch, and tells its callbacks what happened
(``on_fit_start``, ``on_batch_end``, ``on_epoch_end``, ``on_fit_end``). Everything
else hangs off those events as callbacks (:mod:`medcls.training.callbacks`): weight
averaging, keeping the best checkpoint, early stopping, recording history,
progress and heartbeats. Cancellation is checked before every batch, in training
and in validation, and ends the fit with :class:`FitCancelled`; the best weights
seen so far stay with the checkpoint callback.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis.metrics import epoch_metrics, select_score
from ..inference.proba import predict_proba
from ..runs.records import EpochRecord
from .ddp import all_ranks_sum, from_rank0, shard_indices
from .imbalance import EpochSampler

__all__ = ["batches_per_epoch", "TensorData", "BatchEvent", "EpochRecord", "Callback", "Trainer", "FitCancelled",
           "NonFiniteLossError", "FitResult"]

log = logging.getLogger(__name__)


class FitCancelled(Exception):
    """Training was stopped on request."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training diverged."""


@dataclass
class TensorData:
    inputs: torch.Tensor  # uint8 images (N, C, H, W), or float features (N, V, F) for cached backbones
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class BatchEvent:
    phase: str            # 'train', 'val', or 'test' (the final evaluation of the kept checkpoint)
    epoch: int
    epochs: int
    batch: int            # 1-based within the phase
    batches: int
    loss: float
    images_per_s: float   # over this epoch's training phase so far


@dataclass
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    stopped_early: bool = False


class Callback:
    """Override the hooks you need; the trainer calls them in the order the callbacks were given."""

    def on_fold_start(self, fold: int, folds: int) -> None: ...  # cross-validation: before fold 0..folds-1
    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def on_batch_end(self, trainer: "Trainer", event: BatchEvent) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", record: EpochRecord) -> None: ...
    def on_fit_end(self, trainer: "Trainer", result: FitResult) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What the callback needs to resume a fit after a restart (empty when nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


Prepare = Callable[[torch.Tensor, bool], torch.Tensor]


def batches_per_epoch(n_items: int, batch_size: int, world: int = 1) -> int:
    """Training steps per epoch; a last batch under half the batch size is left out (as timm's drop_last).

    A step costs nearly as much for 2 images as for 32 (the optimizer updates every weight either way),
    and the sampler reshuffles every epoch, so the few images left out are seen in other epochs.
    """
    n = math.ceil(n_items / world)  # each rank's shard
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if rest and (2 * rest >= batch_size or full == 0) else 0))


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        train: TensorData,
        val: TensorData,
        *,
        classes: Sequence[str],
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        scheduler_interval: str,
        sampler: EpochSampler,
        batch_size: int,
        epochs: int,
        prepare: Prepare,
        select_metric: str = "macro_f1",
        focus_class: str = "",
        bf16: bool = False,
        tta: bool = False,
        callbacks: Sequence[Callback] = (),
        should_cancel: Callable[[], bool] | None = None,
        shard: tuple[int, int] = (0, 1),
        generator: torch.Generator | None = None,
    ):
        self.model = model
        self.eval_model: nn.Module = model   # what is validated and kept; weight averaging swaps in its average
        self.train_data, self.val_data = train, val
        self.classes = list(classes)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.sampler = sampler
        self.batch_size = batch_size
        self.epochs = epochs
        self.prepare = prepare
        self.select_metric = select_metric
        self.focus_class = focus_class
        self.bf16 = bf16
        self.tta = tta  # validate images and their mirror images, averaging the probabilities
        self.callbacks = list(callbacks)
        self.should_cancel = should_cancel or (lambda: False)
        self.rank, self.world = shard  # DDP: every rank draws the same epoch order and takes its slice
        self.should_stop = False       # set by callbacks such as EarlyStopping
        self.generator = generator     # the augmentation stream (saved with the state, so a resume draws the same)
        self.result = FitResult()

    # --- helpers ------------------------------------------------------------
    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _check_cancel(self) -> None:
        if self.should_cancel():
            raise FitCancelled()

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def batches_per_epoch(self) -> int:
        return batches_per_epoch(len(self.sampler), self.batch_size, self.world)

    # --- resuming ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this fit after its last finished epoch: weights, optimizer, schedule,
        sampler, random streams, the callbacks' state (weight average, best checkpoint) and the history.

        Only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``."""
        return {"epoch": len(self.result.history), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "sampler": self.sampler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "generator": self.generator.get_state() if self.generator is not None else None},
                "result": {"best_epoch": self.result.best_epoch, "best_score": self.result.best_score,
                           "stopped_early": self.result.stopped_early, "should_stop": self.should_stop},
                "history": [h.to_dict() for h in self.result.history],
                "callbacks": [cb.state_dict() for cb in self.callbacks]}

    def load_state_dict(self, state: dict[str, Any], history: Sequence[EpochRecord] | None = None) -> None:
        """Continue from ``state`` (see :meth:`state_dict`); the next fit() starts at the epoch after it."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        rng = state.get("rng") or {}
        if rng.get("torch") is not None:
            torch.set_rng_state(rng["torch"])
        if self.generator is not None and rng.get("generator") is not None:
            self.generator.set_state(rng["generator"])
        if history is None:
            history = [EpochRecord.from_dict(h) for h in state.get("history", [])]
        result = state["result"]
        self.result = FitResult(history=list(history)[:state["epoch"]], best_epoch=result["best_epoch"],
                                best_score=result["best_score"], stopped_early=bool(result.get("stopped_early")))
        self.should_stop = bool(result.get("should_stop"))
        for cb, cb_state in zip(self.callbacks, state.get("callbacks", [])):
            cb.load_state_dict(cb_state)

    # --- the loop -----------------------------------------------------------
    def fit(self) -> FitResult:
        self._emit("on_fit_start")
        for epoch in range(len(self.result.history) + 1, self.epochs + 1):
            if self.should_stop:  # resumed after early stopping had already decided
                break
            record = self._run_epoch(epoch)
            self.result.history.append(record)
            self._emit("on_epoch_end", record)
            if self.should_stop:
                self.result.stopped_early = epoch < self.epochs
                break
        self._emit("on_fit_end", self.result)
        return self.result

    def _run_epoch(self, epoch: int) -> EpochRecord:
        start = time.perf_counter()
        order = shard_indices(self.sampler.indices(epoch), self.rank, self.world)
        order = torch.from_numpy(np.ascontiguousarray(order))
        n_batches = self.batches_per_epoch()
        self.model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(n_batches):
            self._check_cancel()
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if len(idx) == 0:
                break
            if len(idx) == 1 and len(order) > 1:
                continue  # a batch of one breaks batch norm; its image is seen next epoch
            x = self.prepare(self.train_data.inputs[idx], True)
            y = self.train_data.labels[idx]
            with self.autocast():
                logits = self.model(x)
                loss = self.loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"The training loss became {loss.item()} in epoch {epoch}, batch {b + 1}: training diverged. "
                    f"Lower the learning rate (now {self.optimizer.param_groups[0]['lr']:.3g}) or use batch norm.")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None and self.scheduler_interval == "batch":
                self.scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            elapsed = time.perf_counter() - start
            self._emit("on_batch_end", BatchEvent("train", epoch, self.epochs, b + 1, n_batches, loss.item(),
                                                  seen * self.world / max(elapsed, 1e-9)))
        train_seconds = time.perf_counter() - start
        loss_sum, correct, seen = all_ranks_sum([loss_sum, correct, seen])  # over all DDP ranks' shards
        lr = self.optimizer.param_groups[0]["lr"]
        validated = len(self.val_data) > 0
        if validated:
            val_loss, val_probs = from_rank0(*self.evaluate(self.val_data, epoch=epoch))
            m = epoch_metrics(self.val_data.labels.numpy(), val_probs.argmax(1), self.classes)
        else:  # nothing to validate on: the record says so, and keeping the checkpoint takes the latest
            val_loss, m = math.nan, {"accuracy": 0.0, "macro_f1": 0.0, "balanced_accuracy": 0.0, "recall": {}}
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        return EpochRecord(
            epoch=epoch, train_loss=loss_sum / max(seen, 1), train_accuracy=correct / max(seen, 1),
            val_loss=val_loss, val_accuracy=m["accuracy"], val_macro_f1=m["macro_f1"],
            val_balanced_accuracy=m["balanced_accuracy"], val_recall=m["recall"], lr=lr,
            seconds=time.perf_counter() - start, images_per_s=seen / max(train_seconds, 1e-9),
            score=select_score(m, self.select_metric, self.focus_class) if validated else 0.0, validated=validated)

    def evaluate(self, data: TensorData, epoch: int = 0) -> tuple[float, np.ndarray]:
        """Mean loss and class probabilities (N, K) of ``eval_model`` on a split, without augmentation."""

        def on_batch(done: int, total: int) -> None:
            # Validation inside fit reports progress; the final evaluation reports as phase 'test' (it keeps the
            # heartbeat going, and progress meters ignore it).
            phase = "val" if epoch else "test"
            self._emit("on_batch_end", BatchEvent(phase, epoch, self.epochs, done, total, 0.0, 0.0))
            if done < total:
                self._check_cancel()

        self._check_cancel()
        probs = predict_proba(self.eval_model, data.inputs, tta=self.tta, batch_size=self.batch_size,
                              prepare=lambda x: self.prepare(x, False), autocast=self.autocast, on_batch=on_batch)
        if not len(probs):
            return 0.0, np.zeros((0, len(self.classes)), dtype=np.float32)
        truth = data.labels.numpy()
        loss = float(-np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, None)).mean())
        return loss, probs
