"""Export: audit.json, the contract tables as formula-injection-safe CSV, the corrected-labels CSV, reports."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages import _review, _state
from audit import reviews
from audit.report.render import render_report

audit = _state.current_audit()
st.title("Export")
_state.show_review_status(audit)
if "label" in audit.images.columns:
    _review.show_verified(audit)  # the report includes it too ("the review status above")
version = _state.audit_version(audit)
name = audit.name

st.subheader("Audit")
st.download_button("audit.json", data=(audit.folder / "audit.json").read_bytes(), file_name=f"{name}-audit.json",
                   mime="application/json", key="export_json")
st.caption("CSV cells starting with = + - @ (or a tab or carriage return) are prefixed with ' so a spreadsheet "
           "shows them as text instead of running them as formulas.")
left, right = st.columns(2)
if left.toggle("Prepare images.csv", key="export_images_prepare"):
    left.download_button("images.csv", data=_state.table_csv(str(audit.folder), version, "images"),
                         file_name=f"{name}-images.csv", mime="text/csv", key="export_images")
if right.toggle("Prepare group_metrics.csv", key="export_metrics_prepare"):
    right.download_button("group_metrics.csv", data=_state.table_csv(str(audit.folder), version, "group_metrics"),
                          file_name=f"{name}-group_metrics.csv", mime="text/csv", key="export_metrics")

st.subheader("Corrected labels")
decisions = reviews.list_decisions(audit.folder)
corrected = reviews.corrected_labels(audit.images, decisions)
st.write(f"{len(corrected):,} reviewed image(s); "
         f"{int((corrected['decision'] == reviews.CONFLICT).sum())} with conflicting decisions.")
st.download_button("corrected_labels.csv", data=reviews.to_safe_csv(corrected), file_name=f"{name}-corrected_labels.csv",
                   mime="text/csv", key="export_corrected")
if len(corrected):
    st.dataframe(corrected.head(1000), hide_index=True, width="stretch", key="export_corrected_table")

# Reports (audit.report.render): written to DIR/report.<ext> and offered for download.
st.subheader("Report")
st.caption("The report includes the review status above. Thumbnails show images of people in the data set: "
           "leave them out for a report you share widely.")
thumbnails = st.toggle("Include thumbnails of suspect images", value=False, key="export_thumbnails",
                       help="Off by default: a report is often shared further than the data set.")
columns = st.columns(3)
for column, (fmt, mime) in zip(columns, (("html", "text/html"), ("pdf", "application/pdf"),
                                         ("md", "text/markdown"))):
    if column.button(f"Build report.{fmt}", key=f"export_build_{fmt}"):
        try:
            with st.spinner(f"Rendering report.{fmt}..."):
                path = render_report(audit.folder, format=fmt, thumbnails=thumbnails)
        except Exception as error:  # noqa: BLE001 - shown as a message, never a traceback
            column.error(f"report.{fmt} could not be built: {error}")
        else:
            st.session_state[f"export_report_{fmt}"] = str(path)
    built = st.session_state.get(f"export_report_{fmt}")
    if built and Path(built).exists() and Path(built).parent == audit.folder:
        column.download_button(f"Download report.{fmt}", data=Path(built).read_bytes(),
                               file_name=f"{name}-report.{fmt}", mime=mime, key=f"export_download_{fmt}")
