"""Sweeps: try every combination of a few values of one or two settings, then rank the runs.

A sweep starts from a base :class:`~medcls.config.TrainConfig` (the Train page's
options) and varies up to two settings with two to four values each, e.g.
imbalance strategy x learning rate = 4 runs. Every combination becomes an
ordinary queued run. Which settings can be varied, their labels and their
starting values come from the options' declarations; values are checked by
``TrainConfig`` itself, and a setting that would have no effect in a combination
(momentum without SGD) is refused before anything is queued.

Each sweep is described in ``<store>/sweeps/<sweep_id>.json``; each of its runs
carries its place in the sweep as a group membership (``group.json``).
Results come from what every run records anyway: the kept checkpoint's epoch in
its history (live, epoch by epoch) and its test metrics once tested.
"""

from __future__ import annotations

import itertools
import logging
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from ..config import (
    ConfigError,
    TrainConfig,
    applies_text,
    check_value,
    format_value,
    option_table,
)
from ..config.describe import sentence_label
from ..config.serialize import coerce
from ..runs.records import GroupMembership, RecordError, best_record
from ..runs.store import RunNotFoundError, RunStore
from ..training.autoplan import train_alike
from .records import GroupRecords

__all__ = [
    "MAX_SETTINGS", "MIN_VALUES", "MAX_VALUES", "RANK_METRICS", "SweepError", "SweepPoint", "Sweep",
    "sweepable_options", "value_choices", "starting_values", "parse_values", "expand_grid", "submit_sweep",
    "list_sweeps", "load_sweep", "sweep_rows", "rank_rows", "unranked_note",
]

log = logging.getLogger(__name__)

MAX_SETTINGS = 2
MIN_VALUES, MAX_VALUES = 2, 4
SWEEPS_DIR = "sweeps"
# What a sweep can be ranked by: the kept checkpoint's figures (name in words).
RANK_METRICS = {
    "best_score": "Validation score of the kept checkpoint (the runs' 'pick the best epoch by' metric; a fold "
                  "ensemble: its folds' mean)",
    "val_macro_f1": "Validation macro-F1 of the kept checkpoint (a fold ensemble: its folds' mean)",
    "val_balanced_accuracy": "Validation balanced accuracy of the kept checkpoint (a fold ensemble: its folds' mean)",
    "val_accuracy": "Validation accuracy of the kept checkpoint (a fold ensemble: its folds' mean)",
    "test_macro_f1": "Test macro-F1 (tested runs)",
}


class SweepError(ConfigError):
    """A sweep cannot be made as asked; the message says what to change."""


_RECORDS = GroupRecords(SWEEPS_DIR, "sweep_id", "sweep", SweepError)  # one JSON file per sweep


def _is_scalar(spec) -> bool:
    return typing.get_origin(spec.base) is not tuple


def sweepable_options(base: TrainConfig | None = None) -> list[str]:
    """Options a sweep may vary (those that have an effect in ``base``, when given: its model's, and not early
    stopping's patience when it keeps its last epoch): the suggested ones first."""
    present = set(base.applicable()) if base is not None else None
    names = [name for name, spec in option_table().items()
             if spec.option.sweepable and _is_scalar(spec) and (present is None or name in present)]
    order = {n: option_table()[n].option.sweep_order for n in names}
    return sorted(names, key=lambda n: (order[n] is None, order[n] or 0, names.index(n)))


def value_choices(name: str) -> list[Any] | None:
    """The values an option can take when they form a short list (models, strategies, on/off); else None."""
    spec = option_table().get(name)
    if spec is None:
        return None
    if spec.option.allowed():
        return list(spec.option.allowed())
    if spec.base is bool:
        return [True, False]
    return None


def starting_values(name: str) -> str:
    """Values typed into the box for a number option before the user changes them, e.g. '0.0005, 0.002'."""
    suggested = option_table()[name].option.sweep
    return ", ".join(format_value(v) for v in suggested) if suggested else ""


def parse_values(text: str) -> list[str]:
    """'1e-3, 3e-3; 1e-2' -> ['1e-3', '3e-3', '1e-2'] (checked and converted by :func:`expand_grid`)."""
    return [part.strip() for part in re.split(r"[,;\s]+", text) if part.strip()]


