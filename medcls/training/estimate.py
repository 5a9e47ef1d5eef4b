"""How long a run will take on this machine, measured before it starts.

A run's time is mostly its epochs, and an epoch is more than its training steps: the imbalance strategy
sets how many images it draws (oversampling can double it), validation judges every validation image
(twice with mirror test-time augmentation), weight averaging and augmentation cost something every step,
and a worker runs at a lower priority with the threads other processes leave it. Before and after the
epochs come the worker's start, reading (and the first time, decoding) the dataset, and the final test.

So nothing here is a rule of thumb. :func:`measure_costs` starts a process set up like a training worker
(``python -m medcls.training.probe``: the same priority, environment and thread choice) that

- lists the dataset and looks its decoded images up in the cache (and times decoding a sample when the
  cache does not have them);
- trains the configured model, with the configured batch, augmentation, precision, weight averaging and
  test-time augmentation, for two short epochs on random images of the configured size, and takes the
  seconds of a training step (the median of the epoch's steps) and of a validated image from the second
  epoch (the first pays for warm-up, which is kept too);
- times the extras after training (the metrics' 95% intervals, the novelty record's features).

:func:`estimate_run` scales those costs to the run: the real epoch's steps and validation images, and the
range of epochs early stopping allows, times the fold models when the run cross-validates (set, or chosen
for a small dataset). Once a run has finished an epoch, its remaining time comes from its
own measured epochs instead (:class:`~medcls.training.callbacks.ProgressMeter`).
``python -m medcls.bench.estimates`` checks estimates against real runs (docs/estimates.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from ..config import TrainConfig
from ..data.explore import typical_side
from ..data.spec import DatasetSpec
from ..runs.records import member_word
from .autoplan import folds_for, one_model_reason, pool_counts, pool_labels, resolve_image_size, size_for_data
from .engine import batches_per_epoch
from .imbalance import make_sampler
from .pipeline import averaging_note, cached_views

__all__ = ["Costs", "RunEstimate", "GroupEstimate", "EstimateError", "ProbeStopped", "estimate_run", "estimate_group",
           "measure_costs", "probe_config", "earliest_stop", "PROBE_STEPS"]

PROBE_STEPS = 5          # training steps per probe epoch (the second epoch's median step is the cost)
DECODE_SAMPLE = 32       # images decoded to time decoding when the cache lacks the dataset
PROBE_TIMEOUT_S = 600.0
STOP_POLL_S = 0.25       # how often a probe that may be stopped checks whether it should be
START_HISTORY = 5        # worker start times kept (the median is used)
# Options that change what a run learns but not what a step costs: the probe leaves them at their defaults,
# so changing one of them on the form does not start a new measurement.
TIMING_NEUTRAL = ("lr", "weight_decay", "momentum", "scheduler", "step_size", "gamma", "patience", "checkpoint",
                  "epochs", "seed", "select_metric", "focus_class", "imbalance", "oversample", "dropout", "folds",
                  "small_data_ensemble")


class EstimateError(RuntimeError):
    """The timing probe could not run (the model cannot be built, the data cannot be read, ...)."""


class ProbeStopped(EstimateError):
    """The timing probe was stopped before it answered (``stop`` was set: a run started and needs the CPU)."""


@dataclass(frozen=True)
class Costs:
    """What one probe measured, in seconds, in a process set up like a training worker."""

    threads: int                 # torch threads the worker would use now
    precision: str               # fp32 or bf16, as 'auto' resolves here
    step_s: float                # one training step on a full batch (augmentation and weight averaging included)
    eval_image_s: float          # one image validated (all test-time views)
    first_epoch_extra_s: float   # the first epoch's warm-up
    feature_image_s: float       # a frozen backbone: one image view through it (0 otherwise)
    embed_image_s: float         # one image's features for the novelty record, after training
    start_s: float               # starting a fresh worker process (Python, torch, medcls, warming up, threads)
    data_s: float                # listing the dataset and looking its decoded images up
    decode_image_s: float        # decoding one image, when the cache does not have the dataset (0: cached)
    bootstrap_s: float           # 95% intervals of the validation and test metrics
    channels: int                # 1 (gray) or 3 (RGB), as the images will be decoded
    others_cores: float          # cores other processes kept busy while the probe timed (0: quiet, or not known)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Costs":
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def earliest_stop(epochs: int, patience: int) -> int:
    """The first epoch early stopping can end a run at: never before half the epochs, and not before
    ``patience`` epochs without improvement after the first (EarlyStopping's rules)."""
    if not patience:
        return epochs
    return min(epochs, max(math.ceil(epochs / 2), 1 + patience))


@dataclass(frozen=True)
class RunEstimate:
    """A run's time on this machine, from measured costs."""

    epoch_s: float
    steps: int                 # training steps per epoch
    epoch_images: int          # training images per epoch (after the imbalance strategy)
    train_images: int
    val_images: int
    test_images: int
    tta: bool
    setup_s: float             # from Start until training begins: worker start (unless one is warm), reading the data
    finish_s: float            # after the last epoch: testing and the records
    epochs: int
    earliest: int              # early stopping may end the run after this many epochs
    costs: Costs
    folds: int = 0             # an ensemble: this many models, one after another (0: one model)
    bagged: bool = False       # its models are bagged: each trains on every train + val image, validates none
    features_s: float = 0.0    # a frozen backbone's cached features, computed again for each model
    note: str | None = None    # why a small dataset trains one model, not the automatic ensemble
    warm_start: bool = False   # a warmed-up training process takes the run: no process start in setup_s
    limit_note: str | None = None  # why an epoch draws fewer images than balancing would (the run's own note)
    averaging_note: str | None = None  # a weight-averaging decay the run never reaches (the run's own note)

    def total_s(self, epochs: int | None = None) -> float:
        """Start to finish with ``epochs`` epochs per model (default: all planned)."""
        n = self.epochs if epochs is None else epochs
        per_model = self.features_s + self.costs.first_epoch_extra_s + n * self.epoch_s
        return self.setup_s + max(1, self.folds) * per_model + self.finish_s

    def shows_range(self) -> bool:
        """Whether the whole run's time is worth giving as a range: early stopping may shorten it, by enough to
        show in rounded figures."""
        return self.earliest < self.epochs and _minutes(self.total_s(self.earliest)) != _minutes(self.total_s())

    def epoch_words(self) -> str:
        mirror = " and their mirror images" if self.tta else ""
        drawn = f"{self.epoch_images:,} training images drawn" if self.epoch_images != self.train_images else \
            f"{self.epoch_images:,} training images"
        each = f" (each {member_word(self.bagged, plural=True)[:-1]})" if self.folds else ""
        if not self.val_images:
            return f"{drawn} in {self.steps} steps, no validation images{each}"
        return f"{drawn} in {self.steps} steps, then {self.val_images:,} validation images{mirror}{each}"

    def total_words(self) -> str:
        models = f" for {self.folds} {member_word(self.bagged, plural=True)}" if self.folds else ""
        each = " each" if self.folds else ""
        if self.earliest < self.epochs:
            stop = (f"early stopping may end {'each' if self.folds else 'it'} after epoch {self.earliest}, at the "
                    f"latest after {self.epochs}")
            if not self.shows_range():  # the epochs are a small part of it (a frozen backbone's head)
                return f"{_minutes(self.total_s())} in all{models} ({stop}; the epochs take little of it)"
            return f"{_minutes(self.total_s(self.earliest))} to {_minutes(self.total_s())} in all{models}: {stop}"
        return f"{_minutes(self.total_s())} in all{models}, {self.epochs} epoch{'s' if self.epochs != 1 else ''}{each}"


@dataclass(frozen=True)
class GroupEstimate:
    """Runs queued together (a lesson's, a sweep's): they train one after another, so their times add up."""

    runs: tuple[RunEstimate, ...]
    labels: tuple[str, ...]     # what sets each run apart ("oversampling", "128 px"), in queue order

    def total_s(self, earliest: bool = False) -> float:
        """Every run from its Start to its end; ``earliest``: each ended by early stopping as soon as it may."""
        return sum(r.total_s(r.earliest if earliest else None) for r in self.runs)

    def shows_range(self) -> bool:
        return _minutes(self.total_s(earliest=True)) != _minutes(self.total_s())

    def total_words(self) -> str:
        """'≈ 2.3 min in all' or '≈ 1.8 min to ≈ 3.1 min in all', with what early stopping does to it."""
        if not self.shows_range():
            return f"{_minutes(self.total_s())} in all"
        return (f"{_minutes(self.total_s(earliest=True))} to {_minutes(self.total_s())} in all: early stopping may "
                "end runs sooner")

    def run_words(self) -> str:
        """Each run's share: 'each ≈ 35 s' when they cost the same in rounded figures, else run by run."""
        each = [_minutes(r.total_s()) for r in self.runs]
        if len(set(each)) == 1:
            return f"each {each[0]}"
        return "; ".join(f"{label} {words}" for label, words in zip(self.labels, each))


def estimate_group(configs: Sequence[TrainConfig], labels: Sequence[str], spec: DatasetSpec,
                   costs_for: Callable[[TrainConfig], Costs], *, warm_start: bool = False) -> GroupEstimate:
    """The time of ``configs`` queued together on ``spec``, one after another; ``costs_for`` measures (or looks
    up) the costs of one config, and is asked once per distinct cost (configs that differ only in what a step
    does not cost, such as the learning rate or the imbalance fix, share a :func:`probe_config`). Only the first
    run can find a training process warmed up (``warm_start``): a standby process warms up only while no run
    trains, so each later run starts a fresh one. Images not yet in the decoded-image cache are decoded by the
    first run that reads them at their size and colour; the later ones find them there."""
    if len(configs) != len(labels):
        raise ValueError(f"{len(configs)} configs but {len(labels)} labels: give one label per run.")
    decoded: set[tuple] = set()  # images an earlier run of the group leaves decoded in the disk cache
    measured: dict[str, Costs] = {}
    runs = []
    counts, side = pool_counts(spec), typical_side(spec) if not all(c.image_size for c in configs) else None
    for i, cfg in enumerate(configs):
        cfg = resolve_image_size(cfg, counts, side)[0]  # Image size 0: measured at the size the run will choose
        if (probe := probe_config(cfg).to_json()) not in measured:
            measured[probe] = costs_for(cfg)
        costs, options = measured[probe], cfg.flat()
        key = (options["image_size"], options["color"])
        if key in decoded:
            costs = dataclasses.replace(costs, decode_image_s=0.0)
        elif options["disk_cache"]:
            decoded.add(key)
        runs.append(estimate_run(cfg, spec, costs, warm_start=warm_start and i == 0))
    return GroupEstimate(tuple(runs), tuple(labels))


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"≈ {seconds:.0f} s"
    return f"≈ {seconds / 60:.1f} min"


def estimate_run(cfg: TrainConfig, spec: DatasetSpec, costs: Costs, *, warm_start: bool = False) -> RunEstimate:
    """Scale measured costs to this run on this dataset; ``warm_start``: a training process that has already
    warmed up will take it (the app's standby process, :meth:`medcls.jobs.manager.JobManager.worker_ready`)."""
    labels = np.array([it.label for it in spec.items if it.split == "train"], dtype=np.int64)
    val = sum(1 for it in spec.items if it.split == "val")
    test = sum(1 for it in spec.items if it.split == "test")
    cfg = size_for_data(cfg, spec)[0]  # Image size 0: the size the run will choose (it may also set the folds)
    pool = pool_labels(spec)
    counts = pool_counts(spec)
    folds = folds_for(cfg, counts) or cfg.bagged_models  # the models of an ensemble (0: one model)
    # Try it's novelty reference embeds the training and validation images (a fold ensemble: through every member).
    embedded = (len(labels) + val) * max(1, folds)
    if cfg.bagged_models:  # each bagged model trains on all of train + val and validates on none
        labels, val = pool, 0
    elif folds:  # each fold model trains on the other folds of train + val and validates on its own fold
        keep = np.arange(len(pool)) % folds != 0  # (k-1)/k of every class, as the stratified folds give
        labels, val = pool[np.argsort(pool, kind="stable")][keep], len(pool) // folds
    batch = _batch(cfg, len(labels))
    sampler = make_sampler(labels, spec.classes, cfg.imbalance, cfg.seed, cfg.oversample) if len(labels) else None
    epoch_images = len(sampler) if sampler is not None else 0
    steps = batches_per_epoch(epoch_images, batch) if epoch_images else 0
    frozen = costs.feature_image_s > 0
    views = cached_views(cfg) if frozen else 1
    tta_views = 2 if cfg.tta else 1
    cache_s = (len(labels) * views + (val + test) * tta_views) * costs.feature_image_s
    setup_s = (0.0 if warm_start else costs.start_s) + costs.data_s + len(spec.items) * costs.decode_image_s
    # Each model is tested after training (a fold ensemble: every fold, then all of them together). A frozen
    # backbone's model tests on its cached features, but the ensemble's test images go through every backbone.
    tests = (val + test) * max(1, folds) + (test * folds if folds else 0)
    ensemble_features_s = test * folds * tta_views * costs.feature_image_s
    finish_s = tests * costs.eval_image_s + ensemble_features_s + costs.bootstrap_s + embedded * costs.embed_image_s
    return RunEstimate(epoch_s=steps * costs.step_s + val * costs.eval_image_s, steps=steps, epoch_images=epoch_images,
                       train_images=len(labels), val_images=val, test_images=test, tta=cfg.tta, setup_s=setup_s,
                       finish_s=finish_s, epochs=cfg.epochs,
                       # without validation images early stopping has nothing to go by: every epoch runs
                       earliest=earliest_stop(cfg.epochs, cfg.stopping_patience() if val else 0),
                       costs=costs, folds=folds, bagged=bool(cfg.bagged_models), features_s=cache_s,
                       note=one_model_reason(cfg, counts, spec.classes),
                       warm_start=warm_start, limit_note=sampler.limit_note() if sampler is not None else None,
                       averaging_note=averaging_note(cfg, steps))


def _batch(cfg: TrainConfig, train_images: int) -> int:
    from .pipeline import _effective_batch  # the batch a tiny dataset lowers it to

    return _effective_batch(cfg, max(1, train_images), [])


def probe_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with what does not change a step's cost at its defaults, for two probe epochs."""
    cfg.chosen_image_size()  # a probe times one size: the one the run will train at
    defaults = TrainConfig(data=cfg.data).with_options(strict=False, model=cfg.model).flat()
    neutral = {name: defaults[name] for name in TIMING_NEUTRAL if name in defaults and name in cfg.flat()}
    probe = cfg.with_options(strict=False, **neutral)
    return probe.with_options(strict=False, epochs=2, patience=0, imbalance="none")


def measure_costs(cfg: TrainConfig, *, nice: int = 10, threads: int = 0, timeout: float = PROBE_TIMEOUT_S,
                  stop: threading.Event | None = None) -> Costs:
    """Run the probe in a process set up like a training worker (see the module doc); raises EstimateError.

    Setting ``stop`` (from another thread) ends the probe's process within a fraction of a second and raises
    :class:`ProbeStopped`: a run started meanwhile should not share the CPU with a measurement nobody waits for.
    """
    from .hardware import worker_environment

    cmd = [sys.executable, "-m", "medcls.training.probe", "--nice", str(nice), "--threads", str(threads)]
    spawned = time.time()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=worker_environment())
    payload: str | None = probe_config(cfg).to_json()
    deadline = time.monotonic() + timeout
    with proc:  # as subprocess.run did: whatever ends the wait (a stop, the timeout, an interrupt) kills the probe
        try:
            while True:
                try:  # a retried communicate() loses no output; the input is sent once
                    stdout, stderr = proc.communicate(payload, timeout=STOP_POLL_S if stop is not None else timeout)
                    break
                except subprocess.TimeoutExpired:
                    payload = None
                    if stop is not None and stop.is_set():
                        raise ProbeStopped("The timing probe was stopped: a run started.") from None
                    if time.monotonic() >= deadline:
                        raise EstimateError(f"Timing a few training steps took over {timeout:.0f} s; this setting "
                                            "is very slow here.") from None
        except BaseException:
            proc.kill()
            raise
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        answer = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        detail = (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise EstimateError(f"The timing probe failed: {detail}") from None
    if "error" in answer:
        raise EstimateError(answer["error"])
    costs = answer["costs"]
    costs["start_s"] = _typical_start(max(0.0, answer["ready"] - spawned))
    return Costs.from_dict(costs)


def _typical_start(seconds: float) -> float:
    """The median of this and the last few measured worker starts: one start (importing torch from disk) can be
    several times slower than the next on a busy machine."""
    from ..atomic import atomic_write_json, read_json
    from ..settings import cache_dir

    path = cache_dir() / "worker-start-times.json"
    recent = [float(v) for v in (read_json(path, []) or []) if isinstance(v, (int, float))][-(START_HISTORY - 1):]
    recent.append(seconds)
    try:
        atomic_write_json(path, recent)
    except OSError:
        pass  # a read-only cache only costs the smoothing
    return float(np.median(recent))
