"""App-side plotly drawing helpers (draw only: values come straight from the audit folder).

Every text that may come from user data (class names, group values) goes through :func:`plot_text`:
plotly.js interprets a subset of HTML tags in labels, so ``<`` ``>`` ``&`` are written as entities and the
name is shown literally.
"""
from __future__ import annotations

import plotly.graph_objects as go

#: Colours of the contract verdicts.
VERDICT_COLOURS = {"worse_than_rest": "#d62728", "no_evidence_of_gap": "#1f77b4", "insufficient_data": "#b0b0b0",
                   "": "#6b6b6b"}
VERDICT_NAMES = {"worse_than_rest": "worse than rest", "no_evidence_of_gap": "no evidence of gap",
                 "insufficient_data": "insufficient data (small group)", "": "overall / not tested"}


def plot_text(value) -> str:
    """``value`` as text plotly shows literally (no tags interpreted)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _floats(values) -> list:
    """Plain floats (None for missing/NaN), whatever sequence type came in."""
    out = []
    for value in list(values):
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = None
        out.append(None if value is None or value != value else value)
    return out


def _layout(figure: go.Figure, title: str, *, height: int = 380, **kwargs) -> go.Figure:
    figure.update_layout(title=plot_text(title), height=height, margin=dict(l=10, r=10, t=50, b=10),
                         template="plotly_white", **kwargs)
    return figure


def bar(categories, values, *, title: str, value_title: str, text=None, percent: bool = False,
        height: int = 380) -> go.Figure:
    figure = go.Figure(go.Bar(x=[plot_text(c) for c in categories], y=list(values),
                              text=text, textposition="auto" if text is not None else None,
                              hovertemplate="%{x}: %{y}<extra></extra>"))
    _layout(figure, title, height=height, yaxis_title=value_title, xaxis_type="category")
    if percent:
        figure.update_yaxes(tickformat=".0%")
    return figure


def grouped_bar(series: dict, categories, *, title: str, value_title: str) -> go.Figure:
    """``series``: name -> values (one per category)."""
    figure = go.Figure([go.Bar(name=plot_text(name), x=[plot_text(c) for c in categories], y=list(values))
                        for name, values in series.items()])
    return _layout(figure, title, barmode="group", yaxis_title=value_title, xaxis_type="category")


def interval_bars(groups, values, lows, highs, *, title: str, value_title: str, verdicts=None, ns=None,
                  reference: float | None = None, reference_name: str = "overall", percent: bool = True,
                  small=None, height: int = 420) -> go.Figure:
    """Bars with interval error bars; bars coloured by verdict; small groups hatched and named in the label.

    ``lows``/``highs`` are the interval ends as stored; plotly wants their distances from the value.
    """
    groups = [plot_text(g) for g in groups]
    values, lows, highs = _floats(values), _floats(lows), _floats(highs)
    verdicts = list(verdicts) if verdicts is not None else [""] * len(groups)
    small = [bool(s) for s in small] if small is not None else [False] * len(groups)
    ns = list(ns) if ns is not None else [None] * len(groups)
    labels = [f"{g} (n={n})" if n is not None else g for g, n in zip(groups, ns)]
    labels = [f"{label} [small]" if is_small else label for label, is_small in zip(labels, small)]
    figure = go.Figure()
    for verdict in dict.fromkeys(verdicts):
        index = [i for i, v in enumerate(verdicts) if v == verdict]
        figure.add_trace(go.Bar(
            name=VERDICT_NAMES.get(verdict, plot_text(verdict)), x=[labels[i] for i in index],
            y=[values[i] for i in index],
            error_y=dict(type="data", symmetric=False,
                         array=[(highs[i] - values[i]) if highs[i] is not None and values[i] is not None else 0
                                for i in index],
                         arrayminus=[(values[i] - lows[i]) if lows[i] is not None and values[i] is not None else 0
                                     for i in index]),
            marker=dict(color=VERDICT_COLOURS.get(verdict, "#6b6b6b"),
                        pattern=dict(shape=["/" if small[i] else "" for i in index])),
            customdata=[[lows[i], highs[i]] for i in index],
            hovertemplate="%{x}<br>value %{y:.4f}<br>interval %{customdata[0]:.4f} - %{customdata[1]:.4f}"
                          "<extra></extra>"))
    if reference is not None:
        figure.add_hline(y=reference, line_dash="dash", line_color="#444",
                         annotation_text=f"{reference_name}: {reference:.1%}" if percent else
                         f"{reference_name}: {reference:.4g}")
    _layout(figure, title, height=height, yaxis_title=value_title, xaxis_type="category", barmode="overlay",
            legend_title_text="verdict")
    if percent:
        figure.update_yaxes(tickformat=".0%")
    return figure


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
