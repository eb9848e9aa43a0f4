"""App-only plotly drawing helpers (draw only: values come straight from the audit folder); the charts the
reports share live in :mod:`audit.report.figures`.

Every text that may come from user data (class names, group values) goes through :func:`plot_text`:
plotly.js interprets a subset of HTML tags in labels, so ``<`` ``>`` ``&`` are written as entities and the
name is shown literally.
"""
from __future__ import annotations

import plotly.graph_objects as go

from audit.escaping import plot_text  # the one helper for plotly text (audit/escaping.py)

#: plotly.js options of every app chart: no toolbar (it drew over legends and titles; Streamlit's own element
#: toolbar still offers full screen), no plotly logo.
CONFIG = {"displayModeBar": False, "displaylogo": False}


def _layout(figure: go.Figure, title: str, *, height: int = 380, **kwargs) -> go.Figure:
    figure.update_layout(title=plot_text(title), height=height, margin=dict(l=10, r=10, t=50, b=10),
                         template="plotly_white", **kwargs)
    from audit.report.figures import escape_figure_text

    return escape_figure_text(figure)  # axis, colour-bar and legend titles too (issue 11)


def grouped_bar(series: dict, categories, *, title: str, value_title: str) -> go.Figure:
    """``series``: name -> values (one per category)."""
    figure = go.Figure([go.Bar(name=plot_text(name), x=[plot_text(c) for c in categories], y=list(values))
                        for name, values in series.items()])
    return _layout(figure, title, barmode="group", yaxis_title=value_title, xaxis_type="category")


def heatmap(z, *, x, y, title: str, text=None, colorscale="Blues", zmid=None, x_title: str = "",
            y_title: str = "", colorbar_title: str = "", height: int | None = None, texttemplate=None) -> go.Figure:
    figure = go.Figure(go.Heatmap(z=z, x=[plot_text(v) for v in x], y=[plot_text(v) for v in y],
                                  text=text, texttemplate=texttemplate or ("%{text}" if text is not None else None),
                                  colorscale=colorscale, zmid=zmid, colorbar=dict(title=plot_text(colorbar_title)),
                                  hovertemplate="%{y} x %{x}: %{z}<extra></extra>"))
    _layout(figure, title, height=height or max(320, 40 * len(y) + 140), xaxis_title=x_title, yaxis_title=y_title,
            xaxis_type="category", yaxis_type="category")
    figure.update_yaxes(autorange="reversed")
    return figure