@dataclass(frozen=True)
class SweepPoint:
    values: dict[str, Any]   # the swept settings of this run, e.g. {'imbalance': 'none', 'lr': 0.001}
    config: TrainConfig


def _checked_values(base: TrainConfig, name: str, raw_values: Sequence[Any]) -> list[Any]:
    spec = option_table()[name]
    label = spec.label
    if not MIN_VALUES <= len(raw_values) <= MAX_VALUES:
        raise SweepError(f"Give {MIN_VALUES} to {MAX_VALUES} values for {label} (got {len(raw_values)}).")
    values = []
    for raw in raw_values:
        try:
            value = coerce(spec.hint, raw)
            check_value(spec.option, value)
        except (ConfigError, ValueError, TypeError) as exc:
            raise SweepError(f"{label}: the value {raw!r} is not valid. {exc}") from None
        if value in values:
            raise SweepError(f"{label}: the value {format_value(value)} is given twice; each value must differ.")
        values.append(value)
    return values


def expand_grid(base: TrainConfig, settings: Mapping[str, Sequence[Any]]) -> list[SweepPoint]:
    """Every combination of the settings' values on top of ``base``, checked by TrainConfig.

    Refused with a message: settings that cannot be varied, and combinations in which a varied setting
    has no effect (those runs would differ in nothing).
    """
    if not 1 <= len(settings) <= MAX_SETTINGS:
        raise SweepError(f"Choose one or two settings to vary (got {len(settings)}).")
    table = option_table()
    allowed = sweepable_options()
    for name in settings:
        if name not in allowed:
            why = "is not an option" if name not in table else "cannot be varied in a sweep"
            raise SweepError(f"{name!r} {why}. Settings a sweep can vary: {', '.join(allowed)}.")
    ordered = sorted(settings, key=lambda n: n != "model")  # a model's own options are set after the model
    checked = {name: _checked_values(base, name, settings[name]) for name in ordered}
    points = []
    for combo in itertools.product(*(checked[name] for name in settings)):
        values = dict(zip(settings, combo))
        shown = ", ".join(f"{table[k].label} = {format_value(v)}" for k, v in values.items())
        try:
            config = base.with_options(strict=False, **{k: values[k] for k in ordered})
        except (ConfigError, ValueError) as exc:
            raise SweepError(f"The combination {shown} is not valid: {exc}") from None
        applicable = config.applicable()
        for name in settings:
            if name not in applicable:
                where = (f"it applies only {applies_text(table[name].option.applies)}"
                         if name in config.flat() else f"{config.model} has no such option")
                raise SweepError(f"In the combination {shown}, {sentence_label(name)} has no effect ({where}), so "
                                 "those runs would differ in nothing. Vary something else, or fix the setting it "
                                 "depends on in the base options.")
        points.append(SweepPoint(values, config))
    return points


