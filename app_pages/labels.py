"""Label quality: disagreement rates beside model error rates (intervals), transition matrix, paged gallery of
suspects with review widgets."""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from app_pages import _charts, _review, _state
from audit.report import figures
from audit import reviews
from audit.display import attribute_label, group_sort_key, metric_label, sort_groups
from audit.errors import InputError
from audit.findings import disagreement_sentence

#: group_metrics metrics of this page (audit.analysis.label_noise METRIC_NAME / ERROR_METRIC_NAME; contract names).
METRIC, ERROR_METRIC = "label_disagreement_rate", "model_error_rate"
#: How audit.analysis.screening starts the reason of an automatic choice of probabilities.
AUTO_PREFIX = "auto: "

audit = _state.current_audit()
st.title("Label quality")
section = audit.analyses.get("label_noise")
images = reviews.with_review_keys(audit.images)  # label-only audits key decisions to a stand-in hash
if not section or "label_score" not in images.columns:
    st.info("This audit has no label-noise estimate (it needs a model or predictions).")
    st.stop()

low, high = (section.get("label_disagreement_rate_ci") or [None, None])[:2]
error_low, error_high = (section.get("model_error_rate_ci") or [None, None])[:2]
columns = st.columns(5)
rate = section.get("label_disagreement_rate")
error_rate = section.get("model_error_rate")
columns[0].metric("Label disagreement rate", "-" if rate is None else f"{rate:.1%}",
                  help=("Images whose given label the model confidently disagrees with: a screening figure, not a "
                        "label-error rate." + ("" if low is None else f" 95 % interval {low:.1%} - {high:.1%}.")))
columns[1].metric("Model error rate", "-" if error_rate is None else f"{error_rate:.1%}",
                  help=("The model's error rate on the same images: where the model is wrong the label is flagged "
                        "too."
                        + ("" if error_low is None else f" 95 % interval {error_low:.1%} - {error_high:.1%}.")))
columns[2].metric("Flagged images", f"{section.get('n_label_issues', 0):,}")
columns[3].metric("Images", f"{section.get('n_images', len(images)):,}")
columns[4].metric("Probabilities", str(section.get("source", "-")),
                  help="Whose probabilities ranked the suspects: model (the audited model's), probe (a classifier "
                       "trained out-of-sample on the model's embeddings), combined (their mean) or predictions (a "
                       "predictions file).")
sentence = disagreement_sentence(section)
if sentence:
    st.caption(_state.escape_markdown(sentence) + " Probabilities: "
               + _state.escape_markdown(section.get("source_description", section.get("source", ""))) + ".")
reason = (section.get("source_choice") or {}).get("reason")
if reason:
    # "auto: the audit has no embeddings, ..." -> "picked by --label-noise-source auto (the audit has ...)"
    automatic = reason.startswith(AUTO_PREFIX)
    st.caption("Probabilities " + ("picked by `--label-noise-source auto` ("
                                   + _state.escape_markdown(reason[len(AUTO_PREFIX):]) + ")." if automatic
                                   else "used: " + _state.escape_markdown(reason) + "."))
for name, entry in (section.get("alternatives") or {}).items():
    alt_rate, alt_error = entry.get("label_disagreement_rate"), entry.get("model_error_rate")
    st.caption(_state.escape_markdown(
        f"Cross-check, {entry.get('description', name)}: disagreement "
        f"{'-' if alt_rate is None else f'{alt_rate:.1%}'} ({entry.get('n_label_issues')} images), error rate "
        f"{'-' if alt_error is None else f'{alt_error:.1%}'}."))
_state.show_review_status(audit)

decisions, summary = _state.review_state(audit)
resolved = reviews.resolve_decisions(decisions)
conflicts = resolved[resolved["decision"] == reviews.CONFLICT]
if len(conflicts):
    st.warning(f"{len(conflicts)} image(s) have conflicting review decisions; both sides are kept below.")
    shown = conflicts.merge(images[["id", "content_hash", "label"]].astype({"id": str}), on=["id", "content_hash"],
                            how="left")
    st.dataframe(shown[["id", "label", "details", "decided_at"]], hide_index=True, width="stretch",
                 key="labels_conflicts")

