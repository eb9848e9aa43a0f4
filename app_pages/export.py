"""Export: audit.json, the contract tables as formula-injection-safe CSV, the corrected-labels CSV, reports."""
from __future__ import annotations

import importlib

import streamlit as st

from app_pages import _state
from audit import reviews

audit = _state.current_audit()
st.title("Export")
_state.show_review_status(audit)
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

# Reports: wired when the report renderers exist (audit.report.html / pdf / markdown).
renderers = []
for module_name, label, mime in (("audit.report.html", "report.html", "text/html"),
                                 ("audit.report.pdf", "report.pdf", "application/pdf"),
                                 ("audit.report.markdown", "report.md", "text/markdown")):
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        continue
    render = getattr(module, "render_" + module_name.rsplit(".", 1)[-1], None)
    if callable(render):
        renderers.append((label, mime, render))
if renderers:
    st.subheader("Reports")
    for label, mime, render in renderers:
        if st.button(f"Build {label}", key=f"export_build_{label}"):
            try:
                output = render(audit.folder)
                data = output if isinstance(output, (bytes, str)) else (audit.folder / label).read_bytes()
            except Exception as error:  # noqa: BLE001 - shown as a message, never a traceback
                st.error(f"{label} could not be built: {error}")
            else:
                st.download_button(f"Download {label}", data=data, file_name=f"{name}-{label}", mime=mime,
                                   key=f"export_download_{label}")
