"""Plotly figures of an audit, shared by the Streamlit app and the reports (HTML interactive, PDF static).

Every function is pure: plain data read from the audit folder in (dicts from ``audit.json``, rows of
``group_metrics.parquet`` as a DataFrame), a :class:`plotly.graph_objects.Figure` out. Nothing is computed
here except choosing what to show (top N + "others" for long lists). Text from user data (class names,
attribute values) is HTML-escaped before it reaches plotly, which otherwise interprets a subset of HTML tags
in labels.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from audit.display import attribute_label, group_ranks, group_sort_key, is_ordinal, metric_label
# plotly text: the one escaping helper of that output kind (audit/escaping.py), under the names used here
from audit.escaping import plot_no_markup as no_markup, plot_text as label  # noqa: F401

#: Colours of the group_metrics verdict words.
VERDICT_COLOURS = {"worse_than_rest": "#c0392b", "no_evidence_of_gap": "#2e6da4", "insufficient_data": "#9e9e9e",
                   "": "#2e6da4"}
VERDICT_LABELS = {"worse_than_rest": "worse than the rest", "no_evidence_of_gap": "no evidence of a gap",
                  "insufficient_data": "insufficient data", "": "not tested"}
BAR_COLOUR = "#2e6da4"
OTHERS_COLOUR = "#b0b0b0"
FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=11)


def escape_figure_text(fig: go.Figure) -> go.Figure:
    """Escape every title of ``fig`` (figure, axes, colour bars, legend) and every trace name, whatever built
    it: a column named ``<a href="https://evil.example">Click</a>`` must not become a live link."""
    if fig.layout.title and fig.layout.title.text is not None:
        fig.layout.title.text = no_markup(fig.layout.title.text)

    def axis(a):
        if a.title and a.title.text is not None:
            a.title.text = no_markup(a.title.text)

    fig.for_each_xaxis(axis)
    fig.for_each_yaxis(axis)
    if fig.layout.legend and fig.layout.legend.title and fig.layout.legend.title.text is not None:
        fig.layout.legend.title.text = no_markup(fig.layout.legend.title.text)
    for trace in fig.data:
        if getattr(trace, "name", None) is not None:
            trace.name = no_markup(trace.name)
        for key in ("x", "y"):  # category labels (ticks) are rendered as markup too
            values = getattr(trace, key, None)
            if values is not None and len(values) and any(isinstance(v, str) and ("<" in v or ">" in v)
                                                          for v in values):
                setattr(trace, key, [no_markup(v) if isinstance(v, str) else v for v in values])
        colorbar = getattr(trace, "colorbar", None)
        if colorbar is not None and colorbar.title and colorbar.title.text is not None:
            colorbar.title.text = no_markup(colorbar.title.text)
    return fig


def sort_rows(frame: pd.DataFrame, by: str | None = None, *, ascending: bool = True,
              column: str = "group") -> pd.DataFrame:
    """``frame`` sorted by ``by`` (None: by ``column`` alone), ties in the natural order of ``column``
    (:func:`audit.display.group_sort_key`: ``0-2, 3-9, 10-19``, never as text)."""
    ranks = frame[column].map(group_ranks(frame[column])) if len(frame) else frame[column]
    keys = ([by] if by else []) + ["_natural_rank"]
    order = ([ascending] if by else []) + [True]
    return frame.assign(_natural_rank=ranks).sort_values(keys, ascending=order, na_position="last",
                                                         kind="mergesort").drop(columns="_natural_rank")


def order_metric_rows(rows: pd.DataFrame, *, higher_is_better: bool | None = True, top_n: int | None = None
                      ) -> pd.DataFrame:
    """group_metrics rows of one attribute as every view lists them: worst first (ties in natural group
    order), except an ordinal attribute (age bins, pixel bins) that fits in ``top_n``: natural order, so a
    trend reads from top to bottom."""
    if (top_n is None or len(rows) <= top_n) and is_ordinal(rows["group"]):
        return sort_rows(rows)
    return sort_rows(rows, "value", ascending=higher_is_better is not False)


def groups_in_display_order(groups: Sequence[Mapping]) -> list:
    """``attribute_distribution`` groups as every view lists them: attributes whose values are numbers or
    ranges (age bins) or pixel bins in their natural order; others largest first, ties in natural order."""
    names = [g["group"] for g in groups]
    if is_ordinal(names):
        return sorted(groups, key=lambda g: group_sort_key(g["group"]))
    return sorted(groups, key=lambda g: (-g["n"], group_sort_key(g["group"])))


def _layout(fig: go.Figure, *, title: str, height: int, xaxis: dict | None = None, yaxis: dict | None = None,
            showlegend: bool = False) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=13)), height=height,
                      margin=dict(l=10, r=20, t=40, b=30), font=FONT, template="plotly_white",
                      showlegend=showlegend)
    if showlegend and not (fig.layout.legend and fig.layout.legend.orientation == "v"):
        # one row of legend between the title and the plot, left-aligned under the title: never over it
        fig.update_layout(title=dict(y=1, yref="container", yanchor="top", pad=dict(t=8)),
                          legend=dict(orientation="h", x=0, xanchor="left", y=1.0, yanchor="bottom",
                                      font=dict(size=10)),
                          margin=dict(t=64), height=height + 24)
    if xaxis:
        fig.update_xaxes(**xaxis)
    if yaxis:
        fig.update_yaxes(**yaxis)
    fig.update_yaxes(automargin=True)
    return escape_figure_text(fig)


def _height(n_bars: int, *, per_bar: int = 18, minimum: int = 220, maximum: int = 900) -> int:
    return max(minimum, min(maximum, 80 + per_bar * n_bars))


def class_counts_figure(counts: Mapping[str, int], *, top_n: int = 30) -> go.Figure:
    """Images per class (``analyses.class_distribution.counts``), largest first; beyond ``top_n`` one
    grey "others" bar sums the remaining classes (its label says how many)."""
    items = sorted(counts.items(), key=lambda item: (-item[1], group_sort_key(item[0])))
    shown = items[:top_n]
    names = [label(name) for name, _ in shown]
    values = [int(n) for _, n in shown]
    colours = [BAR_COLOUR] * len(shown)
    if len(items) > top_n:
        rest = items[top_n:]
        names.append(f"others ({len(rest)} classes)")
        values.append(int(sum(n for _, n in rest)))
        colours.append(OTHERS_COLOUR)
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=colours,
                           hovertemplate="%{y}: %{x} images<extra></extra>"))
    return _layout(fig, title="Images per class", height=_height(len(names)),
                   xaxis=dict(title="images"), yaxis=dict(autorange="reversed", type="category"))


def group_shares_figure(groups: Sequence[Mapping], *, attribute: str, top_n: int = 30) -> go.Figure:
    """Share of images per group of one attribute with its interval (``attribute_distribution`` groups:
    ``group, n, share, ci_low, ci_high, is_small``); small groups in grey."""
    rows = groups_in_display_order(groups)[:top_n]
    fig = go.Figure(go.Bar(
        x=[g["share"] for g in rows], y=[label(g["group"]) for g in rows], orientation="h",
        marker_color=[OTHERS_COLOUR if g.get("is_small") else BAR_COLOUR for g in rows],
        error_x=dict(type="data", symmetric=False, array=[g["ci_high"] - g["share"] for g in rows],
                     arrayminus=[g["share"] - g["ci_low"] for g in rows], color="#444", thickness=1),
        customdata=[g["n"] for g in rows],
        hovertemplate="%{y}: %{x:.1%} (%{customdata} images)<extra></extra>"))
    return _layout(fig, title=f"Share of images by {label(attribute_label(attribute))}",
                   height=_height(len(rows), minimum=160),
                   xaxis=dict(title="share of images (95 % interval)", tickformat=".0%", rangemode="tozero"),
                   yaxis=dict(autorange="reversed", type="category"))


def group_metric_figure(rows: pd.DataFrame, *, metric: str, attribute: str, overall: float | None = None,
                        threshold: float | None = None, higher_is_better: bool | None = True,
                        top_n: int = 40) -> go.Figure:
    """Disparity chart: one point per group with its interval, coloured by the group_metrics verdict.

    ``rows``: group_metrics rows of one attribute and metric (``group, n, value, ci_low, ci_high, verdict``).
    Groups are sorted worst first (by ``higher_is_better``; ordinal attributes in natural order, see
    :func:`order_metric_rows`); beyond ``top_n`` the best are left out (the title says so).
    A dashed line marks the whole-data value, a dotted one the policy threshold.
    """
    frame = order_metric_rows(rows, higher_is_better=higher_is_better, top_n=top_n)
    left_out = max(len(frame) - top_n, 0)
    frame = frame.head(top_n)
    fig = go.Figure()
    for verdict, part in frame.groupby(frame["verdict"].fillna(""), sort=False):
        fig.add_trace(go.Scatter(
            x=part["value"], y=[label(g) for g in part["group"]], mode="markers",
            name=VERDICT_LABELS.get(verdict, verdict), marker=dict(color=VERDICT_COLOURS.get(verdict, BAR_COLOUR),
                                                                   size=8),
            error_x=dict(type="data", symmetric=False, array=(part["ci_high"] - part["value"]).tolist(),
                         arrayminus=(part["value"] - part["ci_low"]).tolist(), thickness=1.2),
            customdata=part["n"], hovertemplate="%{y}: %{x:.3f} (n = %{customdata})<extra></extra>"))
    # The reference lines are named in the legend, not by text on the chart: two labels at the foot of lines
    # a few pixels apart ("policy" over "whole data") overlapped (issue 12).
    for value, name, dash, colour in ((overall, "whole data", "dash", "#555"),
                                      (threshold, "policy threshold", "dot", "#c0392b")):
        if value is None:
            continue
        fig.add_vline(x=value, line_dash=dash, line_color=colour)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, hoverinfo="skip",
                                 line=dict(color=colour, dash=dash, width=1.5)))
    title = f"{label(metric)} by {label(attribute_label(attribute))} (95 % intervals)"
    if left_out:
        title += f"; {left_out} best groups not shown"
    order = [label(g) for g in frame["group"]]
    return _layout(fig, title=title, height=_height(len(frame), per_bar=22, minimum=200), showlegend=True,
                   xaxis=dict(title=None),
                   yaxis=dict(autorange="reversed", type="category", categoryorder="array", categoryarray=order))


def class_metric_figure(rows: pd.DataFrame, *, metric: str, top_n: int = 25,
                        higher_is_better: bool | None = False) -> go.Figure:
    """Per-class values with intervals (group_metrics rows with ``class`` set), worst ``top_n`` classes."""
    frame = sort_rows(rows, "value", ascending=higher_is_better is not False, column="class").head(top_n)
    # rows without an interval (an older or hand-made audit) are drawn without error bars
    has_ci = {"ci_low", "ci_high"} <= set(frame.columns)
    fig = go.Figure(go.Bar(
        x=frame["value"], y=[label(c) for c in frame["class"]], orientation="h", marker_color=BAR_COLOUR,
        error_x=dict(type="data", symmetric=False, array=(frame["ci_high"] - frame["value"]).tolist(),
                     arrayminus=(frame["value"] - frame["ci_low"]).tolist(), color="#444", thickness=1)
        if has_ci else None,
        customdata=frame["n"], hovertemplate="%{y}: %{x:.3f} (n = %{customdata})<extra></extra>"))
    title = f"{label(metric)} per class (worst {len(frame)} of {len(rows)})" if len(rows) > top_n else \
        f"{label(metric)} per class"
    return _layout(fig, title=title, height=_height(len(frame)), xaxis=dict(title=label(metric)),
                   yaxis=dict(autorange="reversed", type="category"))


def association_figure(entries: Sequence[Mapping]) -> go.Figure:
    """Cramer's V of class x attribute (``analyses.associations.attributes``), strongest first; significant
    associations (after multiple-comparison control) in red."""
    rows = [e for e in entries if e.get("cramers_v") is not None]
    rows = sorted(rows, key=lambda e: -e["cramers_v"])
    fig = go.Figure(go.Bar(
        x=[e["cramers_v"] for e in rows], y=[label(attribute_label(e["attribute"])) for e in rows], orientation="h",
        marker_color=["#c0392b" if e.get("significant") else BAR_COLOUR for e in rows],
        hovertemplate="%{y}: V = %{x:.3f}<extra></extra>"))
    return _layout(fig, title="Association of the class label with each attribute (Cramer's V)",
                   height=_height(len(rows), minimum=160), xaxis=dict(title="Cramer's V", range=[0, 1]),
                   yaxis=dict(autorange="reversed", type="category"))


def noise_matrix_figure(matrix: Sequence[Sequence[float]], classes: Sequence[str]) -> go.Figure:
    """Heatmap of the estimated noise (transition) matrix ``P(given label = row | true label = column)``
    from ``analyses.label_noise.noise_matrix``. Meant for up to ~20 classes; for more, show a table of the
    largest off-diagonal entries instead."""
    names = [label(c) for c in classes]
    # the numbers on the cells (a static PDF has no hover); small enough to read up to ~20 classes
    text = [["" if v is None else f"{float(v):.2f}" for v in row] for row in matrix]
    fig = go.Figure(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", zmin=0, zmax=1, text=text,
                               texttemplate="%{text}", textfont=dict(size=10 if len(names) <= 10 else 7),
                               hovertemplate="given %{y}, true %{x}: %{z:.3f}<extra></extra>",
                               colorbar=dict(title="P")))
    size = max(260, min(700, 120 + 28 * len(names)))
    return _layout(fig, title="Noise matrix as the probabilities see it: P(given label | true label)", height=size,
                   xaxis=dict(title="true label", type="category"),
                   yaxis=dict(title="given label", autorange="reversed", type="category"))


def reliability_figure(curves: Mapping[str, Sequence[Mapping]], *, attribute: str, top_n: int = 6,
                       min_bin_images: int = 10) -> go.Figure:
    """Reliability diagram: accuracy against mean confidence per confidence bin, one line per group.

    ``curves`` maps a group to its bins (``mean_confidence``, ``accuracy``, ``n``) as the audit's
    ``analyses.calibration`` section holds them; the largest ``top_n`` groups are drawn, each with its bins
    of at least ``min_bin_images`` images (a bin of three images is noise, not a curve). A calibrated group
    follows the diagonal; a line below it is over-confident.
    """
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999999", dash="dash"),
                             name="perfect calibration", hoverinfo="skip"))
    largest = sorted(curves.items(), key=lambda item: (-sum(b["n"] for b in item[1]), group_sort_key(item[0])))[:top_n]
    for group, bins in sorted(largest, key=lambda item: group_sort_key(item[0])):  # legend in natural order
        bins = [b for b in bins if b["n"] >= min_bin_images]
        if not bins:
            continue
        fig.add_trace(go.Scatter(
            x=[b["mean_confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers",
            name=label(group), customdata=[b["n"] for b in bins],
            hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>n = %{customdata}<extra>%{fullData.name}</extra>"))
    shown = f" (largest {top_n} of {len(curves)} groups)" if len(curves) > top_n else ""
    fig.update_layout(legend=dict(orientation="v"))  # up to seven groups: a column at the right
    return _layout(fig, title=f"Reliability by {label(attribute_label(attribute))}{shown}", height=360,
                   showlegend=True,
                   xaxis=dict(title="mean confidence in bin", range=[0, 1]),
                   yaxis=dict(title="accuracy in bin", range=[0, 1]))