# -- rates ------------------------------------------------------------------------------------------------
per_class = pd.DataFrame(section.get("per_class", []))
left, right = st.columns(2)
if not per_class.empty and "label_disagreement_rate" in per_class.columns:
    left.plotly_chart(figures.class_metric_figure(per_class.rename(columns={"label_disagreement_rate": "value"}),
                                                  metric=metric_label(METRIC), higher_is_better=False),
                      config=_charts.CONFIG, width="stretch", key="labels_per_class")
metrics = audit.group_metrics
noise_rows = metrics[(metrics["metric"] == METRIC) & (metrics["class"] == "")
                     & (metrics["attribute"] != "all")] if not metrics.empty else metrics
if not noise_rows.empty:
    attribute_names = list(dict.fromkeys(noise_rows["attribute"]))
    chosen = right.selectbox("Disagreement rate by", attribute_names, key="labels_noise_attribute",
                             format_func=attribute_label)
    rows = noise_rows[noise_rows["attribute"] == chosen]
    right.plotly_chart(figures.group_metric_figure(rows, metric=metric_label(METRIC), attribute=chosen,
                                                   overall=rate, higher_is_better=False),
                       config=_charts.CONFIG, width="stretch", key="labels_per_group")

# Every disagreement rate beside the model's error rate on the same images (the confound).
if not metrics.empty:
    key = ["attribute", "group", "class"]
    rates = metrics[metrics["metric"] == METRIC][key + ["n", "value", "ci_low", "ci_high"]]
    errors = metrics[metrics["metric"] == ERROR_METRIC][key + ["value", "ci_low", "ci_high"]]
    if not rates.empty:
        table = rates.merge(errors, on=key, how="left", suffixes=("", "_error"))
        table = table[(table["attribute"] == "all") | (table["class"] == "")]
        # attributes as stored, then groups in natural order (0-2, 3-9, 10-19; the stored order is text order)
        first_seen = {name: i for i, name in enumerate(dict.fromkeys(table["attribute"]))}
        classes_order = {name: i for i, name in enumerate(audit.classes)}
        table = table.iloc[sorted(range(len(table)), key=lambda i: (
            first_seen[table["attribute"].iloc[i]], group_sort_key(table["group"].iloc[i]),
            classes_order.get(table["class"].iloc[i], -1)))]
        table = table.assign(attribute=table["attribute"].map(attribute_label))
        table = table.rename(columns={"n": "images", "value": metric_label(METRIC), "ci_low": "disagreement low",
                                      "ci_high": "disagreement high", "value_error": metric_label(ERROR_METRIC),
                                      "ci_low_error": "error low", "ci_high_error": "error high"})
        with st.expander("Disagreement and model error rate, overall, per class and per group"):
            st.dataframe(table, hide_index=True, width="stretch", key="labels_rates_table",
                         column_config={c: st.column_config.NumberColumn(format="percent")
                                        for c in table.columns if "rate" in c or c.endswith(("low", "high"))})

matrices = {"noise matrix P(given | true)": "noise_matrix", "confident joint (counts, given x true)": "confident_joint",
            "inverse noise matrix P(true | given)": "inverse_noise_matrix", "joint P(given, true)": "joint"}
available = {label: key for label, key in matrices.items() if section.get(key)}
if available:
    label = st.selectbox("Transition matrix", list(available), key="labels_matrix")
    key = available[label]
    matrix = section[key]
    inverse = key == "inverse_noise_matrix"
    chart = figures.noise_matrix_figure(matrix, audit.classes) if key == "noise_matrix" else None
    if chart is not None:
        chart.update_traces(text=[[f"{v:.3g}" if v is not None else "" for v in row] for row in matrix],
                            texttemplate="%{text}")
        st.plotly_chart(chart, config=_charts.CONFIG, width="stretch", key="labels_matrix_chart")
    else:
        cells = [[f"{v:.3g}" if v is not None else "" for v in row] for row in matrix]
        st.plotly_chart(_charts.heatmap(matrix, x=audit.classes, y=audit.classes, text=cells, title=label,
                                        x_title="given label" if inverse else "true label (estimated)",
                                        y_title="true label (estimated)" if inverse else "given label",
                                        colorbar_title=""), config=_charts.CONFIG, width="stretch",
                        key="labels_matrix_chart")

