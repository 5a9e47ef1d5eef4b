"""Plotly builders for the deeper analysis: thresholds, confidence intervals, calibration.

Like the other figure modules, each function takes plain data and returns a
``plotly.graph_objects.Figure``; none reads files or knows Streamlit.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from .style import PALETTE
from .style import layout as _layout

__all__ = ["threshold_sweep_figure", "score_histogram_figure", "interval_figure", "reliability_figure"]

RATE_STYLE = {"sensitivity": ("#E45756", "solid"), "specificity": ("#4C78A8", "solid"),
              "ppv": ("#E45756", "dot"), "npv": ("#4C78A8", "dot")}
RATE_NAMES = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV", "npv": "NPV"}


def _nan_to_none(values: np.ndarray) -> list:
    return [None if v is None or np.isnan(v) else float(v) for v in values]


def threshold_sweep_figure(sweep: Mapping[str, np.ndarray], threshold: float | None = None,
                           title: str = "What each threshold gives") -> go.Figure:
    """Sensitivity, specificity, PPV and NPV against the threshold, with the chosen one marked."""
    fig = go.Figure()
    for key, (color, dash) in RATE_STYLE.items():
        fig.add_scatter(x=list(map(float, sweep["threshold"])), y=_nan_to_none(sweep[key]), mode="lines",
                        name=RATE_NAMES[key], line=dict(color=color, dash=dash, width=2))
    if threshold is not None:
        fig.add_vline(x=threshold, line=dict(color="#333", dash="dash", width=1))
    fig.update_layout(xaxis_title="threshold (flag when P ≥ threshold)", yaxis_title="rate",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.03])
    return _layout(fig, title, height=340)


def score_histogram_figure(scores: np.ndarray, truth: np.ndarray, threshold: float, positive_label: str,
                           negative_label: str, title: str = "Scores of positive and negative images") -> go.Figure:
    """How the positive-group probability is spread for each true group; the threshold splits them."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    fig = go.Figure()
    bins = dict(start=0.0, end=1.0, size=0.05)
    fig.add_histogram(x=scores[~truth].tolist(), name=f"true {negative_label}", xbins=bins,
                      marker_color=PALETTE[0], opacity=0.65)
    fig.add_histogram(x=scores[truth].tolist(), name=f"true {positive_label}", xbins=bins,
                      marker_color=PALETTE[3], opacity=0.65)
    fig.add_vline(x=threshold, line=dict(color="#333", dash="dash", width=1))
    fig.update_layout(barmode="overlay", xaxis_title=f"P({positive_label})", yaxis_title="images",
                      xaxis_range=[0, 1])
    return _layout(fig, title, height=300)


def _interval_items(ci: Mapping) -> list[tuple[str, Mapping | None]]:
    items = [("accuracy", ci.get("accuracy")), ("macro-F1", ci.get("macro_f1"))]
    for name, c in ci.get("per_class", {}).items():
        items.append((f"{name} recall", c.get("recall")))
    for name, c in ci.get("per_class", {}).items():
        items.append((f"{name} AP", c.get("average_precision")))
    return items


def interval_figure(intervals: Mapping[str, Mapping], title: str = "Test metrics with 95% intervals") -> go.Figure:
    """A dot per metric and run with its 95% interval as a horizontal bar (a forest plot)."""
    fig = go.Figure()
    runs = list(intervals)
    offsets = np.linspace(-0.25, 0.25, len(runs)) if len(runs) > 1 else [0.0]
    labels: list[str] = []
    for r, (run_id, ci) in enumerate(intervals.items()):
        items = [(name, c) for name, c in _interval_items(ci) if c]
        if not labels:
            labels = [name for name, _ in _interval_items(ci)]
        ys = [labels.index(name) + offsets[r] if name in labels else None for name, _ in items]
        est = [c["estimate"] for _, c in items]
        low = [c["estimate"] - c["low"] if c.get("low") is not None else 0 for _, c in items]
        high = [c["high"] - c["estimate"] if c.get("high") is not None else 0 for _, c in items]
        text = [f"{name}: {c['estimate']:.3f}" + (f" ({c['low']:.3f}–{c['high']:.3f})" if c.get("low") is not None
                                                  else "") for name, c in items]
        fig.add_scatter(x=est, y=ys, mode="markers", name=run_id, text=text, hoverinfo="text",
                        marker=dict(color=PALETTE[r % len(PALETTE)], size=9),
                        error_x=dict(type="data", symmetric=False, array=high, arrayminus=low, thickness=2))
    fig.update_yaxes(tickvals=list(range(len(labels))), ticktext=labels, autorange="reversed")
    fig.update_layout(xaxis_title="value (bar: 95% interval)", xaxis_range=[0, 1.02])
    return _layout(fig, title, height=max(260, 28 * len(labels) + 110))


def reliability_figure(curves: Mapping[str, Mapping], title: str = "Reliability diagram") -> go.Figure:
    """Observed frequency against mean confidence per bin, one line per run; the diagonal is perfect."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", hoverinfo="skip",
                    line=dict(color="#999", dash="dash", width=1))
    for r, (name, rel) in enumerate(curves.items()):
        points = [(c, o, n) for c, o, n in zip(rel["confidence"], rel["observed"], rel["count"]) if n]
        ece = rel.get("ece")
        fig.add_scatter(
            x=[c for c, _, _ in points], y=[o for _, o, _ in points], mode="lines+markers",
            name=f"{name}  ECE={ece:.3f}" if ece is not None else name,
            text=[f"{n:,} images" for _, _, n in points],
            hovertemplate="confidence %{x:.2f}<br>observed %{y:.2f}<br>%{text}<extra></extra>",
            line=dict(color=PALETTE[r % len(PALETTE)], width=2),
            marker=dict(size=[6 + 14 * np.sqrt(n / max(1, rel["n"])) for _, _, n in points]))
    kind = next(iter(curves.values()), {}).get("kind", "top-label")
    xlabel = "mean confidence (top-class probability)" if kind == "top-label" else "mean predicted probability"
    ylabel = "share correct" if kind == "top-label" else "share of images of that class"
    fig.update_layout(xaxis_title=xlabel, yaxis_title=ylabel, xaxis_range=[0, 1.01], yaxis_range=[0, 1.03])
    return _layout(fig, title + " — marker size: images in the bin", height=380)
