"""Comparing runs: a metrics table and the differences between configs, in words."""

from __future__ import annotations

from typing import Any, Mapping

from .config import TrainConfig, format_value, iter_options
from .runs import RunStore

__all__ = ["metrics_rows", "config_rows", "describe_differences", "DIFF_WORDS"]

# How options read in a sentence ("conv blocks 4 → 3, batch norm off → on").
DIFF_WORDS = {
    "name": "model", "blocks": "conv blocks", "filters": "first-block filters", "growth": "filter growth",
    "kernel_size": "kernel size", "batch_norm": "batch norm", "head": "head", "fc_widths": "FC widths",
    "dropout": "dropout", "lr": "learning rate", "image_size": "image size", "imbalance": "imbalance strategy",
    "select_metric": "best-epoch metric", "source": "data",
}


def metrics_rows(store: RunStore, run_ids: list[str], split: str = "test") -> list[dict[str, Any]]:
    """One flat row of test metrics per run, for a table."""
    rows = []
    for run_id in run_ids:
        m = (store.read_json(run_id, "metrics.json", {}) or {}).get(split)
        if not m:
            continue
        row: dict[str, Any] = {"run": run_id, "accuracy": m["accuracy"], "balanced accuracy": m["balanced_accuracy"],
                               "macro-F1": m["macro_f1"], "macro AP": m["macro_average_precision"]}
        for name, c in m["per_class"].items():
            row[f"{name} precision"] = c["precision"]
            row[f"{name} recall"] = c["recall"]
            row[f"{name} F1"] = c["f1"]
            row[f"{name} AP"] = c["average_precision"]
        rows.append(row)
    return rows


def _resolved(cfg: TrainConfig, model_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flat options with architecture values filled in from the preset, so diffs name real values."""
    flat = cfg.flat()
    if model_info and model_info.get("architecture"):
        for key, value in model_info["architecture"].items():
            if key in flat and flat[key] is None:
                flat[key] = value
    return flat


def config_rows(configs: Mapping[str, TrainConfig], model_infos: Mapping[str, Mapping] | None = None
                ) -> list[dict[str, Any]]:
    """Options whose values differ between the runs: one row per option, one column per run."""
    flats = {rid: _resolved(cfg, (model_infos or {}).get(rid)) for rid, cfg in configs.items()}
    names = [name for name, _, _ in iter_options()]
    rows = []
    for name in names:
        values = [flats[rid].get(name) for rid in flats]
        if len({repr(v) for v in values}) > 1:
            rows.append({"option": name, **{rid: format_value(v) for rid, v in zip(flats, values)}})
    return rows


def describe_differences(a: TrainConfig, b: TrainConfig, info_a: Mapping | None = None,
                         info_b: Mapping | None = None) -> str:
    """'conv blocks 4 → 3, batch norm off → on' (a → b); 'same settings' when nothing differs."""
    fa, fb = _resolved(a, info_a), _resolved(b, info_b)
    parts = [f"{DIFF_WORDS.get(n, n.replace('_', ' '))} {format_value(fa[n])} → {format_value(fb[n])}"
             for n in fa if repr(fa[n]) != repr(fb[n])]
    return ", ".join(parts) if parts else "same settings"