# -- gallery ----------------------------------------------------------------------------------------------
st.subheader("Suspect images")


def _remember_reviewer() -> None:
    # Kept in the session (across pages) and in the address (?reviewer=..., across reloads and bookmarks).
    name = (st.session_state.get("reviewer_name") or "").strip()
    st.session_state["reviewer"] = name
    if name:
        st.query_params["reviewer"] = name
    else:
        st.query_params.pop("reviewer", None)


if "reviewer_name" not in st.session_state:
    st.session_state["reviewer_name"] = st.session_state.get("reviewer") or st.query_params.get("reviewer", "")
reviewer = st.text_input("Your name (recorded with each decision)", key="reviewer_name", on_change=_remember_reviewer)
if reviewer and st.query_params.get("reviewer") != reviewer.strip():
    st.query_params["reviewer"] = reviewer.strip()
queue = st.radio("Queue", [_review.QUEUE_SUSPECTS, _review.QUEUE_RANDOM], horizontal=True, key="labels_queue",
                 help="Ranked suspects: the images the model most disagrees with (fast to find errors, but not a "
                      "sample of the data). Random sample: a stratified random sample whose decisions give the "
                      "verified label-error rate of the whole data set.")
if queue == _review.QUEUE_RANDOM:
    _review.show_verified(audit, detail=True)
    _review.draw_sample_controls(audit)
    view = _review.random_queue(audit, images)
    if view is None:
        st.info("No random sample yet: draw one above (or with `python -m audit review DIR --sample N --out "
                "FILE.csv`).")
        st.stop()
    if st.toggle("Unreviewed only", value=False, key="queue_unreviewed"):
        done = set(resolved["id"].astype(str)) if not resolved.empty else set()
        view = view[~view["id"].astype(str).isin(done)]
else:
    filters = st.columns([1, 1, 1, 1, 1])
    only_flagged = filters[0].toggle("Flagged only", value=True, key="gallery_flagged")
    class_filter = filters[1].multiselect("Given label", audit.classes, key="gallery_classes")
    group_attributes = [a for a in (audit.audit.get("dataset", {}).get("group_attributes") or []) +
                        (audit.audit.get("dataset", {}).get("pixel_attributes") or []) if a in images.columns]
    group_attribute = filters[2].selectbox("Group attribute", ["(any)"] + group_attributes, key="gallery_attribute",
                                           format_func=attribute_label)
    group_value = None
    if group_attribute != "(any)":
        values = sort_groups(images[group_attribute].dropna().astype(str))
        group_value = filters[3].selectbox("Group", values, key="gallery_group")
    score_range = filters[4].slider("Label score", 0.0, 1.0, (0.0, 1.0), step=0.01, key="gallery_score",
                                    help="Lower = the model gives the given label less probability (more suspect).")

    view = images
    if only_flagged:
        view = view[view["is_label_issue"].astype(bool)]
    if class_filter:
        view = view[view["label"].astype(str).isin(class_filter)]
    if group_value is not None:
        view = view[view[group_attribute].astype(str) == group_value]
    view = view[view["label_score"].between(score_range[0], score_range[1])]
    view = view.sort_values("label_score", kind="stable")
