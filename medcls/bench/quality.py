"""The benchmark's quality side: the default recipe on BUSI's split, on a leak-free split, in cross-validation,
and the app's demo loop timed through the real job manager and worker process.

Everything is measured with the default ``TrainConfig`` on the data at hand, so when the default recipe
changes, the benchmark measures the new one. No pretrained weights are involved.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..analysis.copies import copied_test_images, learning_splits, metrics_without
from ..analysis.operating_point import BinaryView, operating_point, threshold_for_sensitivity
from ..config import DataConfig, TrainConfig
from ..data.cache import clear_memory_cache
from ..data.sources import load_dataset
from ..jobs.local import process_arguments
from ..jobs.manager import JobManager
from ..jobs.worker import STANDBY_FLAG
from ..runs.results import CrossValidation
from ..runs.store import RunStore
from ..settings import environment
from ..training.autoplan import size_for_data
from ..training.crossval import cross_validate, fit
from ..training.pipeline import PreparedData, TrainResult, prepare_data

__all__ = ["time_to_quality", "operating_point_on_test", "grouped_split", "cross_validation_quality", "demo_loop",
           "wait_for_standby", "OPERATING_SENSITIVITY"]

# The recall target, asked of a threshold on P(focus class) instead of the highest probability.
OPERATING_SENSITIVITY = 0.90


def _sized_data(cfg: TrainConfig, **data_options) -> tuple[TrainConfig, PreparedData]:
    """``cfg`` with its image size chosen for the data, as the app trains it (Image size 0), and the data
    prepared at that size (with ``data_options`` changed, e.g. ``disk_cache=False``)."""
    spec = load_dataset(cfg.data)
    cfg = size_for_data(cfg, spec)[0]
    return cfg, prepare_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_options)), spec=spec)


def time_to_quality(cfg: TrainConfig) -> dict:
    """A recipe end to end (finding and decoding images included): test quality and wall time."""
    clear_memory_cache()
    start = time.perf_counter()
    cfg, data = _sized_data(cfg, disk_cache=False)
    result = fit(cfg, data)  # as the app trains it: one model, or the folds chosen for a small dataset
    wall = time.perf_counter() - start
    test = result.metrics["test"]
    focus = data.focus_class
    counts = data.decoded.spec.counts()
    out = {"wall_s": wall, "macro_f1": test.macro_f1, "accuracy": test.accuracy, "focus_class": focus,
           "focus_recall": test.recall(focus), "best_epoch": result.fit.best_epoch,
           "epochs": len(result.fit.history), "precision": result.precision, "folds": 0,
           "image_size": cfg.image_size,
           "images": {split: sum(per.values()) for split, per in counts.items()}}
    copies = copied_test_images([(it.path, it.split) for it in data.decoded.spec.items],
                                learning_splits((result.cv.folds if result.cv else 0) or cfg.bagged_models,
                                                cfg.keeps_last()))
    if copies:  # the same models on the test images that are new to them (no copy among train + val)
        new = metrics_without(data.test.paths, data.test.labels.numpy(), result.probs["test"], data.classes, copies)
        out["without_copies"] = {"copies": len(copies), "test_images": test.n,
                                 "macro_f1": new.macro_f1 if new else None,
                                 "focus_recall": new.recall(focus) if new else None}
    out["operating_point"] = operating_point_on_test(result, focus)
    if cfg.bagged_models:
        out["bagged_models"] = cfg.bagged_models
    if result.cv is not None:
        out["folds"] = result.cv.folds
        out["cross_validation"] = _cv_summary(result.cv, wall, focus) | {
            "ensemble_test_macro_f1": test.macro_f1, "ensemble_test_focus_recall": test.recall(focus)}
    return out


def operating_point_on_test(result: TrainResult, focus: str, target: float = OPERATING_SENSITIVITY) -> dict | None:
    """What the run report's operating point gives on the test images: the highest threshold on P(focus) whose
    sensitivity reaches ``target`` on the validation images (a fold ensemble's out-of-fold predictions of
    train + val), so the test split plays no part in choosing it. None without test images or focus images, or
    without validation images (bagged models learn from them all)."""
    if "test" not in result.probs or "val" not in result.probs:
        return None
    view, data = BinaryView.of(result.data.classes, [focus]), result.data
    try:
        threshold = threshold_for_sensitivity(view.truth(data.val.labels.numpy()), view.scores(result.probs["val"]),
                                              target)
    except ValueError:  # no focus image among the validation images
        return None
    test = operating_point(view.truth(data.test.labels.numpy()), view.scores(result.probs["test"]), threshold)
    chosen_on = "the out-of-fold predictions of train + val" if result.cv else "the validation images"
    return {"target": target, "threshold": threshold, "chosen_on": chosen_on, "sensitivity": test["sensitivity"],
            "specificity": test["specificity"], "ppv": test["ppv"], "flagged": test["tp"] + test["fp"],
            "test_images": test["positives"] + test["negatives"]}


def _cv_summary(cv: CrossValidation, wall_s: float, focus: str) -> dict:
    out = {"folds": cv.folds, "wall_s": wall_s, "focus_class": focus, "grouped": cv.grouped,
           "scores": [dataclasses.asdict(s) for s in cv.scores]}
    for metric in ("macro_f1", "focus_recall"):
        out[f"{metric}_mean"], out[f"{metric}_sd"] = cv.mean_sd(metric)
    return out


def grouped_split(busi_root: Path) -> DataConfig:
    """BUSI's class folders with a new seeded 70/15/15 split in which near-duplicates share a split
    (the committed split.csv puts copies of test images in train)."""
    return DataConfig(source=str(busi_root), layout="class_folders", group_duplicates=True)


def cross_validation_quality(cfg: TrainConfig) -> dict:
    """k-fold cross-validation over train + val: each fold's held-out macro-F1 and focus recall, mean ± sd."""
    clear_memory_cache()
    start = time.perf_counter()
    cfg, data = _sized_data(cfg)
    result = cross_validate(cfg, data)
    test = result.metrics.get("test")
    return _cv_summary(result.cv, time.perf_counter() - start, data.focus_class) | {"image_size": cfg.image_size,
        "ensemble_test_macro_f1": test.macro_f1 if test else None,
        "ensemble_test_focus_recall": test.recall(data.focus_class) if test else None}


