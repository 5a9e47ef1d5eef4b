"""Sweeps: try every combination of a few values of one or two settings, then rank the runs.

A sweep starts from a base :class:`~medcls.config.TrainConfig` (the Train page's
options) and varies up to two settings with two to four values each, e.g.
imbalance strategy x learning rate = 4 runs. Every combination becomes an
ordinary queued run. Values are checked by ``TrainConfig`` itself before
anything is queued, so a bad value is reported with the config's own message.

Membership is recorded next to the runs, in two small files that older code
simply ignores (the run store format is otherwise unchanged):

- ``<store>/sweeps/<sweep_id>.json``: the sweep's settings, values and run ids;
- ``<store>/<run_id>/sweep.json``: the sweep a run belongs to and its values.

Results come from what every run writes anyway: the best validation ``score``
in ``history.jsonl`` (live, epoch by epoch) and test macro-F1 in
``metrics.json`` once the run has finished.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import secrets
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .atomic import atomic_write_json, read_json
from .config import ConfigError, DataConfig, TrainConfig, format_value, iter_options, option_info
from .models import list_models
from .runs import RunNotFoundError, RunStore

__all__ = [
    "MAX_SETTINGS", "MIN_VALUES", "MAX_VALUES", "SUGGESTED", "RANK_METRICS", "SweepError", "SweepPoint", "Sweep",
    "sweepable_options", "value_choices", "option_label", "parse_values", "expand_grid", "submit_sweep",
    "list_sweeps", "load_sweep", "sweep_of", "sweep_rows", "rank_rows", "format_value",
]

log = logging.getLogger(__name__)

MAX_SETTINGS = 2
MIN_VALUES, MAX_VALUES = 2, 4
SWEEP_FILE = "sweep.json"
SWEEPS_DIR = "sweeps"
# The settings worth exploring first, in the order the app offers them.
SUGGESTED = ("imbalance", "lr", "name", "epochs", "batch_size", "image_size", "optimizer", "scheduler",
             "weight_decay", "dropout", "augment", "finetune", "seed")
# What a sweep can be ranked by: (history key or metric, plain-language name).
RANK_METRICS = {
    "best_score": "Best validation score (the runs' 'pick the best epoch by' metric)",
    "val_macro_f1": "Best validation macro-F1",
    "val_balanced_accuracy": "Best validation balanced accuracy",
    "val_accuracy": "Best validation accuracy",
    "test_macro_f1": "Test macro-F1 (finished runs)",
}
_SWEEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
# Not sweepable: the dataset (runs on different data cannot be ranked together), the metric that defines
# 'score' (scores would mean different things), and list-valued options (commas separate values here).
_NOT_SWEEPABLE = {f for f in DataConfig.__dataclass_fields__} | {"select_metric", "focus_class"}


class SweepError(ConfigError):
    """A sweep cannot be made as asked; the message says what to change."""


def sweepable_options() -> list[str]:
    """Options a sweep may vary: the suggested ones first, then the rest in form order."""
    names = [name for name, info in option_info().items()
             if name not in _NOT_SWEEPABLE and typing.get_origin(info.base) is not tuple]
    return sorted(names, key=lambda n: (SUGGESTED.index(n) if n in SUGGESTED else len(SUGGESTED), names.index(n)))


def option_label(name: str) -> str:
    """The option's name in words, capitalised: 'Learning rate', 'Model', 'Batch size'."""
    label = {"name": "model"}.get(name)
    for option, f, _ in iter_options():
        if option == name and label is None:
            label = f.metadata.get("label")
    label = label or name.replace("_", " ")
    return label[:1].upper() + label[1:]


def value_choices(name: str) -> list[Any] | None:
    """The values an option can take when they form a short list (models, strategies, on/off); else None."""
    if name == "name":
        return list_models()
    info = option_info().get(name)
    if info is None:
        return None
    if info.field.metadata.get("choices"):
        return list(info.field.metadata["choices"])
    if info.base is bool:
        return [True, False]
    return None


def parse_values(text: str) -> list[str]:
    """'1e-3, 3e-3; 1e-2' -> ['1e-3', '3e-3', '1e-2'] (checked and converted by :func:`expand_grid`)."""
    return [part.strip() for part in re.split(r"[,;\s]+", text) if part.strip()]


@dataclass(frozen=True)
class SweepPoint:
    values: dict[str, Any]   # the swept settings of this run, e.g. {'imbalance': 'none', 'lr': 0.001}
    config: TrainConfig


def _checked_values(base: TrainConfig, name: str, raw_values: Sequence[Any]) -> list[Any]:
    label = option_label(name)
    if not MIN_VALUES <= len(raw_values) <= MAX_VALUES:
        raise SweepError(f"Give {MIN_VALUES} to {MAX_VALUES} values for {label} (got {len(raw_values)}).")
    values = []
    for raw in raw_values:
        try:
            value = base.with_options(**{name: raw}).flat()[name]
        except (ConfigError, ValueError, TypeError) as exc:
            raise SweepError(f"{label}: the value {raw!r} is not valid. {exc}") from None
        if name == "name" and value not in list_models():
            raise SweepError(f"{label}: there is no model {value!r}. Available: {', '.join(list_models())}.")
        if value in values:
            raise SweepError(f"{label}: the value {format_value(value)} is given twice; each value must differ.")
        values.append(value)
    return values