page_size = _state.GALLERY_PAGE_SIZE
n_pages = max(1, -(-len(view) // page_size))
pager = st.columns([1, 3])
page = pager[0].number_input("Page", min_value=1, max_value=n_pages, value=1, step=1, key="gallery_page")
pager[1].caption(f"{len(view):,} images match; page {page} of {n_pages}, {page_size} per page.")
visible = view.iloc[(page - 1) * page_size: page * page_size]

current = resolved.astype({"id": str}).set_index(["id", "content_hash"]) if not resolved.empty else None
DECISION_LABELS = {"label_wrong": "label wrong -> new label", "label_correct": "label correct", "unsure": "unsure"}
DECISION_IN_DETAILS = re.compile(r": (label_wrong|label_correct)\b")


def _review_status(image_id, content_hash) -> str | None:
    key = (str(image_id), str(content_hash))
    if current is None or key not in current.index:
        return None
    decided = current.loc[key]
    marker = "CONFLICT - " if decided["decision"] == reviews.CONFLICT else ""
    # "ann: label_wrong -> dog" -> "ann: label wrong -> dog" (the stored decision names in words)
    details = DECISION_IN_DETAILS.sub(lambda m: ": " + DECISION_LABELS.get(m.group(1), m.group(1)).split(" ->")[0],
                                      str(decided["details"]))
    return f"reviewed: {marker}{details}"


def _select(image_id: str) -> None:
    st.session_state["review_selected"] = image_id


# One review panel beside the grid (a form for the selected image) keeps the page light: the grid holds
# thumbnails, text and one button per image, not four widgets per image.
visible_ids = visible["id"].astype(str).tolist()
selected = st.session_state.get("review_selected")
if selected not in visible_ids:
    unreviewed = [i for i, h in zip(visible_ids, visible["content_hash"]) if _review_status(i, h) is None]
    selected = (unreviewed or visible_ids or [None])[0]
grid_area, panel = st.columns([3, 1.3])
columns = _state.GALLERY_COLUMNS
grid = grid_area.columns(columns)
for position, row in enumerate(visible.itertuples(index=False)):
    card = grid[position % columns].container(border=True)
    picture = _state.thumbnail(str(row.path))
    if picture is None:
        card.caption("(image not readable)")
    else:
        card.image(picture, width="stretch")
    card.text(f"{row.id}")
    card.text(f"given: {row.label}\nsuggested: {row.suggested_label}\nscore: {row.label_score:.3f}")
    if getattr(row, "stratum", None):
        card.text(f"random sample #{row.draw}: {str(row.stratum).replace('_', ' ')}")
    status = _review_status(row.id, row.content_hash)
    if status:
        card.text(status)
    card.button("Reviewing" if str(row.id) == selected else "Review", key=f"pick_{row.id}",
                type="primary" if str(row.id) == selected else "secondary", on_click=_select, args=(str(row.id),))

if selected is not None:
    row = visible[visible["id"].astype(str) == selected].iloc[0]
    box = panel.container(border=True)
    box.markdown("**Review**")
    picture = _state.thumbnail(str(row["path"]), 320)
    if picture is not None:
        box.image(picture, width="stretch")
    box.text(f"{row['id']}\ngiven: {row['label']}\nsuggested: {row['suggested_label']}\n"
             f"score: {row['label_score']:.3f}")
    status = _review_status(row["id"], row["content_hash"])
    if status:
        box.text(status)
    with box.form("review_form", border=False):
        decision = st.radio("Decision", list(DECISION_LABELS), format_func=DECISION_LABELS.get, index=None,
                            key=f"decision_{selected}")
        suggested = str(row["suggested_label"])
        new_label = st.selectbox("New label", audit.classes,
                                 index=audit.classes.index(suggested) if suggested in audit.classes else 0,
                                 key=f"new_label_{selected}")
        note = st.text_input("Note", key=f"note_{selected}")
        if st.form_submit_button("Save decision", type="primary"):
            try:
                reviews.record_decision(audit.folder, image_id=str(row["id"]), content_hash=str(row["content_hash"]),
                                        reviewer=reviewer,
                                        decision=decision, new_label=new_label if decision == "label_wrong" else None,
                                        note=note, classes=audit.classes)
            except InputError as error:
                st.error(str(error))
            else:
                st.session_state["review_saved"] = f"Saved: {selected} - {DECISION_LABELS[decision]}"
                st.session_state.pop("review_selected", None)  # move on to the next unreviewed image
                st.rerun()
if st.session_state.get("review_saved"):
    st.toast(st.session_state.pop("review_saved"))
