"""The timing probe: ``python -m medcls.training.probe`` reads a config (JSON) on stdin, prints costs (JSON).

It runs as a training worker would (lowered priority, the worker's thread choice and environment; see
:mod:`medcls.training.estimate`) and never writes a run. The first line it prints is for
:func:`~medcls.training.estimate.measure_costs` only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from ..analysis.uncertainty import metric_intervals
from ..config import TrainConfig
from ..data import DecodedDataset, DecodedSplit, load_dataset
from ..data.cache import cached_channels, decode_dataset
from ..data.spec import DatasetSpec, Item
from ..inference.novelty import embed_images
from ..settings import worker_threads
from .engine import BatchEvent, Callback, EpochRecord, Trainer
from .estimate import DECODE_SAMPLE, PROBE_STEPS, Costs
from .hardware import choose_threads, configure_threads, cores_used_by_others, cpu_sample, sustained_others
from .pipeline import PreparedData, _effective_batch, caches_features, train_in_memory
from .warmup import warm_up

__all__ = ["probe_costs", "decode_costs", "typical_step", "ANSWERED_ERRORS", "error_answer", "main"]

# What the probe answers with a message (a config or dataset it cannot time) rather than a traceback.
ANSWERED_ERRORS = (ValueError, RuntimeError, OSError, MemoryError)


class _Clock(Callback):
    """Each training step's seconds and when each epoch ended."""

    def __init__(self) -> None:
        self.fit_start = 0.0
        self.step_s: dict[int, list[float]] = {}  # per epoch; the first step counts from the last epoch's end
        self.epoch_end: dict[int, float] = {}
        self._mark = 0.0  # the end of the last step or epoch

    def on_fit_start(self, trainer: Trainer) -> None:
        self.fit_start = self._mark = time.perf_counter()

    def on_batch_end(self, trainer: Trainer, event: BatchEvent) -> None:
        if event.phase == "train":
            now = time.perf_counter()
            self.step_s.setdefault(event.epoch, []).append(now - self._mark)
            self._mark = now

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self.epoch_end[record.epoch] = self._mark = time.perf_counter()


def _split(images: torch.Tensor, labels: torch.Tensor, name: str) -> DecodedSplit:
    return DecodedSplit(images, labels, [f"probe/{name}/{i}" for i in range(len(labels))])


def _random_data(classes: list[str], channels: int, size: int, counts: dict[str, int]) -> PreparedData:
    generator = torch.Generator().manual_seed(0)
    splits, items = {}, []
    for name, n in counts.items():
        labels = torch.arange(n) % len(classes)
        images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
        splits[name] = _split(images, labels, name)
        items += [Item(path, int(label), name) for path, label in zip(splits[name].paths, labels)]
    spec = DatasetSpec("probe", "probe", list(classes), items)
    stacked = np.concatenate([splits[name].images.numpy() for name in counts])
    decoded = DecodedDataset(spec, stacked, size, "gray" if channels == 1 else "rgb")
    return PreparedData(decoded, splits["train"], splits["val"], splits["test"], list(classes), classes[-1])


def _per_image(seconds: float, images: int) -> float:
    return seconds / max(1, images)


