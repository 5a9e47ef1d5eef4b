"""Comparing runs: a metrics table, the settings that differ, and whether the runs are comparable at all."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..config import TrainConfig, differences, format_value
from ..config.table import option_table
from .metrics import SplitMetrics

if TYPE_CHECKING:
    from ..runs.records import ModelRecord
    from ..runs.results import CrossValidation

__all__ = ["metrics_rows", "as_trained", "read_alike", "config_rows", "Comparability", "comparability"]


def metrics_rows(metrics: Mapping[str, SplitMetrics], names: Mapping[str, str] | None = None,
                 focus_class: str = "") -> list[dict[str, Any]]:
    """One flat row per run: the focus class first (what a reader looks for, visible without scrolling), then
    the overall metrics, then the other classes. Every row has every column; a run without a class has None
    there (shown as '–')."""
    names = names or {}
    rows = []
    for run_id, m in metrics.items():
        row: dict[str, Any] = {"run": names.get(run_id, run_id)}
        focus = m.per_class.get(focus_class)
        if focus_class:
            row.update({f"{focus_class} recall": focus.recall if focus else None,
                        f"{focus_class} precision": focus.precision if focus else None,
                        f"{focus_class} F1": focus.f1 if focus else None})
        row.update({"macro-F1": m.macro_f1, "balanced accuracy": m.balanced_accuracy, "accuracy": m.accuracy,
                    "macro AP": m.macro_average_precision})
        if focus_class:
            row[f"{focus_class} AP"] = focus.average_precision if focus else None
        for name, c in m.per_class.items():
            if name == focus_class:
                continue
            row[f"{name} recall"] = c.recall
            row[f"{name} precision"] = c.precision
            row[f"{name} F1"] = c.f1
            row[f"{name} AP"] = c.average_precision
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{c: row.get(c) for c in columns} for row in rows]


def as_trained(cfg: TrainConfig, record: "ModelRecord | None", cv: "CrossValidation | None") -> TrainConfig:
    """``cfg`` with what its run chose for the data: *Image size* 0 as the size its model record says it trained at,
    and 0 folds as the fold (or bagged) models of its automatic ensemble, for runs recorded before plan.json (newer
    runs: ``RunStore.trained_config``). Runs are compared by what they trained: a run given
    128 px and one that chose 128 px trained alike, while one that chose 192 px as 3 fold models did not (a run that
    has not chosen yet stays as saved)."""
    chosen: dict[str, int] = {}
    if not cfg.image_size and record is not None:
        chosen["image_size"] = record.image_size
    if not cfg.folds and not cfg.bagged_models and (
            folds := cv.folds if cv is not None else record.folds if record is not None else 0):
        chosen["bagged_models" if record is not None and record.bagged else "folds"] = folds
    return cfg.with_options(**chosen) if chosen else cfg


def read_alike(configs: Mapping[str, TrainConfig]) -> dict[str, TrainConfig]:
    """``configs`` with the first one's data source for all, to compare runs that read the same images (one
    fingerprint) from different places: a file and its upload, or a folder and its copy. Where they read them is
    no difference in what they learned."""
    source = next(iter(configs.values())).data.source if configs else ""
    return {run: replace(cfg, data=replace(cfg.data, source=source)) for run, cfg in configs.items()}


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
            rows.append({"setting": spec.label, **{names.get(rid, rid): format_value(applicable[rid][name], name)
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
        same_name = len(names) < len(prints)
        which = ", ".join(names) + (" (the same name, but different images or splits)" if same_name else "")
        messages.append(f"These runs were tested on different data: {which}. Their test numbers answer "
                        "different questions and cannot be compared directly.")
    if len(class_lists) > 1:
        messages.append("These runs have different class lists (" + "; ".join(", ".join(c) for c in
                                                                              sorted(class_lists))
                        + "). A class a run does not have shows '–' for that run.")
    return Comparability(len(prints) <= 1, len(class_lists) <= 1, names, tuple(messages))
