"""medcls's side of the benchmark: throughput, the compute bound, feature caching, latency, memory."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..analysis.metrics import SplitMetrics, classification_metrics
from ..config import TrainConfig
from ..data import DatasetSpec, decode_dataset
from ..data.cache import clear_memory_cache
from ..inference.predictor import Predictor
from ..training.engine import Callback, EpochRecord, Trainer
from ..training.hardware import train_step_seconds
from ..training.optim import build_optimizer
from ..training.pipeline import PreparedData, build_model, train_in_memory

__all__ = ["machine_gflops", "training_throughput", "compute_bound", "throughput_against_bound", "head_only_cached",
           "prediction_latency", "cache_memory"]


def training_throughput(cfg: TrainConfig, data: PreparedData | None = None,
                        callbacks: Sequence[Callback] = ()) -> dict:
    """Training images/s of the best whole epoch (batch preparation and augmentation included), as medcls
    trains; every epoch's figure is kept too."""
    start = time.perf_counter()
    result = train_in_memory(cfg, data, callbacks=callbacks)
    history = result.fit.history
    return {"images_per_s": max(h.images_per_s for h in history),
            "epoch_images_per_s": [round(h.images_per_s, 2) for h in history],
            "epoch_s": [round(h.seconds, 2) for h in history], "precision": result.precision,
            "wall_s": time.perf_counter() - start, "epochs": len(history)}


def compute_bound(cfg: TrainConfig, channels: int, num_classes: int, precision: str, steps: int = 6,
                  model: torch.nn.Module | None = None) -> dict:
    """The same model's training step on a batch already in memory: nothing but the maths (``model``: one
    built for this config already, whose weights the timing leaves as they were)."""
    model = model or build_model(cfg, num_classes, channels, weights="random")
    x = torch.rand(cfg.batch_size, channels, cfg.image_size, cfg.image_size)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(cfg.batch_size) % num_classes
    # The same optimizer as training, unlike the quick SGD probe used for picking bf16; the fastest step,
    # as training counts its fastest epoch (a shared CPU's noise only slows steps down). The median step says
    # how far the machine's own noise keeps even these identical steps from the fastest.
    times = train_step_seconds(model, x, y, bf16=precision == "bf16", steps=steps, warmup=1,
                               optimizer=build_optimizer(cfg, model.parameters()))
    seconds = min(times)
    return {"images_per_s": cfg.batch_size / seconds, "step_s": seconds, "median_step_s": statistics.median(times),
            "precision": precision}


class _BoundBetweenEpochs(Callback):
    """Times the compute bound before the first epoch and after every epoch (outside the epochs' own timing),
    so that each epoch is compared with the machine's speed at its own time: a shared virtual CPU changes
    speed by a third within an hour, and a bound timed once can fall in a fast or a slow spell."""

    def __init__(self, cfg: TrainConfig, channels: int, num_classes: int, steps: int):
        self.cfg, self.channels, self.num_classes, self.steps = cfg, channels, num_classes, steps
        self.model: torch.nn.Module | None = None
        self.bounds: list[dict] = []

    def _time(self, trainer: Trainer) -> None:
        with torch.random.fork_rng(devices=[]):  # the training run draws the same random numbers as without the timer
            if self.model is None:
                self.model = build_model(self.cfg, self.num_classes, self.channels, weights="random")
            self.bounds.append(compute_bound(self.cfg, self.channels, self.num_classes,
                                             "bf16" if trainer.bf16 else "fp32", self.steps, model=self.model))

    def on_fit_start(self, trainer: Trainer) -> None:
        self._time(trainer)

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self._time(trainer)


def throughput_against_bound(cfg: TrainConfig, data: PreparedData, steps: int = 6) -> tuple[dict, dict]:
    """:func:`training_throughput`, and the compute bound timed before the first epoch and after each one.

    Each epoch's share of the bound is its images/s over the mean of the bounds timed either side of it; the
    share reported is the median over epochs (an epoch slowed by noise lowers its share, a bound slowed by
    noise raises it, so neither the best nor the worst epoch is the fair figure)."""
    timer = _BoundBetweenEpochs(cfg, data.decoded.channels, len(data.classes), steps)
    ours = training_throughput(cfg, data, callbacks=[timer])
    around = [b["images_per_s"] for b in timer.bounds]
    shares = [epoch / ((before + after) / 2)
              for epoch, before, after in zip(ours["epoch_images_per_s"], around, around[1:])]
    bound = {"images_per_s": statistics.median(around), "step_s": statistics.median(b["step_s"] for b in timer.bounds),
             "precision": ours["precision"], "around_epochs": [round(b, 2) for b in around],
             "epoch_shares": [round(s, 3) for s in shares], "share": statistics.median(shares),
             # the bound's own median step against its fastest: what noise alone leaves of the bound
             "steady_share": statistics.median(b["step_s"] / b["median_step_s"] for b in timer.bounds)}
    return ours, bound


def head_only_cached(cfg: TrainConfig, data: PreparedData) -> dict:
    """ResNet-18 head-only with feature caching: one-time extraction, then per-epoch head training."""
    marks: list[float] = []
    start = time.perf_counter()
    result = train_in_memory(cfg, data, stage=lambda message, fraction: marks.append(time.perf_counter()))
    history = result.fit.history
    return {"epoch_s": [round(h.seconds, 4) for h in history],
            "median_epoch_s": statistics.median(h.seconds for h in history),
            "extract_s": (marks[-1] - start) if marks else 0.0,  # model build + features of every split
            "wall_s": time.perf_counter() - start, "test": result.metrics["test"].to_dict()}


def prediction_latency(predictor: Predictor, files: list[Path], calls: int = 25) -> dict:
    """Median milliseconds from file bytes to probabilities (decode, resize, forward, softmax)."""
    payloads = [f.read_bytes() for f in files]
    predictor.predict(payloads[0])  # warm-up: first call allocates
    times = []
    for i in range(calls):
        data = payloads[i % len(payloads)]
        t = time.perf_counter()
        predictor.predict(data)
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "calls": calls}


def cache_memory(spec: DatasetSpec, size: int) -> dict:
    """Bytes of the decoded uint8 cache and the peak traced allocation while building it."""
    clear_memory_cache()
    tracemalloc.start()
    decoded = decode_dataset(spec, size, "auto", disk_cache=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    clear_memory_cache()
    return {"size": size, "images": len(decoded.spec.items), "channels": decoded.channels,
            "cache_mb": decoded.nbytes() / 2**20, "peak_mb": peak / 2**20}


def machine_gflops(n: int = 2048, repeats: int = 10) -> float:
    """fp32 matrix-multiply speed of this machine right now: a yardstick for drift between and within runs
    (a shared virtual CPU can change speed by a third within an hour)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def seed_way_metrics(run: dict) -> SplitMetrics:
    return classification_metrics(run["y_true"], run["probs"], run["classes"])

