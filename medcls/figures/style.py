"""The shared look of every medcls figure: colours, template and layout.

Plotly draws a little HTML in its texts (``<a href>`` links, ``<b>``, ...). Class names, file names and run
names come from users, so :func:`layout` writes every text of a figure as plain text: a class named
``<a href="https://evil.example">x</a>`` shows as those characters, not as a link.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["SPLIT_COLORS", "PALETTE", "TEMPLATE", "layout", "plain_text"]

SPLIT_COLORS = {"train": "#4C78A8", "val": "#F58518", "test": "#54A24B"}
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC"]
TEMPLATE = "plotly_white"
# As plotly's default, a new figure gets the template without the ~20 ms of validation that an explicit
# template= costs on every figure (most of a live page's render time when many sessions watch a run).
pio.templates.default = TEMPLATE


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if isinstance(value, (list, tuple)) and any(isinstance(v, (str, list, tuple)) for v in value):
        return [_plain(v) for v in value]
    return value


_TRACE_TEXTS = ("name", "text", "hovertext", "x", "y", "labels", "legendgrouptitle")


def plain_text(fig: go.Figure) -> go.Figure:
    """Every user-visible text of ``fig`` as plain text (HTML special characters escaped), in place."""
    for trace in fig.data:
        for attr in _TRACE_TEXTS:
            if attr in trace and attr != "legendgrouptitle":
                value = trace[attr]
                if isinstance(value, (str, list, tuple)):
                    trace[attr] = _plain(value)
    for axis in [k for k in fig.layout if k.startswith(("xaxis", "yaxis"))]:
        title = fig.layout[axis].title
        if title is not None and title.text:
            title.text = _plain(title.text)
    for annotation in fig.layout.annotations or ():
        annotation.text = _plain(annotation.text)
    return fig


def layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    # The legend goes under the plot: above it, it collides with the title and subplot titles.
    plain_text(fig)
    # "Name — note": the note goes on a second line (a subtitle), so a long title is not cut off at the figure's
    # edge in a narrow column (a classroom projector's 1280 px shows two figures side by side).
    head, dash, note = title.partition(" — ")
    # Subplot titles sit just above the plots: under a subtitle they need the room of another line.
    top = 50 + (20 if dash else 0) + (30 if dash and fig.layout.annotations else 0)
    fig.update_layout(title=dict(text=_plain(head), subtitle=dict(text=_plain(note) if dash else "",
                                                                         font=dict(size=13))),
                      height=height + 40, margin=dict(l=40, r=20, t=top, b=95),
                      legend=dict(orientation="h", yanchor="top", y=-0.28, x=0))
    if fig.layout.template is None or pio.templates.default != TEMPLATE:  # someone changed the default
        fig.update_layout(template=TEMPLATE)
    return fig
