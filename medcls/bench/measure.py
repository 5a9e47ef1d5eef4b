"""medcls's side of the benchmark: throughput, the compute bound, feature caching, latency, memory."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from ..analysis.metrics import SplitMetrics, classification_metrics
from ..config import TrainConfig
from ..data import DatasetSpec, decode_dataset
from ..data.cache import clear_memory_cache
from ..inference.predictor import Predictor
from ..training.hardware import time_train_steps
from ..training.optim import build_optimizer
from ..training.pipeline import PreparedData, build_model, train_in_memory

__all__ = ["machine_gflops", "training_throughput", "compute_bound", "head_only_cached", "prediction_latency",
           "cache_memory"]


def training_throughput(cfg: TrainConfig, data: PreparedData | None = None) -> dict:
    """Training images/s of the best whole epoch (batch preparation and augmentation included), as medcls
    trains; every epoch's figure is kept too."""
    start = time.perf_counter()
    result = train_in_memory(cfg, data)
    history = result.fit.history
    return {"images_per_s": max(h.images_per_s for h in history),
            "epoch_images_per_s": [round(h.images_per_s, 2) for h in history],
            "epoch_s": [round(h.seconds, 2) for h in history], "precision": result.precision,
            "wall_s": time.perf_counter() - start, "epochs": len(history)}


def compute_bound(cfg: TrainConfig, channels: int, num_classes: int, precision: str, steps: int = 6) -> dict:
    """The same model's training step on a batch already in memory: nothing but the maths."""
    model = build_model(cfg, num_classes, channels, weights="random")
    x = torch.rand(cfg.batch_size, channels, cfg.image_size, cfg.image_size)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(cfg.batch_size) % num_classes
    # The same optimizer as training, unlike the quick SGD probe used for picking bf16; the fastest step,
    # as training counts its fastest epoch (a shared CPU's noise only slows steps down).
    seconds = time_train_steps(model, x, y, bf16=precision == "bf16", steps=steps, warmup=1,
                               optimizer=build_optimizer(cfg, model.parameters()), fastest=True)
    return {"images_per_s": cfg.batch_size / seconds, "step_s": seconds, "precision": precision}


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