def expand_grid(base: TrainConfig, settings: Mapping[str, Sequence[Any]]) -> list[SweepPoint]:
    """Every combination of the settings' values on top of ``base``, checked by TrainConfig."""
    if not 1 <= len(settings) <= MAX_SETTINGS:
        raise SweepError(f"Choose one or two settings to vary (got {len(settings)}).")
    allowed = sweepable_options()
    for name in settings:
        if name not in allowed:
            known = {n for n, _, _ in iter_options()}
            why = "is not an option" if name not in known else "cannot be varied in a sweep"
            raise SweepError(f"{name!r} {why}. Options a sweep can vary: {', '.join(allowed)}.")
    checked = {name: _checked_values(base, name, values) for name, values in settings.items()}
    points = []
    for combo in itertools.product(*checked.values()):
        values = dict(zip(checked, combo))
        try:
            config = base.with_options(**values)
        except (ConfigError, ValueError) as exc:
            shown = ", ".join(f"{option_label(k)} = {format_value(v)}" for k, v in values.items())
            raise SweepError(f"The combination {shown} is not valid: {exc}") from None
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
        """e.g. 'imbalance (2) x learning rate (2) = 4 runs'."""
        parts = " x ".join(f"{option_label(n)} ({len(v)})" for n, v in self.settings.items())
        return f"{parts} = {len(self.runs)} runs"


def _sweeps_dir(store: RunStore) -> Path:
    return store.root / SWEEPS_DIR


def _sweep_path(store: RunStore, sweep_id: str) -> Path:
    if not isinstance(sweep_id, str) or not _SWEEP_ID.match(sweep_id) or ".." in sweep_id:
        raise SweepError(f"Invalid sweep id {sweep_id!r}.")
    return _sweeps_dir(store) / f"{sweep_id}.json"


def submit_sweep(store: RunStore, submit: Callable[[TrainConfig], str], base: TrainConfig,
                 settings: Mapping[str, Sequence[Any]]) -> Sweep:
    """Check the grid, then queue one run per combination with ``submit`` (e.g. ``JobManager.submit``)."""
    points = expand_grid(base, settings)  # raises before anything is queued
    now = datetime.now(timezone.utc)
    sweep = Sweep(f"sweep-{now.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}", now.isoformat(timespec="seconds"),
                  {name: list(dict.fromkeys(p.values[name] for p in points)) for name in settings})
    for point in points:
        run_id = submit(point.config)
        store.write_json(run_id, SWEEP_FILE, {"sweep_id": sweep.sweep_id, "values": point.values})
        sweep.runs.append({"run_id": run_id, "values": point.values})
        atomic_write_json(_sweep_path(store, sweep.sweep_id), sweep.to_dict())  # complete after every run
    log.info("Sweep %s: queued %d runs", sweep.sweep_id, len(points))
    return sweep


def list_sweeps(store: RunStore) -> list[Sweep]:
    """All sweeps of a run store, newest first."""
    folder = _sweeps_dir(store)
    if not folder.is_dir():
        return []
    sweeps = []
    for path in folder.glob("*.json"):
        data = read_json(path, None)
        if isinstance(data, dict) and "sweep_id" in data:
            sweeps.append(Sweep.from_dict(data))
    return sorted(sweeps, key=lambda s: (s.created, s.sweep_id), reverse=True)


def load_sweep(store: RunStore, sweep_id: str) -> Sweep:
    data = read_json(_sweep_path(store, sweep_id), None)
    if not isinstance(data, dict):
        raise SweepError(f"Sweep {sweep_id!r} does not exist in {store.root}.")
    return Sweep.from_dict(data)


def sweep_of(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """{'sweep_id': ..., 'values': {...}} when the run belongs to a sweep, else None."""
    data = store.read_json(run_id, SWEEP_FILE, None)
    return data if isinstance(data, dict) else None


def _best(history: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [h.get(key) for h in history]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(numbers) if numbers else None


def sweep_rows(store: RunStore, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per run: its values, state, epochs and the rankable metrics (None until known)."""
    rows = []
    for entry in sweep.runs:
        run_id = entry["run_id"]
        row: dict[str, Any] = {"run_id": run_id, **entry.get("values", {})}
        try:
            status = store.status(run_id)
            history = store.history(run_id)
            config = read_json(store.file(run_id, "config.json"), {}) or {}
            metrics = store.read_json(run_id, "metrics.json", {}) or {}
        except (RunNotFoundError, FileNotFoundError, ValueError):
            rows.append({**row, "state": "deleted", "epochs_done": 0, "epochs": 0,
                         **{metric: None for metric in RANK_METRICS}})
            continue
        row.update(state=status.get("state", "?"), epochs_done=len(history), epochs=int(config.get("epochs", 0)),
                   best_score=_best(history, "score"),
                   test_macro_f1=(metrics.get("test") or {}).get("macro_f1"))
        for key in ("val_macro_f1", "val_balanced_accuracy", "val_accuracy"):
            row[key] = _best(history, key)
        rows.append(row)
    return rows


def rank_rows(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Rows sorted best first by ``metric``; 'rank' is 1, 2, ... (None for runs without a value yet)."""
    if metric not in RANK_METRICS:
        raise SweepError(f"Unknown ranking metric {metric!r}. Choose one of {', '.join(RANK_METRICS)}.")
    scored = sorted((dict(r) for r in rows if r.get(metric) is not None), key=lambda r: -r[metric])
    for rank, row in enumerate(scored, start=1):
        row["rank"] = rank
    return scored + [{**r, "rank": None} for r in rows if r.get(metric) is None]
