"""Data quality: the data_quality section and the per-image issue columns (is_<issue>_issue, <issue>_score)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _state

audit = _state.current_audit()
st.title("Data quality")
section = audit.analyses.get("data_quality")
images = audit.images
issue_columns = [c for c in images.columns if c.startswith("is_") and c.endswith("_issue") and c != "is_label_issue"]
if not section and not issue_columns:
    st.info("This audit has no data-quality analysis (no duplicate, leakage or image-issue checks were run); "
            "label issues are on the Label quality page.")
    st.stop()

issues = [c[3:-len("_issue")] for c in issue_columns]
if issues:
    counts = {issue: int(images[f"is_{issue}_issue"].astype(bool).sum()) for issue in issues}
    columns = st.columns(min(len(issues), 5))
    for i, issue in enumerate(issues):
        columns[i % len(columns)].metric(issue.replace("_", " "), f"{counts[issue]:,}")

if section:
    for text in section.get("findings", []) or []:
        st.markdown("- " + _state.escape_markdown(text if isinstance(text, str) else text.get("text", text)))
    leakage = section.get("leakage")
    if leakage:
        st.subheader("Train/test leakage")
        st.json(leakage, expanded=False)

if issues:
    st.subheader("Flagged images")
    issue = st.selectbox("Issue", issues, key="quality_issue")
    flagged = images[images[f"is_{issue}_issue"].astype(bool)]
    score = f"{issue}_score"
    if score in flagged.columns:
        flagged = flagged.sort_values(score, kind="stable")
    shown = [c for c in ("id", "label", "split", score, "duplicate_set", "path") if c in flagged.columns]
    st.caption(f"{len(flagged):,} images flagged as {issue}; lower score = worse.")
    st.dataframe(flagged[shown].head(5000), hide_index=True, width="stretch", key="quality_table")

if section:
    with st.expander("Data-quality section (audit.json)"):
        st.json(section, expanded=False)