@dataclass
class Sweep:
    sweep_id: str
    created: str
    settings: dict[str, list[Any]]                               # name -> values, in the order chosen
    runs: list[dict[str, Any]] = field(default_factory=list)     # {'run_id': ..., 'values': {...}}

    def to_dict(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "created": self.created, "settings": self.settings, "runs": self.runs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Sweep":
        return cls(str(data["sweep_id"]), str(data.get("created", "")), dict(data.get("settings", {})),
                   list(data.get("runs", [])))

    def describe(self) -> str:
        """e.g. 'Imbalance strategy (2) × Learning rate (2) = 4 runs'."""
        table = option_table()
        parts = " × ".join(f"{table[n].label if n in table else n} ({len(v)})" for n, v in self.settings.items())
        return f"{parts} = {len(self.runs)} runs"


def submit_sweep(store: RunStore, submit: Callable[..., str], base: TrainConfig,
                 settings: Mapping[str, Sequence[Any]], pool_counts: Sequence[int] = (),
                 side: int | None = None) -> Sweep:
    """Check the grid, then queue one run per combination with ``submit(config, group=..., notes=...)``
    (e.g. ``JobManager.submit``). ``pool_counts``, the data's train + val images per class, and ``side``, its images'
    typical shorter side (for *Image size* 0), let the runs train alike (:func:`~medcls.training.autoplan.train_alike`)."""
    points = expand_grid(base, settings)  # raises before anything is queued
    configs, alike = train_alike([p.config for p in points], pool_counts, side) if pool_counts else \
        ([p.config for p in points], None)
    now = datetime.now(timezone.utc)
    sweep = Sweep(_RECORDS.fresh_id(store, f"sweep-{now.strftime('%Y%m%d-%H%M%S')}"), now.isoformat(timespec="seconds"),
                  {name: list(dict.fromkeys(p.values[name] for p in points)) for name in settings})
    for point, config in zip(points, configs):
        run_id = submit(config, group=GroupMembership("sweep", sweep.sweep_id, point.values),
                        notes=[alike] if alike else [])
        sweep.runs.append({"run_id": run_id, "values": point.values})
        _RECORDS.write(store, sweep.sweep_id, sweep.to_dict())  # complete after every run
    log.info("Sweep %s: queued %d runs", sweep.sweep_id, len(points))
    return sweep


def list_sweeps(store: RunStore) -> list[Sweep]:
    """All sweeps of a run store, newest first."""
    return sorted(map(Sweep.from_dict, _RECORDS.all(store)), key=lambda s: (s.created, s.sweep_id), reverse=True)


def load_sweep(store: RunStore, sweep_id: str) -> Sweep:
    return Sweep.from_dict(_RECORDS.read(store, sweep_id))


def sweep_rows(store: RunStore, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per run: its values, name, state, epochs and the rankable metrics (None until known)."""
    rows = []
    for entry in sweep.runs:
        run_id = entry["run_id"]
        row: dict[str, Any] = {"run_id": run_id, **entry.get("values", {})}
        try:
            summary = store.summary(run_id)
            best = best_record(store.history(run_id))
        except (RunNotFoundError, FileNotFoundError, RecordError):
            rows.append({**row, "name": run_id, "state": "deleted", "epochs_done": 0, "epochs": 0, "epochs_words": "–",
                         **{metric: None for metric in RANK_METRICS}})
            continue
        row.update(name=summary.name, state=summary.state, bagged=summary.bagged,
                   epochs_done=summary.epochs_done, epochs=summary.epochs,
                   epochs_words=summary.epochs_words(),  # '3 of 30', or '3 of 30 in fold 2 of 5' for an ensemble
                   best_score=summary.best_score, test_macro_f1=summary.test_macro_f1,
                   val_macro_f1=best.val_macro_f1 if best and best.validated else None,
                   val_balanced_accuracy=best.val_balanced_accuracy if best and best.validated else None,
                   val_accuracy=best.val_accuracy if best and best.validated else None)
        cv = store.cross_validation(run_id)
        try:
            select = store.config(run_id).select_metric if cv is not None and cv.scores else None
        except RecordError:  # a damaged config: the summary says so
            select = None
        if select:  # a fold ensemble: every fold's kept checkpoint counts, not only the last fold's
            row.update(best_score=cv.mean_sd(select)[0], val_macro_f1=cv.mean_sd("macro_f1")[0],
                       val_balanced_accuracy=cv.mean_sd("balanced_accuracy")[0],
                       val_accuracy=cv.mean_sd("accuracy")[0])
        rows.append(row)
    return rows


def unranked_note(rows: Sequence[Mapping[str, Any]], metric: str) -> str | None:
    """Why runs of bagged models are left out of a ranking by a validation score (None when none are): they hold
    no image out, so they have none."""
    if metric == "test_macro_f1" or not (bagged := sum(bool(r.get("bagged")) for r in rows)):
        return None
    runs = "These runs train" if bagged == len(rows) else f"{bagged} of these {len(rows)} runs train"
    return (f"{runs} bagged models: each model learns from every training and validation image, so there is no "
            "validation score to rank them by (the default for a small dataset of large images). Rank by test "
            "macro-F1 to compare them; the test images then pick the winner, so its test score flatters it. Set "
            "the base's folds for runs ranked by held-out images.")


def rank_rows(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Rows sorted best first by ``metric``; 'rank' is 1, 2, ... (None for runs without a value yet)."""
    if metric not in RANK_METRICS:
        raise SweepError(f"Unknown ranking metric {metric!r}. Choose one of {', '.join(RANK_METRICS)}.")
    scored = sorted((dict(r) for r in rows if r.get(metric) is not None), key=lambda r: -r[metric])
    for rank, row in enumerate(scored, start=1):
        row["rank"] = rank
    return scored + [{**r, "rank": None} for r in rows if r.get(metric) is None]
