"""Annotators: agreement by class and group, annotators with their intervals, the most-disagreed images.

Reads ``analyses.annotations``, the ``annotation_agreement`` rows of group_metrics, ``annotators.parquet`` and
the per-image annotation columns; computes nothing. Every user string goes through ``escape_markdown`` or
into dataframes / plotly (escaped in ``audit.report.figures``).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _charts, _state
from audit.display import attribute_label, group_sort_key, metric_label
from audit.escaping import streamlit_markdown_code
from audit.report import figures
from audit.report.figures import VERDICT_LABELS

#: Words for the tables' column names.
COLUMNS = {"n": "images", "value": "agreement", "ci_low": "95 % CI low", "ci_high": "95 % CI high",
           "expected_agreement": "expected agreement", "p_adjusted": "adjusted p",
           "median_seconds": "median seconds", "consensus_label": "consensus label",
           "consensus_score": "P(consensus right)", "annotation_agreement": "agreement",
           "n_annotations": "labels"}

audit = _state.current_audit()
st.title("Annotators")
section = audit.analyses.get("annotations")
if not section:
    st.info("This audit has no annotations. Give several labels per image with `--annotations FILE` (long "
            "`id,annotator,label[,seconds]` or one column per annotator) to `run` or `label-noise`.")
    st.stop()

alpha = section.get("krippendorff_alpha") or {}
top = st.columns(4)
top[0].metric("Krippendorff's alpha", "-" if alpha.get("value") is None else f"{alpha['value']:.3f}",
              help=f"nominal; 95 % bootstrap interval {alpha.get('ci_low', float('nan')):.3f}-"
                   f"{alpha.get('ci_high', float('nan')):.3f} over {alpha.get('n', 0)} images with two or more labels")
top[1].metric("Annotators", f"{section.get('n_annotators', 0):,}")
top[2].metric("Labels", f"{section.get('n_annotations', 0):,}")
top[3].metric("Doubtful consensus", f"{section.get('n_disagreement_issues', 0):,}",
              help="images whose labels disagree and whose consensus is more likely wrong than right")
st.caption(streamlit_markdown_code(  # the tie rule names `classes` (a key of audit.json): code, not backticks
    f"Consensus by {str(section.get('method', '')).replace('_', '-')}; {section.get('n_ties', 0)} ties resolved "
    f"({section.get('tie_rule', '')})."))
for finding in section.get("findings") or []:
    st.markdown("- " + _state.escape_markdown(finding.get("text", "")))

metrics = audit.group_metrics
rows = metrics[metrics["metric"] == "annotation_agreement"] if not metrics.empty else metrics
overall = rows[(rows["attribute"] == "all") & (rows["class"] == "")]
overall_value = float(overall["value"].iloc[0]) if len(overall) else None

st.subheader("Agreement by class")
by_class = rows[(rows["attribute"] == "all") & (rows["class"] != "")]
if len(by_class):
    st.plotly_chart(figures.group_metric_figure(
        by_class.assign(group=by_class["class"]), metric=metric_label("annotation_agreement"),
        attribute="class (vs rest)",
        overall=overall_value, higher_is_better=True), config=_charts.CONFIG, width="stretch", key="annotators_by_class")

group_rows = rows[(rows["attribute"] != "all") & ~rows["attribute"].str.startswith("annotator & ")]
if len(group_rows):
    st.subheader("Agreement by group")
    attribute = st.selectbox("Attribute", list(dict.fromkeys(group_rows["attribute"])), key="annotators_attribute",
                             format_func=attribute_label)
    st.plotly_chart(figures.group_metric_figure(
        group_rows[group_rows["attribute"] == attribute], metric=metric_label("annotation_agreement"),
        attribute=attribute,
        overall=overall_value, higher_is_better=True), config=_charts.CONFIG, width="stretch", key="annotators_by_group")
    pairs = rows[rows["attribute"].str.startswith("annotator & ") & (rows["verdict"] == "worse_than_rest")]
    if len(pairs):
        st.markdown("Annotators who agree with co-annotators less than chance on one group:")
        pairs = pairs.iloc[sorted(range(len(pairs)), key=lambda i: group_sort_key(pairs["group"].iloc[i]))]
        pairs = pairs.assign(attribute=pairs["attribute"].map(attribute_label))
        st.dataframe(pairs[["attribute", "group", "n", "value", "ci_low", "ci_high"]].rename(columns=COLUMNS),
                     hide_index=True, width="stretch", key="annotators_pairs")

st.subheader("Annotators")
table = _state.annotators_table(audit)
if table is None or table.empty:
    st.info("annotators.parquet is missing from this audit folder.")
else:
    if section.get("annotators_indistinguishable"):
        st.success("The annotators are indistinguishable: none agrees with co-annotators of the same images less "
                   "than chance allows, so differences in apparent accuracy are chance and image difficulty. "
                   "They are listed by name, not ranked.")
        table = table.sort_values("annotator", kind="stable")
    else:
        table = table.sort_values(["verdict", "accuracy"], key=lambda c: c.map(
            {"worse_than_rest": 0, "no_evidence_of_gap": 1, "insufficient_data": 2}) if c.name == "verdict" else c,
            kind="stable")
    tested = table[table["verdict"] != "insufficient_data"]
    chart = tested.assign(group=tested["annotator"], value=tested["accuracy"])
    if len(chart):
        st.plotly_chart(figures.group_metric_figure(chart, metric="accuracy (estimated)", attribute="annotator",
                                                    higher_is_better=True, top_n=40),
                        config=_charts.CONFIG, width="stretch", key="annotators_accuracy")
    shown = [c for c in ("annotator", "n", "accuracy", "ci_low", "ci_high", "verdict", "agreement",
                         "expected_agreement", "p_adjusted", "median_seconds") if c in table.columns
             and not (c == "median_seconds" and table[c].isna().all())]  # no timings given: no empty column
    readable = table[shown].assign(**{
        "verdict": table["verdict"].map(lambda v: VERDICT_LABELS.get(v, v)),
        **({"p_adjusted": table["p_adjusted"].map(lambda p: "" if pd.isna(p) else f"{p:.2g}")}
           if "p_adjusted" in shown else {})})
    st.dataframe(readable.rename(columns={**COLUMNS, "n": "labels"}), hide_index=True, width="stretch",
                 key="annotators_table")

st.subheader("Images with the most disagreement")
images = audit.images
if "is_annotation_disagreement_issue" in images.columns:
    flagged = images[images["is_annotation_disagreement_issue"].fillna(False).astype(bool)]
    flagged = flagged.sort_values("annotation_disagreement_score", kind="stable")
    st.caption(f"{len(flagged):,} images whose labels disagree and whose consensus is more likely wrong than "
               f"right; lowest probability first.")
    has_images = "path" in flagged.columns and "content_hash" in flagged.columns
    if len(flagged) and has_images:
        visible = flagged.head(_state.GALLERY_PAGE_SIZE)
        grid = st.columns(6)
        for position, row in enumerate(visible.itertuples(index=False)):
            cell = grid[position % 6]
            picture = _state.thumbnail(str(row.path))
            if picture is None:
                cell.caption("(not readable)")
            else:
                cell.image(picture, width="stretch")
            cell.text(f"{row.id}\nlabel: {row.label}\nconsensus: {row.consensus_label}\n"
                      f"P(right): {row.consensus_score:.2f}")
    shown = [c for c in ("id", "label", "consensus_label", "consensus_score", "annotation_agreement",
                         "n_annotations", "path") if c in flagged.columns
             and not (c == "path" and flagged[c].isna().all())]  # label-only audits have no image paths
    st.dataframe(flagged[shown].head(5000).rename(columns=COLUMNS), hide_index=True, width="stretch",
                 key="annotators_images")

with st.expander("Annotations section (audit.json)"):
    st.json({k: v for k, v in section.items() if k != "annotators"}, expanded=False)
