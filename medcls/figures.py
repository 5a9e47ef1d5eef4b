"""Plotly figure builders shared by the app pages and exported run cards.

Each function takes plain data (lists, dicts, arrays) and returns a
``plotly.graph_objects.Figure``; none of them reads files or knows Streamlit.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from .metrics import pr_curve

__all__ = [
    "class_counts_figure",
    "history_figure",
    "recall_figure",
    "confusion_matrix_figure",
    "pr_curves_figure",
    "probability_figure",
    "overlay_history_figure",
    "parameter_bar_figure",
    "sweep_figure",
]

SPLIT_COLORS = {"train": "#4C78A8", "val": "#F58518", "test": "#54A24B"}
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC"]
TEMPLATE = "plotly_white"
# As plotly's default, a new figure gets the template without the ~20 ms of validation that an explicit
# template= costs on every figure (most of a live page's render time when many sessions watch a run).
pio.templates.default = TEMPLATE


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    # The legend goes under the plot: above it, it collides with the title and subplot titles.
    fig.update_layout(title=title, height=height + 40, margin=dict(l=40, r=20, t=50, b=95),
                      legend=dict(orientation="h", yanchor="top", y=-0.28, x=0))
    if fig.layout.template is None or pio.templates.default != TEMPLATE:  # someone changed the default
        fig.update_layout(template=TEMPLATE)
    return fig


def _epoch_tick(history: Sequence[Mapping]) -> int:
    """Whole-epoch ticks, at most about ten of them."""
    return max(1, len(history) // 10)


def class_counts_figure(counts: Mapping[str, Mapping[str, int]], title: str = "Images per class and split") -> go.Figure:
    fig = go.Figure()
    for split, per_class in counts.items():
        fig.add_bar(name=split, x=list(per_class), y=list(per_class.values()), text=list(per_class.values()),
                    textposition="outside", marker_color=SPLIT_COLORS.get(split))
    fig.update_layout(barmode="group", xaxis_title="class", yaxis_title="images")
    return _layout(fig, title)


def history_figure(history: Sequence[Mapping], title: str = "Training curves") -> go.Figure:
    """Loss and accuracy per epoch, train vs validation."""
    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy / macro-F1"))
    series = [
        (1, "train loss", "train_loss", SPLIT_COLORS["train"], None),
        (1, "val loss", "val_loss", SPLIT_COLORS["val"], None),
        (2, "train accuracy", "train_accuracy", SPLIT_COLORS["train"], None),
        (2, "val accuracy", "val_accuracy", SPLIT_COLORS["val"], None),
        (2, "val macro-F1", "val_macro_f1", SPLIT_COLORS["val"], "dot"),
    ]
    for col, name, key, color, dash in series:
        fig.add_trace(go.Scatter(x=epochs, y=[h.get(key) for h in history], name=name, mode="lines+markers",
                                 line=dict(color=color, dash=dash)), row=1, col=col)
    best = [h["epoch"] for h in history if h.get("best")]
    if best:
        for col in (1, 2):
            fig.add_vline(x=best[-1], line=dict(color="#888", dash="dash", width=1), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=_epoch_tick(history))
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    return _layout(fig, title)


def recall_figure(history: Sequence[Mapping], focus_class: str = "",
                  title: str = "Validation recall per class") -> go.Figure:
    fig = go.Figure()
    classes = list(history[-1].get("val_recall", {})) if history else []
    for i, name in enumerate(classes):
        focus = name == focus_class
        fig.add_scatter(x=[h["epoch"] for h in history], y=[h["val_recall"].get(name) for h in history],
                        name=name + (" (focus)" if focus else ""), mode="lines+markers",
                        line=dict(width=4 if focus else 2, color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(xaxis_title="epoch", yaxis_title="recall", yaxis_range=[0, 1.02])
    fig.update_xaxes(dtick=_epoch_tick(history))
    return _layout(fig, title)


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], normalize: bool = False,
                            title: str = "Confusion matrix") -> go.Figure:
    """Rows: true class; columns: predicted class. ``normalize`` divides each row by its total."""
    cm = np.asarray(matrix, dtype=float)
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        z = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
        text = [[f"{v:.0%}" for v in row] for row in z]
    else:
        z = cm
        text = [[f"{int(v)}" for v in row] for row in cm]
    fig = go.Figure(go.Heatmap(z=z, x=list(classes), y=list(classes), text=text, texttemplate="%{text}",
                               colorscale="Blues", showscale=False, zmin=0,
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"))
    fig.update_xaxes(title_text="predicted", side="bottom")
    fig.update_yaxes(title_text="true", autorange="reversed")
    return _layout(fig, title, height=340)


def pr_curves_figure(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], focus_class: str = "",
                     title: str = "Precision-recall (one vs rest)") -> go.Figure:
    """One curve per class with AP in the legend; dashed lines show each class's chance level."""
    fig = go.Figure()
    for i, name in enumerate(classes):
        curve = pr_curve(y_true, probs, i)
        if curve["average_precision"] is None:
            continue
        focus = name == focus_class
        color = PALETTE[i % len(PALETTE)]
        fig.add_scatter(x=curve["recall"], y=curve["precision"], mode="lines", line_shape="hv",
                        name=f"{name}{' (focus)' if focus else ''}  AP={curve['average_precision']:.2f}",
                        line=dict(color=color, width=4 if focus else 2), opacity=1.0 if focus or not focus_class else 0.7)
        fig.add_scatter(x=[0, 1], y=[curve["prevalence"]] * 2, mode="lines", showlegend=False, hoverinfo="skip",
                        line=dict(color=color, dash="dash", width=1), name=f"chance {name}")
    fig.update_layout(xaxis_title="recall", yaxis_title="precision", xaxis_range=[0, 1.01], yaxis_range=[0, 1.03])
    return _layout(fig, title + " — dashed: chance level", height=380)


