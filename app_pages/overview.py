"""Overview: dataset card, findings, verdict, skipped inputs, failed analyses, provenance."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _review, _state
from audit.display import attribute_label
from audit.escaping import streamlit_markdown_code

#: Under the recorded policy verdict: when it was made and how to check again.
VERDICT_WHEN = ("Recorded when the audit ran (`run --policy`). To check it again with the reviews made since: "
                "`python -m audit gate {folder} --policy FILE`.")

audit = _state.current_audit()
data = audit.audit
dataset = data.get("dataset", {})
st.title("Overview")
provenance = data.get("provenance", {})
st.caption(_state.escape_markdown(f"Audit {audit.name} of {dataset.get('source', '?')}, finished "
                                  f"{provenance.get('finished_at', '?')} (imagefair {data.get('tool', {}).get('version', '?')})"))

columns = st.columns(5)
columns[0].metric("Images", f"{dataset.get('n_images', len(audit.images)):,}")
columns[1].metric("Classes", dataset.get("n_classes", len(audit.classes)))
columns[2].metric("Group attributes", len(dataset.get("group_attributes", [])))
columns[3].metric("Splits", len(dataset.get("splits") or []) or "-")
columns[4].metric("Skipped inputs", dataset.get("n_skipped", len(data.get("skipped", []))))
_state.show_review_status(audit)
if "label" in audit.images.columns:
    _review.show_verified(audit)

verdict = data.get("verdict")
if verdict:
    status = verdict.get("status")
    message = f"Policy verdict: {status}"
    {"PASS": st.success, "FAIL": st.error, "ERROR": st.error}.get(status, st.warning)(message)
    # the verdict is the one `run --policy` recorded; reviews made since (the verified rate) need a new gate run
    st.caption(streamlit_markdown_code(VERDICT_WHEN.format(folder=audit.folder)))
    checks = pd.DataFrame(verdict.get("checks", []), columns=["status", "name", "attribute", "group", "class",
                                                               "value", "threshold", "message"])
    if not checks.empty:
        from audit.policy import status_rank

        checks = checks.iloc[sorted(range(len(checks)), key=lambda i: status_rank(checks["status"].iloc[i]))]
        # a static table wraps long cells: the scrolling data frame cut statuses, check names and details
        shown = checks.rename(columns={"name": "check", "message": "details"}).astype(object).fillna("")
        # one "where" column (as in the report) leaves the width to the details
        shown.insert(2, "where", [", ".join(p for p in (f"{a} = {g}" if g and a != "all" else ("" if a == "all" else a),
                                                        f"class {c}" if c else "") if p)
                                  for a, g, c in zip(shown["attribute"], shown["group"], shown["class"])])
        shown = shown.drop(columns=["attribute", "group", "class"])
        for column in ("value", "threshold"):
            shown[column] = [v if isinstance(v, str) else "" if pd.isna(v) else f"{v:.4g}" for v in shown[column]]
        # st.table renders Markdown: group values and messages are escaped, the messages' `commands` kept as code
        shown = shown.fillna("").astype(str)
        shown["where"] = shown["where"].map(_state.escape_markdown)
        shown["details"] = shown["details"].map(streamlit_markdown_code)
        st.table(shown, hide_index=True)

st.subheader("Findings")
details = data.get("finding_details") or [{"text": t, "severity": ""} for t in data.get("findings", [])]
if not details:
    st.write("No findings.")
icons = {"high": ":material/error:", "medium": ":material/warning:", "low": ":material/info:",
         "info": ":material/info:"}
for finding in details:
    icon = icons.get(finding.get("severity", ""), "")
    st.markdown(f"{icon} {_state.escape_markdown(finding.get('text', ''))}")

st.subheader("Dataset")
model = data.get("model") or {}
card = {
    "source": dataset.get("source"), "kind": dataset.get("kind"), "root": dataset.get("root"),
    "images audited": dataset.get("n_images"), "rows in the input": dataset.get("n_rows"),
    "classes": ", ".join(audit.classes), "class order": dataset.get("class_order_source"),
    "label column": dataset.get("label_column"), "splits": ", ".join(dataset.get("splits") or []) or "-",
    "group attributes": ", ".join(dataset.get("group_attributes") or []) or "-",
    "pixel attributes": ", ".join(attribute_label(a) for a in dataset.get("pixel_attributes") or []) or "-",
    "metadata columns (not grouped)": ", ".join(dataset.get("metadata_columns") or []) or "-",
    "model": f"{model.get('kind')} {model.get('source', '')}".strip() if model else "none",
}
# a static table: the scrolling data frame cut the card after ten rows (the model row was hidden)
st.table(pd.DataFrame({"field": list(card), "value": [_state.escape_markdown(v) for v in card.values()]}),
         hide_index=True)

skipped = pd.DataFrame(data.get("skipped", []), columns=["row", "path", "reason"])
st.subheader(f"Skipped inputs ({len(skipped)})")
if skipped.empty:
    st.write("Every input was audited.")
else:
    st.dataframe(skipped, hide_index=True, width="stretch")

errors = pd.DataFrame(data.get("errors", []), columns=["analysis", "message"])
if not errors.empty:
    st.subheader("Analyses that failed")
    st.warning(f"{len(errors)} analysis step(s) failed; the rest of the audit is complete.")
    st.dataframe(errors, hide_index=True, width="stretch")

with st.expander("Provenance"):
    st.json(data.get("provenance", {}), expanded=False)
