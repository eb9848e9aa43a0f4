"""Data quality: the data_quality section and the per-image issue columns (is_<issue>_issue, <issue>_score)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _charts, _state
from audit.display import attribute_label, issue_label, leakage_not_checked, metric_label
from audit.report import figures

audit = _state.current_audit()
st.title("Data quality")
section = audit.analyses.get("data_quality")
images = audit.images
issue_columns = [c for c in images.columns if c.startswith("is_") and c.endswith("_issue") and c != "is_label_issue"]
if not section and not issue_columns:
    st.info("This audit has no data-quality analysis (no duplicate, leakage or image-issue checks were run); "
            "label issues are on the Label quality page.")
    st.stop()

issues = [i for i in (section or {}).get("issues", []) if f"is_{i}_issue" in images.columns] or \
    [c[3:-len("_issue")] for c in issue_columns]
summary = (section or {}).get("summary", {})
counts = summary.get("issues") or {i: int(images[f"is_{i}_issue"].astype(bool).sum()) for i in issues}
if issues:
    columns = st.columns(min(len(issues), 5))
    for i, issue in enumerate(issues):
        columns[i % len(columns)].metric(issue_label(issue), f"{counts.get(issue, 0):,}")
if summary.get("n_duplicate_sets") is not None:
    st.caption(f"{summary.get('n_duplicate_sets', 0)} duplicate set(s) holding "
               f"{summary.get('n_images_in_duplicate_sets', 0)} image(s).")

for text in (section or {}).get("findings", []) or []:
    st.markdown("- " + _state.escape_markdown(text if isinstance(text, str) else text.get("text", text)))

leakage = (section or {}).get("leakage")
not_checked = leakage_not_checked(audit.audit.get("dataset", {}).get("splits"))
if leakage is not None and not_checked:
    st.subheader("Train/test leakage")
    st.info(not_checked)  # no "0 pairs" without splits: nothing was compared (issue 12)
elif leakage is not None:
    st.subheader("Train/test leakage")
    pairs = pd.DataFrame(leakage.get("pairs", []))
    st.write(f"{leakage.get('n_pairs', len(pairs))} near-duplicate pair(s) across splits.")
    if len(pd.DataFrame(leakage.get("by_split_pair", []))):
        st.dataframe(pd.DataFrame(leakage["by_split_pair"]), hide_index=True, width="stretch", key="quality_leak_splits")
    if not pairs.empty:
        st.dataframe(pairs.astype(str), hide_index=True, width="stretch", key="quality_leak_pairs")

if issues:
    st.subheader("Flagged images")
    with_issues = [i for i in issues if counts.get(i, 0)] or issues
    issue = st.selectbox("Issue", with_issues, key="quality_issue", format_func=issue_label)
    metrics = audit.group_metrics
    rates = metrics[(metrics["metric"] == f"issue_rate:{issue}") & (metrics["attribute"] != "all")
                    & (metrics["class"] == "")] if not metrics.empty else metrics
    if not rates.empty:
        attributes = list(dict.fromkeys(rates["attribute"]))
        attribute = st.selectbox("Share flagged by", attributes, key="quality_rate_attribute",
                                 format_func=attribute_label)
        overall = metrics[(metrics["metric"] == f"issue_rate:{issue}") & (metrics["attribute"] == "all")]
        st.plotly_chart(figures.group_metric_figure(
            rates[rates["attribute"] == attribute], metric=metric_label(f"issue_rate:{issue}"), attribute=attribute,
            higher_is_better=False, overall=float(overall["value"].iloc[0]) if len(overall) else None),
            config=_charts.CONFIG, width="stretch", key="quality_rates")
    flagged = images[images[f"is_{issue}_issue"].astype(bool)]
    score = f"{issue}_score"
    if score in flagged.columns:
        flagged = flagged.sort_values(score, kind="stable")
    if "duplicate_set" in flagged.columns and "duplicate" in issue:
        flagged = flagged.sort_values(["duplicate_set", score] if score in flagged.columns else ["duplicate_set"],
                                      kind="stable")
    st.caption(f"{len(flagged):,} images flagged as {issue_label(issue)}; lower score = worse.")
    if len(flagged):
        page_size = _state.GALLERY_PAGE_SIZE
        n_pages = max(1, -(-len(flagged) // page_size))
        page = st.number_input("Page", min_value=1, max_value=n_pages, value=1, step=1, key="quality_page")
        visible = flagged.iloc[(page - 1) * page_size: page * page_size]
        grid = st.columns(6)
        for position, row in enumerate(visible.itertuples(index=False)):
            cell = grid[position % 6]
            picture = _state.thumbnail(str(row.path))
            if picture is None:
                cell.caption("(not readable)")
            else:
                cell.image(picture, width="stretch")
            details = [str(row.id), f"label: {row.label}"]
            if score in visible.columns:
                details.append(f"score: {getattr(row, score):.3f}")
            if "duplicate_set" in visible.columns and pd.notna(getattr(row, "duplicate_set")):
                details.append(f"set: {getattr(row, 'duplicate_set')}")
            cell.text("\n".join(details))
        shown = [c for c in ("id", "label", "split", score, "duplicate_set", "path") if c in flagged.columns]
        st.dataframe(flagged[shown].head(5000).rename(columns={score: f"{issue_label(issue)} score (lower = worse)",
                                                               "duplicate_set": "duplicate set"}),
                     hide_index=True, width="stretch", key="quality_table")

if section:
    with st.expander("Data-quality section (audit.json)"):
        st.json(section, expanded=False)
