"""Figures of a model's test results: confusion matrices, precision-recall curves, probabilities, class counts.

Each function takes plain data (lists, dicts, arrays) and returns a
``plotly.graph_objects.Figure``; none of them reads files or knows Streamlit.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..analysis.metrics import pr_curve, probability_percent
from .style import PALETTE, SPLIT_COLORS
from .style import layout as _layout

__all__ = ["class_counts_figure", "confusion_matrix_figure", "pr_curves_figure", "probability_figure"]


def class_counts_figure(counts: Mapping[str, Mapping[str, int]], title: str = "Images per class and split") -> go.Figure:
    fig = go.Figure()
    for split, per_class in counts.items():
        fig.add_bar(name=split, x=list(per_class), y=list(per_class.values()), text=list(per_class.values()),
                    textposition="outside", marker_color=SPLIT_COLORS.get(split))
    fig.update_layout(barmode="group", xaxis_title="class", yaxis_title="images")
    return _layout(fig, title)


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], normalize: bool = False,
                            title: str = "Confusion matrix", clickable: bool = False,
                            selected: tuple[int, int] | None = None) -> go.Figure:
    """Rows: true class; columns: predicted class. ``normalize`` divides each row by its total.

    ``clickable`` lays one invisible point on every cell, carrying ``customdata`` = (true index, predicted
    index): Plotly reports clicks on points, not on heatmap cells, so the points are what a click selects.
    A selected cell is outlined: the one ``selected`` names (true index, predicted index), or the one clicked.
    """
    cm = np.asarray(matrix, dtype=float)
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        z = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
        text = [[f"{v:.0%}" for v in row] for row in z]
    else:
        z = cm
        text = [[f"{int(v)}" for v in row] for row in cm]
    k = len(classes)
    fig = go.Figure(go.Heatmap(z=z, x=list(classes), y=list(classes), text=text, texttemplate="%{text}",
                               # the counts are what a class reads, also from afar; smaller in many classes' cells
                               textfont=dict(size=16 if k <= 6 else 12),
                               colorscale="Blues", showscale=False, zmin=0,
                               hoverinfo="skip" if clickable else None,
                               hovertemplate=None if clickable else "true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"))
    if clickable:
        cells = [(t, p) for t in range(k) for p in range(k)]
        fig.add_scatter(
            x=[classes[p] for _, p in cells], y=[classes[t] for t, _ in cells], mode="markers",
            customdata=[[t, p] for t, p in cells], text=[text[t][p] for t, p in cells], showlegend=False,
            name="cells", marker=dict(symbol="square-open", size=max(18, 150 // max(k, 1)), color="#E45756",
                                      opacity=0, line=dict(width=4)),
            selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=0)),
            selectedpoints=[cells.index(selected)] if selected in cells else None,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<br>click to see these images<extra></extra>")
        # A click anywhere in a cell picks that cell's point (the nearest one), not only a click on the point.
        fig.update_layout(hovermode="closest", hoverdistance=-1, clickmode="event+select", dragmode=False)
    fig.update_xaxes(title_text="predicted", side="bottom")
    fig.update_yaxes(title_text="true", autorange="reversed")
    # Three classes fit 340 px; ten get rows of about 30 px, tall enough for a count and a class name.
    return _layout(fig, title, height=max(340, 130 + 30 * k))


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
                           text=[probability_percent(v) for v in values], textposition="auto"))
    fig.update_layout(xaxis_range=[0, 1], xaxis_title="probability", yaxis_autorange="reversed")
    return _layout(fig, title, height=120 + 40 * len(names))