def decode_costs(cfg: TrainConfig) -> tuple[DatasetSpec, float, float, int]:
    """The listing's time (with one-time decoding costs), one image's decoding time (0 when cached), the channels.

    Two samples are decoded: the first pays what decoding pays once (opening an .npz, Pillow's plugins), the
    second times an image.
    """
    start = time.perf_counter()
    spec = load_dataset(cfg.data)
    channels = cached_channels(spec, cfg.image_size, cfg.data.color)
    data_s = time.perf_counter() - start
    if channels is not None:
        return spec, data_s, 0.0, channels
    picked = random.Random(0).sample(spec.items, min(2 * DECODE_SAMPLE, len(spec.items)))
    halves = [picked[:len(picked) // 2] or picked, picked[len(picked) // 2:] or picked]
    seconds = []
    for half in halves:
        start = time.perf_counter()
        decoded = decode_dataset(DatasetSpec(spec.root, spec.layout, list(spec.classes), half), cfg.image_size,
                                 cfg.data.color, disk_cache=False)
        seconds.append(time.perf_counter() - start)
    per_image = _per_image(seconds[1], len(halves[1]))
    once = max(0.0, seconds[0] - per_image * len(halves[0]))
    return spec, data_s + once, per_image, decoded.channels


def typical_step(seconds: list[float]) -> float:
    """The median of a probe epoch's step times: another program waking up for a moment slows a step or two of
    the probe, not the run that follows, so it should not set the cost of every step."""
    return statistics.median(seconds)


def _timed(fn, repeats: int = 2) -> float:
    """Seconds of the fastest of ``repeats`` calls after the first (which pays for allocations); of the one
    call when ``repeats`` is 1. A call of a few milliseconds is easily slowed many times over by another
    thread's burst, and a shared CPU's noise only ever slows calls down."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:] or seconds)


def probe_costs(cfg: TrainConfig) -> Costs:
    """Measure everything a run of ``cfg`` costs here, in this process (see medcls.training.estimate)."""
    timing_start = cpu_sample()
    spec, data_s, decode_image_s, channels = decode_costs(cfg)
    train_real = sum(1 for it in spec.items if it.split == "train")
    batch = _effective_batch(cfg, max(1, train_real), [])
    cfg = replace(cfg, batch_size=batch)
    val = max(batch, len(spec.classes))
    data = _random_data(spec.classes, channels, cfg.image_size,
                        {"train": batch * PROBE_STEPS, "val": val, "test": len(spec.classes)})
    clock = _Clock()
    result = train_in_memory(cfg, data, callbacks=[clock])
    train_2 = sum(clock.step_s[2])  # the second epoch's training phase
    epoch_1, epoch_2 = clock.epoch_end[1] - clock.fit_start, clock.epoch_end[2] - clock.epoch_end[1]
    model = result.model
    images = data.train.images[:batch]
    feature_image_s = 0.0
    if caches_features(cfg, model):
        def features() -> None:
            with torch.inference_mode():
                model.eval().forward_features(model.normalize(images.float() / 255))
        feature_image_s = _per_image(_timed(features), len(images))
    # Timed before the intervals below: right after their bootstrap, a few milliseconds of embedding ran up to 25 times
    # slower now and then (seen on a 2-core Intel Xeon), and this figure is multiplied by every training image.
    embed_image_s = _per_image(_timed(lambda: embed_images(model, images), repeats=4), len(images))
    probs = np.random.default_rng(0).dirichlet(np.ones(len(spec.classes)), size=1)
    counts = spec.counts()
    intervals_s = 0.0
    for split in ("val", "test"):
        n = sum(counts[split].values())
        if n:
            truth = np.arange(n) % len(spec.classes)
            intervals_s += _timed(lambda: metric_intervals(truth, np.repeat(probs, n, axis=0), spec.classes),
                                  repeats=1)
    return Costs(threads=torch.get_num_threads(), precision=result.precision,
                 step_s=typical_step(clock.step_s[2]), eval_image_s=_per_image(epoch_2 - train_2, val),
                 first_epoch_extra_s=max(0.0, epoch_1 - epoch_2), feature_image_s=feature_image_s,
                 embed_image_s=embed_image_s,
                 start_s=0.0, data_s=data_s, decode_image_s=decode_image_s, bootstrap_s=intervals_s,
                 channels=channels, others_cores=cores_used_by_others(timing_start, cpu_sample()) or 0.0)


def error_answer(exc: BaseException) -> str:
    """The message the probe answers for one of :data:`ANSWERED_ERRORS`."""
    return str(exc) or f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medcls.training.probe", description=__doc__)
    parser.add_argument("--nice", type=int, default=10, help="Lower the priority by this much, as workers do.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as a worker would choose).")
    args = parser.parse_args(argv)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:
            pass
    before = cpu_sample()
    warm_up()  # a fresh worker's one-time costs belong to its start, not to every fold model's first epoch
    # The cores other processes leave free, read over the warm-up (own CPU time does not count) and, when
    # that was busy, a second more: a run training meanwhile keeps its core and is not slowed by a probe, while
    # the browser drawing the page that asked for the probe (a burst) does not cost the estimate a thread. A
    # single reading of 0.3 s here chose one thread for a lesson whose runs then trained with two, 38% faster.
    configure_threads(args.threads or worker_threads() or choose_threads(others=sustained_others(before)))
    ready = time.time()  # imports done, warmed up, threads chosen: where a worker starts its work
    try:
        cfg = TrainConfig.from_json(sys.stdin.read())
        if cfg.threads:  # the run fixes its threads (execute_run would set them)
            configure_threads(cfg.threads)
        if hasattr(cfg.model_options, "weights"):  # time the architecture; the weights do not change the cost
            cfg = replace(cfg, model_options=replace(cfg.model_options, weights="random"))
        answer = {"ready": ready, "costs": probe_costs(cfg).to_dict()}
    except ANSWERED_ERRORS as exc:
        answer = {"ready": ready, "error": error_answer(exc)}
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