def probability_figure(probabilities: Mapping[str, float], title: str = "Class probabilities") -> go.Figure:
    names = list(probabilities)
    values = [probabilities[n] for n in names]
    top = int(np.argmax(values)) if values else -1
    colors = [PALETTE[0] if i == top else "#BBBBBB" for i in range(len(names))]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=colors,
                           text=[f"{v:.1%}" for v in values], textposition="auto"))
    fig.update_layout(xaxis_range=[0, 1], xaxis_title="probability", yaxis_autorange="reversed")
    return _layout(fig, title, height=120 + 40 * len(names))


def overlay_history_figure(histories: Mapping[str, Sequence[Mapping]], key: str = "val_macro_f1",
                           title: str | None = None) -> go.Figure:
    """The same curve for several runs, overlaid."""
    fig = go.Figure()
    for i, (name, history) in enumerate(histories.items()):
        fig.add_scatter(x=[h["epoch"] for h in history], y=[h.get(key) for h in history], name=name,
                        mode="lines+markers", line=dict(color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(xaxis_title="epoch", yaxis_title=key.replace("_", " "))
    fig.update_xaxes(dtick=_epoch_tick(max(histories.values(), key=len, default=[])))
    return _layout(fig, title or key.replace("_", " "))


def parameter_bar_figure(layers: Sequence[tuple[str, int]], title: str = "Parameters per layer") -> go.Figure:
    names = [n for n, _ in layers]
    counts = [c for _, c in layers]
    total = max(1, sum(counts))
    fig = go.Figure(go.Bar(x=counts, y=names, orientation="h", marker_color=PALETTE[0],
                           text=[f"{c:,} ({c / total:.0%})" for c in counts], textposition="auto"))
    fig.update_layout(xaxis_title="parameters", yaxis_autorange="reversed")
    return _layout(fig, title, height=max(260, 30 * len(names) + 100))


def sweep_figure(axes: Sequence[tuple[str, Sequence[str]]], cells: Mapping[tuple[str, ...], float | None],
                 metric: str, title: str = "Sweep results") -> go.Figure:
    """A sweep's metric per combination: bars for one setting, a heatmap for two (blank until known).

    ``axes`` is [(setting name, [value, ...]), ...]; ``cells`` maps a tuple of values (one per axis) to the metric.
    """
    fig = go.Figure()
    if len(axes) == 1:
        name, values = axes[0]
        scores = [cells.get((v,)) for v in values]
        fig.add_bar(x=list(values), y=scores, marker_color=PALETTE[0],
                    text=["" if s is None else f"{s:.3f}" for s in scores], textposition="auto")
        fig.update_layout(xaxis_title=name, yaxis_title=metric, xaxis_type="category")
        return _layout(fig, title)
    (x_name, x_values), (y_name, y_values) = axes[:2]
    z = [[cells.get((x, y)) for x in x_values] for y in y_values]
    fig.add_heatmap(x=list(x_values), y=list(y_values), z=z, colorscale="Viridis", colorbar=dict(title=metric),
                    text=[["" if v is None else f"{v:.3f}" for v in row] for row in z], texttemplate="%{text}",
                    hovertemplate=f"{x_name}: %{{x}}<br>{y_name}: %{{y}}<br>{metric}: %{{z:.3f}}<extra></extra>")
    fig.update_layout(xaxis_title=x_name, yaxis_title=y_name, xaxis_type="category", yaxis_type="category")
    return _layout(fig, title, height=max(300, 90 * len(y_values) + 140))
