"""The training loop. It knows nothing of files, the app or particular models.

``Trainer.fit`` runs epochs of mini-batches over tensors already in memory,
evaluates on the validation split after each epoch, and tells its callbacks
what happened (``on_fit_start``, ``on_batch_end``, ``on_epoch_end``,
``on_fit_end``). Recording history, early stopping, checkpointing and progress
display are all callbacks (see :mod:`medcls.callbacks`). Cancellation is
checked before every batch, in training and in evaluation, and ends the fit
with :class:`FitCancelled`; the best weights seen so far stay available.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .imbalance import EpochSampler
from .metrics import epoch_metrics, select_score

__all__ = ["batches_per_epoch", "TensorData", "BatchEvent", "EpochRecord", "Callback", "Trainer", "FitCancelled",
           "NonFiniteLossError", "FitResult", "shard_indices", "unwrap"]

log = logging.getLogger(__name__)


class FitCancelled(Exception):
    """Training was stopped on request."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training diverged."""


@dataclass
class TensorData:
    inputs: torch.Tensor  # uint8 images (N, C, H, W), or float features (N, F) for cached backbones
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class BatchEvent:
    phase: str            # 'train' or 'val'
    epoch: int
    epochs: int
    batch: int            # 1-based within the phase
    batches: int
    loss: float
    images_per_s: float   # over this epoch's training phase so far


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    val_balanced_accuracy: float
    val_recall: dict[str, float | None]
    lr: float
    seconds: float
    images_per_s: float
    score: float          # the select_metric value on validation
    best: bool            # the best score so far (this epoch's weights are the checkpoint)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    stopped_early: bool = False


