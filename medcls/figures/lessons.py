"""A lesson's runs side by side: the lesson's metric per run with its 95% interval.

Plain data in (:class:`medcls.experiments.conclusions.RunResult`), a Plotly figure out.
Runs without a result yet keep their place on the axis, empty, so the chart does
not reshuffle as runs finish.
"""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from ..experiments.conclusions import RunResult
from .style import PALETTE
from .style import layout as _layout

__all__ = ["lesson_figure"]
_WORDS = {"pending": "not yet", "missing": "deleted", "finished": "no result"}


def lesson_figure(results: Sequence[RunResult], metric: str, title: str = "Results on the test images") -> go.Figure:
    labels = [r.label for r in results]
    values = [r.estimate if r.usable else None for r in results]
    up = [(r.high - r.estimate) if r.usable and r.high is not None else 0 for r in results]
    down = [(r.estimate - r.low) if r.usable and r.low is not None else 0 for r in results]
    text = [f"{v:.2f}" if v is not None else _WORDS.get(r.outcome, r.outcome) for v, r in zip(values, results)]
    fig = go.Figure()
    fig.add_bar(x=labels, y=values, marker_color=PALETTE[0], text=text, textposition="outside",
                error_y=dict(type="data", array=up, arrayminus=down, visible=True),
                hovertemplate="%{x}: %{y:.3f}<extra></extra>", name=metric)
    fig.update_layout(xaxis_title="run", yaxis_title=f"{metric} (bars: 95% interval)", xaxis_type="category",
                      yaxis_range=[0, 1.1], showlegend=False)
    return _layout(fig, title)
