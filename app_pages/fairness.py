"""Fairness: any metric by any attribute or intersection with intervals and verdicts, disparities, recall
heatmap, calibration by group, weak slices."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _charts, _state, _tables
from audit.display import attribute_label, group_sort_key, is_data_rate, metric_label, sort_groups
from audit.report import figures

#: Words for the rates fairlearn's equalized-odds gap is taken on.
RATE_WORDS = {"tpr": "true positive rate", "fpr": "false positive rate"}

audit = _state.current_audit()
st.title("Fairness")
metrics = audit.group_metrics
performance = audit.analyses.get("group_performance")
if metrics.empty or not performance:
    st.info("This audit has no per-group performance (it needs a model or predictions; see Overview for errors).")
    st.stop()

descriptions = audit.audit.get("metrics", {})
# Model metrics (how well the model does per group) and data rates (issue, label-disagreement and annotator
# rates: they describe the data, not the model) are two lists, never one mixed list (issue 12).
all_metrics = [m for m in dict.fromkeys(metrics["metric"]) if m not in ("share",)]
kinds = {"Model performance": [m for m in all_metrics if not is_data_rate(m)],
         "Data and label rates": [m for m in all_metrics if is_data_rate(m)]}
kinds = {name: names for name, names in kinds.items() if names}
kind = st.radio("Show", list(kinds), horizontal=True, key="fair_kind",
                help="Model performance: metrics of the model's predictions per group. Data and label rates: "
                     "shares of images flagged by data-quality checks or label review, per group.") \
    if len(kinds) > 1 else next(iter(kinds))
listed = kinds[kind]
default_metric = listed.index("accuracy") if "accuracy" in listed else 0
controls = st.columns(3)
metric = controls[0].selectbox("Metric", listed, index=default_metric,
                               key="fair_metric" if kind == "Model performance" else "fair_rate_metric",
                               format_func=metric_label)
rows_metric = metrics[metrics["metric"] == metric]
attributes = [a for a in dict.fromkeys(rows_metric["attribute"]) if a != "all"]
if not attributes:
    st.info(f"No per-group rows for {metric_label(metric)}.")
    st.stop()
flagged = [a for a in dict.fromkeys(rows_metric.loc[rows_metric["verdict"] == "worse_than_rest", "attribute"])
           if a in attributes]
attribute = controls[1].selectbox("Attribute or intersection", attributes,
                                  index=attributes.index(flagged[0]) if flagged else 0, key="fair_attribute",
                                  format_func=attribute_label)
class_names = [c for c in dict.fromkeys(rows_metric.loc[rows_metric["attribute"] == attribute, "class"])]
class_name = controls[2].selectbox("Class", class_names, format_func=lambda c: c or "(all classes)",
                                   key="fair_class") if len(class_names) > 1 else class_names[0]
info = descriptions.get(metric, {})
if info.get("description"):
    direction = {True: "higher is better", False: "lower is better"}.get(info.get("higher_is_better"), "")
    st.caption(_state.escape_markdown(f"{metric_label(metric)}: {info['description']} ({direction})"))

rows = rows_metric[(rows_metric["attribute"] == attribute) & (rows_metric["class"] == class_name)]
if metric == "label_disagreement_rate":
    # issue 13: beside every disagreement rate, the model's error rate on the same images (the confound)
    same = metrics[(metrics["metric"] == "model_error_rate") & (metrics["attribute"] == attribute)
                   & (metrics["class"] == class_name)]
    if len(same):
        st.caption(_state.escape_markdown(
            "A screening figure, not a label-error rate. The model's error rate on the same images: "
            + "; ".join(f"{group} {value:.1%}" for group, value in  # groups in natural order (0-2, 3-9, 10-19)
                        sorted(zip(same["group"], same["value"]), key=lambda pair: group_sort_key(pair[0])))
            + "."))
overall = rows_metric[(rows_metric["attribute"] == "all") & (rows_metric["class"] == class_name)]
reference = float(overall["value"].iloc[0]) if len(overall) else None
# The policy's worst-group threshold for this metric and attribute, when the audit recorded a verdict.
threshold = next((c.get("threshold") for c in (audit.audit.get("verdict") or {}).get("checks", [])
                  if c.get("name") == "performance.min_worst_group" and c.get("attribute") == attribute
                  and metric == (audit.audit.get("policy") or {}).get("performance", {}).get("metric", "accuracy")
                  and not class_name), None)
chart_metric = metric_label(metric) + (f" of class {class_name}" if class_name else "")
st.plotly_chart(figures.group_metric_figure(rows, metric=chart_metric,
                                            attribute=attribute, overall=reference, threshold=threshold,
                                            higher_is_better=info.get("higher_is_better", True)),
                config=_charts.CONFIG, width="stretch", key="fair_metric_chart")
n_small = int(rows["insufficient_evidence"].sum())
n_worse = int((rows["verdict"] == "worse_than_rest").sum())
st.caption(f"{n_worse} group(s) significantly worse than the rest (red); {n_small} group(s) with insufficient "
           f"evidence (grey: fewer than {audit.audit.get('provenance', {}).get('min_group_size', '?')} images or "
           "an interval too wide to conclude). Dashed line: the whole data set.")
st.dataframe(_tables.group_table(rows, metric=metric_label(metric)), hide_index=True, width="stretch", key="fair_rows")

# -- disparity summary ------------------------------------------------------------------------------------
summary = next((s for s in performance.get("attributes", []) if s.get("attribute") == attribute), None)
n_judged = int((~rows["insufficient_evidence"].astype(bool)).sum())
if summary and n_judged < 2:
    # Gaps between groups of 1-4 images are noise: no disparity table, no two-class fairness numbers.
    st.subheader("Disparity summary")
    st.info(f"Fewer than two groups of {attribute_label(attribute)} have enough evidence (at least "
            f"{audit.audit.get('provenance', {}).get('min_group_size', '?')} images and a narrow enough interval): "
            "no disparity between groups is computed.")
    summary = None
if summary:
    st.subheader("Disparity summary")
    table = pd.DataFrame([dict(metric=metric_label(name), **values)
                          for name, values in summary.get("metrics", {}).items()])
    if not table.empty:
        table.columns = [str(c).replace("_", " ") for c in table.columns]
        st.dataframe(table, hide_index=True, width="stretch", key="fair_disparity")
    gap = summary.get("equalized_odds_gap") or {}
    if gap.get("value") is not None:
        st.write(_state.escape_markdown(
            f"Equalized-odds gap: {gap['value']:.3f} ({RATE_WORDS.get(gap.get('rate'), gap.get('rate'))} of class "
            f"{gap.get('class')}: "
            f"{gap.get('high_group')} vs {gap.get('low_group')})."))
    binary = summary.get("binary") or {}
    if binary:
        positive = binary.get("positive_class_index")
        positive_name = audit.classes[positive] if isinstance(positive, int) and 0 <= positive < len(audit.classes) \
            else positive
        st.write(_state.escape_markdown(
            f"Two-class fairness (fairlearn, positive class {positive_name}, {binary.get('n_groups_compared', '?')} "
            "groups): " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in binary.items()
                                    if isinstance(v, float) and k not in ("positive_class_index", "n_groups_compared"))
            + "."))

# -- per class x group recall -----------------------------------------------------------------------------
recall = metrics[(metrics["metric"] == "recall") & (metrics["attribute"] == attribute) & (metrics["class"] != "")]
if not recall.empty:
    st.subheader("Recall per class and group")
    classes = [c for c in audit.classes if c in set(recall["class"])]
    groups = sort_groups(recall["group"])
    cells = recall.set_index(["class", "group"])
    z = [[cells["value"].get((c, g)) for g in groups] for c in classes]
    text = [[("" if (c, g) not in cells.index else f"{cells['value'][(c, g)]:.2f}"
              + (" *" if cells["verdict"][(c, g)] == "worse_than_rest" else "")
              + (" (small)" if cells["insufficient_evidence"][(c, g)] else "")) for g in groups] for c in classes]
    st.plotly_chart(_charts.heatmap(z, x=groups, y=classes, text=text, colorscale="RdYlGn",
                                    x_title=attribute_label(attribute), y_title="class", colorbar_title="recall",
                                    title=f"Recall by class x {attribute_label(attribute)} (* worse than rest)"),
                    config=_charts.CONFIG, width="stretch", key="fair_recall_heatmap")

# -- calibration --------------------------------------------------------------------------------------------
calibration = metrics[(metrics["metric"] == "expected_calibration_error") & (metrics["attribute"] == attribute)
                      & (metrics["class"] == "")]
if not calibration.empty:
    st.subheader("Calibration by group")
    overall_ece = metrics[(metrics["metric"] == "expected_calibration_error") & (metrics["attribute"] == "all")]
    st.plotly_chart(figures.group_metric_figure(
        calibration, metric=metric_label("expected_calibration_error"), attribute=attribute, higher_is_better=False,
        overall=float(overall_ece["value"].iloc[0]) if len(overall_ece) else None),
        config=_charts.CONFIG, width="stretch", key="fair_calibration")
curves = (audit.analyses.get("calibration") or {}).get("attributes", {}).get(attribute)
if curves:
    st.plotly_chart(figures.reliability_figure(curves, attribute=attribute), config=_charts.CONFIG, width="stretch",
                    key="fair_reliability")
    st.caption("Points below the dashed diagonal: the model is more confident than it is right for that group.")

# -- worse than rest and weak slices ------------------------------------------------------------------------
worse = pd.DataFrame(performance.get("worse_than_rest", []))
st.subheader("Groups significantly worse than the rest")
if worse.empty:
    st.write("None.")
else:
    if "metric" in worse.columns:
        worse["metric"] = worse["metric"].map(metric_label)
    if "attribute" in worse.columns:
        worse["attribute"] = worse["attribute"].map(attribute_label)
    first = [c for c in ("attribute", "group", "class", "metric") if c in worse.columns]
    worse = worse[first + [c for c in worse.columns if c not in first]]
    worse.columns = [str(c).replace("_", " ") for c in worse.columns]
    st.dataframe(worse, hide_index=True, width="stretch", key="fair_worse")
slices = audit.analyses.get("weak_slices")
st.subheader("Weak slices found")
if not slices:
    st.write("No weak-slice search in this audit.")
else:
    frame = pd.DataFrame(slices.get("slices", []))
    st.caption(f"{slices.get('n_tried', '?')} slices tried.")
    if frame.empty:
        st.write("No weak slice found.")
    else:
        frame = frame.astype({c: str for c in frame.columns if frame[c].map(type).eq(list).any()})
        frame.columns = [str(c).replace("_", " ") for c in frame.columns]
        st.dataframe(frame, hide_index=True, width="stretch", key="fair_slices")