class Callback:
    """Override the hooks you need; the trainer calls them in order."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def on_batch_end(self, trainer: "Trainer", event: BatchEvent) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", record: EpochRecord) -> None: ...
    def on_fit_end(self, trainer: "Trainer", result: FitResult) -> None: ...


Prepare = Callable[[torch.Tensor, bool], torch.Tensor]


def unwrap(model: nn.Module) -> nn.Module:
    """The trained module itself, without a DistributedDataParallel wrapper (no 'module.' key prefix)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard_indices(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """One rank's share of an epoch's global order: every ``world``-th index, starting at ``rank``.

    The order is first padded by repeating its start (as torch's DistributedSampler does), so every rank
    gets the same number of images and runs the same number of batches: DDP's gradient all-reduce must
    never wait for a rank that has run out of data.
    """
    if world > 1 and len(indices) % world:
        indices = np.concatenate([indices, np.resize(indices, world - len(indices) % world)])
    return indices[rank::world]


def _all_ranks_sum(values: list[float]) -> list[float]:
    """Sum numbers over the DDP ranks (unchanged outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def _from_rank0(loss: float, probs: np.ndarray) -> tuple[float, np.ndarray]:
    """Rank 0's validation result on every rank, so early stopping and the best epoch agree everywhere."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return loss, probs
    packed = torch.cat([torch.tensor([loss], dtype=torch.float64), torch.from_numpy(probs).double().flatten()])
    dist.broadcast(packed, src=0)
    return float(packed[0]), packed[1:].reshape(probs.shape).to(torch.float32).numpy()


def ema_with_warmup(decay: float) -> Callable[[list, list, torch.Tensor], None]:
    """An EMA update for AveragedModel whose decay ramps up as (1 + n) / (10 + n) to ``decay`` (as in timm).

    Without the ramp, the average of a short run still holds much of the random initial weights.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (batch-norm step counters) simply follow the model
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


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
        callbacks: Sequence[Callback] = (),
        should_cancel: Callable[[], bool] | None = None,
        shard: tuple[int, int] = (0, 1),
        ema_decay: float = 0.0,
        tta: bool = False,
        export: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ):
        self.model = model
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
        self.callbacks = list(callbacks)
        self.should_cancel = should_cancel or (lambda: False)
        self.rank, self.world = shard  # DDP: every rank draws the same epoch order and takes its slice
        self.should_stop = False       # set by callbacks such as EarlyStopping
        self.best_state: dict[str, torch.Tensor] | None = None
        self.result = FitResult()
        # An exponential moving average of the weights (and batch-norm statistics) after every step;
        # when on, it is what gets evaluated, selected and saved.
        self.ema = AveragedModel(unwrap(model), multi_avg_fn=ema_with_warmup(ema_decay),
                                 use_buffers=True) if ema_decay > 0 else None

        self.tta = tta  # evaluate images and their mirror images, averaging the probabilities
        self.export = export  # turns the trained module's state into what is saved (e.g. backbone + head)

    def restore_best(self) -> None:
        """Put the best weights back into the model (and the average) after fitting or a stop."""
        if self.best_state is None:
            return
        unwrap(self.model).load_state_dict(self.best_state)
        if self.ema is not None:
            self.ema.module.load_state_dict(self.best_state)

    def exported_best_state(self) -> dict[str, torch.Tensor]:
        """The best weights in the form they are saved."""
        return self.export(self.best_state) if self.export else self.best_state

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and kept: the moving average when on, else the model itself."""
        return self.ema.module if self.ema is not None else self.model

    # --- helpers ------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _check_cancel(self) -> None:
        if self.should_cancel():
            raise FitCancelled()

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def batches_per_epoch(self) -> int:
        return batches_per_epoch(len(self.sampler), self.batch_size, self.world)

    # --- the loop -----------------------------------------------------------
    def fit(self) -> FitResult:
        self._emit("on_fit_start")
        for epoch in range(1, self.epochs + 1):
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
            with self._autocast():
                logits = self.model(x)
                loss = self.loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"The training loss became {loss.item()} in epoch {epoch}, batch {b + 1}: training diverged. "
                    f"Lower the learning rate (now {self.optimizer.param_groups[0]['lr']:.3g}) or use batch norm.")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(unwrap(self.model))
            if self.scheduler is not None and self.scheduler_interval == "batch":
                self.scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            elapsed = time.perf_counter() - start
            self._emit("on_batch_end", BatchEvent("train", epoch, self.epochs, b + 1, n_batches, loss.item(),
                                                  seen * self.world / max(elapsed, 1e-9)))
        train_seconds = time.perf_counter() - start
        if self.world > 1:  # the epoch's training figures over all ranks' shards
            loss_sum, correct, seen = _all_ranks_sum([loss_sum, correct, seen])
        lr = self.optimizer.param_groups[0]["lr"]
        val_loss, val_probs = self.evaluate(self.val_data, epoch=epoch)
        if self.world > 1:
            val_loss, val_probs = _from_rank0(val_loss, val_probs)
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        val_true = self.val_data.labels.numpy()
        m = epoch_metrics(val_true, val_probs.argmax(1), self.classes) if len(val_true) else \
            {"accuracy": 0.0, "macro_f1": 0.0, "balanced_accuracy": 0.0, "recall": {}}
        score = select_score(m, self.select_metric, self.focus_class)
        best = score > self.result.best_score
        if best:
            self.result.best_score, self.result.best_epoch = score, epoch
            self.best_state = copy.deepcopy(unwrap(self.eval_model).state_dict())
        return EpochRecord(
            epoch=epoch, train_loss=loss_sum / max(seen, 1), train_accuracy=correct / max(seen, 1),
            val_loss=val_loss, val_accuracy=m["accuracy"], val_macro_f1=m["macro_f1"],
            val_balanced_accuracy=m["balanced_accuracy"], val_recall=m["recall"], lr=lr,
            seconds=time.perf_counter() - start, images_per_s=seen / max(train_seconds, 1e-9),
            score=score, best=best)

    @torch.inference_mode()
    def evaluate(self, data: TensorData, epoch: int = 0) -> tuple[float, np.ndarray]:
        """Mean loss and class probabilities (N, K) on a split, in eval mode, without augmentation."""
        model = self.eval_model
        model.eval()
        probs, loss_sum = [], 0.0
        n = len(data)
        batches = max(1, math.ceil(n / self.batch_size))
        for b in range(batches):
            self._check_cancel()
            x = self.prepare(data.inputs[b * self.batch_size:(b + 1) * self.batch_size], False)
            if len(x) == 0:
                break
            y = data.labels[b * self.batch_size:(b + 1) * self.batch_size]
            with self._autocast():
                if x.dim() == 3:  # cached features (B, views, F): average over the views
                    batch_probs = torch.stack([torch.softmax(model(x[:, v]).float(), 1)
                                               for v in range(x.shape[1])]).mean(0)
                else:
                    batch_probs = torch.softmax(model(x).float(), 1)
                    if self.tta:  # test-time augmentation: add the left-right mirror
                        batch_probs = (batch_probs + torch.softmax(model(x.flip(-1)).float(), 1)) / 2
            loss_sum += nn.functional.nll_loss(batch_probs.clamp_min(1e-12).log(), y, reduction="sum").item()
            probs.append(batch_probs)
            if epoch:  # validation inside fit reports progress; final test evaluation does not
                self._emit("on_batch_end", BatchEvent("val", epoch, self.epochs, b + 1, batches, 0.0, 0.0))
        if not probs:
            return 0.0, np.zeros((0, len(self.classes)), dtype=np.float32)
        return loss_sum / max(n, 1), torch.cat(probs).numpy()
