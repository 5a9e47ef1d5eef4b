"""Comparing runs: a metrics table, the settings that differ, and whether the runs are comparable at all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..config import TrainConfig, differences, format_value
from ..config.table import option_table
from .metrics import SplitMetrics

__all__ = ["metrics_rows", "config_rows", "Comparability", "comparability"]


def metrics_rows(metrics: Mapping[str, SplitMetrics], names: Mapping[str, str] | None = None,
                 focus_class: str = "") -> list[dict[str, Any]]:
    """One flat row per run (keyed by run id): overall metrics, then the focus class, then the other classes."""
    names = names or {}
    rows = []
    for run_id, m in metrics.items():
        row: dict[str, Any] = {"run": names.get(run_id, run_id), "accuracy": m.accuracy,
                               "balanced accuracy": m.balanced_accuracy, "macro-F1": m.macro_f1,
                               "macro AP": m.macro_average_precision}
        ordered = sorted(m.per_class.items(), key=lambda item: item[0] != focus_class)
        for name, c in ordered:
            row[f"{name} recall"] = c.recall
            row[f"{name} precision"] = c.precision
            row[f"{name} F1"] = c.f1
            row[f"{name} AP"] = c.average_precision
        rows.append(row)
    return rows


def config_rows(configs: Mapping[str, TrainConfig], names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The settings whose values differ between the runs (among those that apply): one row per setting,
    one column per run (named by ``names``)."""
    names = names or {}
    ids = list(configs)
    if len(ids) < 2:
        return []
    applicable = {rid: cfg.applicable() for rid, cfg in configs.items()}
    differing = {d.name for a, b in zip(ids, ids[1:]) for d in differences(configs[a], configs[b])}
    if any(configs[r].model != configs[ids[0]].model for r in ids):
        differing.add("model")
    rows = []
    for name, spec in option_table().items():
        if name in differing:
            rows.append({"setting": spec.label, **{names.get(rid, rid): format_value(applicable[rid][name])
                                                   if name in applicable[rid] else "not used" for rid in ids}})
    return rows


@dataclass(frozen=True)
class Comparability:
    """Whether runs were tested on the same images with the same classes, and what to say when not."""

    same_data: bool
    same_classes: bool
    datasets: tuple[str, ...]
    messages: tuple[str, ...]


def comparability(datasets: Mapping[str, str], fingerprints: Mapping[str, str],
                  classes: Mapping[str, Sequence[str]]) -> Comparability:
    """Compare the runs' data (by fingerprint; names for the message) and class lists."""
    prints = {fingerprints[r] for r in fingerprints}
    class_lists = {tuple(classes[r]) for r in classes}
    names = tuple(dict.fromkeys(datasets.values()))
    messages = []
    if len(prints) > 1:
        messages.append("These runs were tested on different data (" + ", ".join(names) + "). Their test "
                        "numbers answer different questions and cannot be compared directly.")
    if len(class_lists) > 1:
        messages.append("These runs have different class lists (" + "; ".join(", ".join(c) for c in class_lists)
                        + "). Per-class results are shown only for classes a run has.")
    return Comparability(len(prints) <= 1, len(class_lists) <= 1, names, tuple(messages))
