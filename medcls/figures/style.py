"""The shared look of every medcls figure: colours, template and layout."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["SPLIT_COLORS", "PALETTE", "TEMPLATE", "layout"]

SPLIT_COLORS = {"train": "#4C78A8", "val": "#F58518", "test": "#54A24B"}
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC"]
TEMPLATE = "plotly_white"
# As plotly's default, a new figure gets the template without the ~20 ms of validation that an explicit
# template= costs on every figure (most of a live page's render time when many sessions watch a run).
pio.templates.default = TEMPLATE


def layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    # The legend goes under the plot: above it, it collides with the title and subplot titles.
    fig.update_layout(title=title, height=height + 40, margin=dict(l=40, r=20, t=50, b=95),
                      legend=dict(orientation="h", yanchor="top", y=-0.28, x=0))
    if fig.layout.template is None or pio.templates.default != TEMPLATE:  # someone changed the default
        fig.update_layout(template=TEMPLATE)
    return fig
