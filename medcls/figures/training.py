"""Figures of training: loss and accuracy curves, per-class recall, parameters per layer, sweep grids.

Each function takes plain data (lists, dicts, arrays) and returns a
``plotly.graph_objects.Figure``; none of them reads files or knows Streamlit.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..runs.records import EpochRecord
from .style import PALETTE, SPLIT_COLORS
from .style import layout as _layout

__all__ = ["validated", "history_figure", "recall_figure", "overlay_history_figure", "parameter_bar_figure",
           "sweep_figure", "epoch_tick", "CURVE_NAMES"]


def epoch_tick(epochs: int, most: int = 6) -> int:
    """A step of whole epochs (1, 2, 5, 10, 20, 50, ...) that puts at most ``most`` labels on the axis."""
    step = 1
    while -(-max(epochs, 1) // step) > most:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1, 2, 5, 10, 20, 50, ...
    return step


def _epoch_axis(fig: go.Figure, epochs: int, most: int = 6) -> None:
    fig.update_xaxes(tick0=0, dtick=epoch_tick(epochs, most), tickformat="d")


def validated(history: Sequence[EpochRecord]) -> bool:
    """Whether these epochs were validated (a run without validation images has training curves only)."""
    return bool(history) and history[-1].validated


def history_figure(history: Sequence[EpochRecord], title: str = "Training curves") -> go.Figure:
    """Loss and accuracy per epoch, train vs validation (training only when the run had no validation images)."""
    epochs = [h.epoch for h in history]
    # Without validation there is no macro-F1 to draw: the panel is named for what it shows.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy / macro-F1" if validated(history)
                                                        else "accuracy"))
    series = [
        (1, "training loss", "train_loss", SPLIT_COLORS["train"], None),
        (1, "validation loss", "val_loss", SPLIT_COLORS["val"], None),
        (2, "training accuracy", "train_accuracy", SPLIT_COLORS["train"], None),
        (2, "validation accuracy", "val_accuracy", SPLIT_COLORS["val"], None),
        (2, "validation macro-F1", "val_macro_f1", SPLIT_COLORS["val"], "dot"),
    ]
    if not validated(history):
        series = [s for s in series if not s[2].startswith("val_")]
        title += " — training only: no validation images"  # a subtitle (style.layout): the title stays whole
    for col, name, key, color, dash in series:
        fig.add_trace(go.Scatter(x=epochs, y=[getattr(h, key) for h in history], name=name, mode="lines+markers",
                                 line=dict(color=color, dash=dash)), row=1, col=col)
    best = [h.epoch for h in history if h.best]
    if best:
        for col in (1, 2):
            fig.add_vline(x=best[-1], line=dict(color="#888", dash="dash", width=1), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    _epoch_axis(fig, len(history), most=5)  # two panels side by side: fewer labels each
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    return _layout(fig, title)


def recall_figure(history: Sequence[EpochRecord], focus_class: str = "",
                  title: str = "Validation recall per class") -> go.Figure:
    fig = go.Figure()
    classes = list(history[-1].val_recall) if validated(history) else []
    for i, name in enumerate(classes):
        focus = name == focus_class
        fig.add_scatter(x=[h.epoch for h in history], y=[h.val_recall.get(name) for h in history],
                        name=name + (" (focus)" if focus else ""), mode="lines+markers",
                        line=dict(width=4 if focus else 2, color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(xaxis_title="epoch", yaxis_title="recall", yaxis_range=[0, 1.02])
    _epoch_axis(fig, len(history))
    return _layout(fig, title)


CURVE_NAMES = {"val_macro_f1": "validation macro-F1", "val_accuracy": "validation accuracy",
               "val_balanced_accuracy": "validation balanced accuracy", "val_loss": "validation loss",
               "train_loss": "training loss", "train_accuracy": "training accuracy"}


def overlay_history_figure(histories: Mapping[str, Sequence[EpochRecord]], key: str = "val_macro_f1",
                           title: str | None = None, axis_title: str | None = None) -> go.Figure:
    """The same curve for several runs (or a run's folds), overlaid; the legend names each, one curve too."""
    fig = go.Figure()
    for i, (name, history) in enumerate(histories.items()):
        unvalidated = key.startswith("val_") and not validated(history)
        fig.add_scatter(x=[h.epoch for h in history], y=[None if unvalidated else getattr(h, key) for h in history],
                        name=name + (" (no validation images)" if unvalidated else ""),
                        mode="lines+markers", line=dict(color=PALETTE[i % len(PALETTE)]))
    words = CURVE_NAMES.get(key, key.replace("_", " "))
    # Plotly hides the legend of a single curve: then nothing would say which run (or fold) it is.
    fig.update_layout(xaxis_title="epoch", yaxis_title=axis_title or words, showlegend=True)
    _epoch_axis(fig, max((len(h) for h in histories.values()), default=0))
    return _layout(fig, title or words[:1].upper() + words[1:])


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