def demo_loop(cfg: TrainConfig | None = None, timeout_s: float = 600.0) -> dict:
    """What a teacher sees after pressing *Start training* on the built-in data, timed through the same job
    manager and worker process as the app: seconds to the first recorded epoch and to the finished run.

    ``cold``: a fresh machine (nothing decoded or probed yet) after the app's first page has generated the
    phantoms and started the job manager, whose standby training process has warmed up (a few seconds; the
    wait is recorded). ``warm``: the next run, once the standby process started after the first run has warmed
    up too. ``at_once``: another fresh machine, with *Start training* pressed the moment the job manager
    started, before its standby process was warm.
    """
    cfg = cfg or TrainConfig()
    out = {}
    with _fresh_machine() as (store, manager):
        for label in ("cold", "warm"):
            waited = wait_for_standby(manager)
            out[label] = _time_one_run(store, manager, cfg, timeout_s) | {"standby_warm_up_s": waited}
    with _fresh_machine() as (store, manager):
        out["at_once"] = _time_one_run(store, manager, cfg, timeout_s)
    return out


def wait_for_standby(manager: JobManager, limit_s: float = 60.0) -> float | None:
    """Seconds until the manager's standby training process said it is warm (None without one): as long as a
    teacher who looks at the page before pressing *Start training* gives it."""
    if not getattr(manager.backend, "standby", False):
        return None
    start = time.perf_counter()
    while not manager.worker_ready(0.2):
        if time.perf_counter() - start > limit_s:
            return None
        time.sleep(0.05)  # a scheduling step with a free slot starts it; then it says when it is warm
    return time.perf_counter() - start


@contextmanager
def _fresh_machine() -> Iterator[tuple[RunStore, JobManager]]:
    """A fresh cache and run store with the built-in phantoms generated, and the app's job manager on them."""
    env = environment()
    saved = env.get("MEDCLS_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="medcls-demo-") as tmp:
        env["MEDCLS_CACHE_DIR"] = str(Path(tmp) / "cache")
        try:
            from ..data.sources import synthetic_root

            synthetic_root()  # the app generates the phantoms when its first page loads
            store = RunStore(Path(tmp) / "runs")
            manager = JobManager.from_settings(store)  # exactly what the app runs
            try:
                yield store, manager
            finally:
                manager.shutdown(kill=True)
        finally:
            if saved is None:
                env.pop("MEDCLS_CACHE_DIR", None)
            else:
                env["MEDCLS_CACHE_DIR"] = saved


def _time_one_run(store: RunStore, manager: JobManager, cfg: TrainConfig, timeout_s: float) -> dict:
    start = time.perf_counter()
    run_id = manager.submit(cfg)
    first_epoch, by_standby = None, None
    while time.perf_counter() - start < timeout_s:
        if first_epoch is None and store.history(run_id):
            first_epoch = time.perf_counter() - start
        status = store.status(run_id)
        if by_standby is None and status.pid:
            by_standby = _is_standby_process(status.pid)
        if not status.active:
            break
        time.sleep(0.05)
    total = time.perf_counter() - start
    summary = store.summary(run_id)
    return {"state": store.status(run_id).state, "first_epoch_s": first_epoch, "finished_s": total,
            "by_standby": by_standby, "epochs": summary.epochs_done, "planned_epochs": summary.epochs,
            "test_macro_f1": summary.test_macro_f1}


def _is_standby_process(pid: int) -> bool | None:
    """Whether the run's process was started as a standby process (warm or still warming up when the run
    arrived); None where the machine does not tell (no /proc)."""
    args = process_arguments(pid)
    return None if args is None else STANDBY_FLAG in args
