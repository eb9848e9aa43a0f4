"""Compare: pick two audits from reports/, see what changed (old vs new side by side, dumbbells with
intervals per group, changed images with thumbnails). The comparison is computed by the engine
(``audit.compare``) into ``reports/.comparisons/OLD__vs__NEW`` once and then read from there."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import _state
from audit.display import attribute_label, metric_label

st.title("Compare two audits")
audits = [str(p) for p in _state.list_audits()]
if len(audits) < 2:
    st.info("Comparing needs two audit folders under reports/ (for example a release and its baseline). "
            "Write a second one with `python -m audit run ... --out reports/NAME`.")
    st.stop()

pick = st.columns(2)
old_dir = pick[0].selectbox("OLD (baseline)", audits, index=0, format_func=lambda p: Path(p).name, key="cmp_old")
new_choices = [a for a in audits if a != old_dir]
new_dir = pick[1].selectbox("NEW (release)", new_choices, index=0, format_func=lambda p: Path(p).name, key="cmp_new")

from audit.compare.folder import is_comparison_folder, load_comparison_folder  # noqa: E402
from audit.errors import InputError  # noqa: E402

target = _state.reports_dir() / ".comparisons" / f"{Path(old_dir).name}__vs__{Path(new_dir).name}"
fresh = is_comparison_folder(target) and all(
    (Path(d) / "audit.json").stat().st_mtime_ns <= (target / "comparison.json").stat().st_mtime_ns
    for d in (old_dir, new_dir))
if not fresh:
    if not st.button("Compare", key="cmp_run", type="primary"):
        st.caption("Reads both folders (no model is re-run) and writes the comparison under reports/.comparisons/.")
        st.stop()
    from audit.compare.folder import compare_folders, write_comparison_folder

    try:
        with st.spinner("Comparing..."):
            result = compare_folders(old_dir, new_dir)
            write_comparison_folder(target, result.comparison, result.image_changes)
    except InputError as error:
        st.error(_state.escape_markdown(str(error)))
        st.stop()
try:
    folder = load_comparison_folder(target)
except InputError as error:
    st.error(_state.escape_markdown(str(error)))
    st.stop()
c = folder.comparison
esc = _state.escape_markdown

# side by side -------------------------------------------------------------------------------------------
sides = st.columns(2)
for column, key, title in ((sides[0], "old", "OLD"), (sides[1], "new", "NEW")):
    side = c[key]
    column.subheader(f"{title}: {esc(Path(side['path']).name)}")
    column.metric("Images", f"{side['n_images']:,}")
    overall = [r for r in c["model"].get("rows", []) if r["attribute"] == "all" and r["class"] == ""
               and r["metric"] == c["model"].get("primary_metric")]
    if overall:
        r = overall[0]
        column.metric(f"{r['metric']} ({r['method']})", f"{100 * r[key]:.1f} %",
                      delta=None if key == "old" else f"{100 * r['difference']:+.1f} points")
counts = c["matching"]["counts"]
st.dataframe(pd.DataFrame([counts]), hide_index=True, key="cmp_counts")
for note in c["notes"]:
    st.warning(esc(note))

st.subheader("Findings")
for i, text in enumerate(c["findings"][:12], 1):
    st.markdown(f"{i}\\. {esc(text)}")
if c.get("multiplicity"):
    from audit.compare.multiplicity import tests_made_sentence  # noqa: E402

    st.caption(esc(tests_made_sentence(c["multiplicity"])), help=c["multiplicity"]["description"])

# dumbbells ------------------------------------------------------------------------------------------------
from audit.compare.report import dumbbell_charts  # noqa: E402  (SVG with every label escaped)

charts = dumbbell_charts(c)
if charts:
    st.subheader("Old vs new by group (95 % intervals)")
    titles = [t for t, _ in charts]
    chosen = st.selectbox("Chart", titles, key="cmp_chart")
    st.image(dict(charts)[chosen], use_container_width=False)

st.subheader("Metric changes")
rows = pd.DataFrame(c["model"].get("rows", []) + c["labels"].get("rows", []))
if not rows.empty:
    verdicts = st.multiselect("Verdicts", ["regressed", "improved", "no_evidence_of_change", "insufficient_data"],
                              default=["regressed", "improved"], key="cmp_verdicts")
    shown = rows[rows["verdict"].isin(verdicts)]
    if shown.empty:
        st.caption(f"No row with the verdicts {', '.join(v.replace('_', ' ') for v in verdicts) or '(none picked)'} "
                   f"among {len(rows):,}; pick others above.")
    else:
        shown = shown[["verdict", "scope", "attribute", "group", "class", "metric", "method", "n_old", "n_new",
                       "old", "new", "difference", "ci_low", "ci_high", "p_adjusted"]]
        shown = shown.assign(verdict=shown["verdict"].str.replace("_", " "),
                             attribute=shown["attribute"].map(attribute_label), metric=shown["metric"].map(metric_label))
        shown.columns = [{"n_old": "images OLD", "n_new": "images NEW", "old": "OLD", "new": "NEW",
                          "ci_low": "95 % CI low", "ci_high": "95 % CI high",
                          "p_adjusted": "adjusted p"}.get(c, c) for c in shown.columns]
        st.dataframe(shown, hide_index=True, key="cmp_rows")

# changed images ----------------------------------------------------------------------------------------
st.subheader("Changed images")
changes = folder.image_changes
kinds = [k for k in ("relabelled", "replaced", "added", "removed") if (changes["change"] == k).any()]
if not kinds:
    st.caption("No image was added, removed, relabelled or replaced.")
else:
    kind = st.selectbox("Change", kinds, key="cmp_change")
    subset = changes[changes["change"] == kind]
    st.caption(f"{len(subset):,} image(s); the first {min(len(subset), _state.GALLERY_PAGE_SIZE)} shown.")
    from audit.compare.report import changed_images  # noqa: E402

    import types

    picked = types.SimpleNamespace(image_changes=subset)
    items = changed_images(picked, c, thumbnails=True, limit=_state.GALLERY_PAGE_SIZE)
    grid = st.columns(_state.GALLERY_COLUMNS)
    for i, item in enumerate(items):
        cell = grid[i % _state.GALLERY_COLUMNS]
        if item["thumbnail"]:
            cell.image(item["thumbnail"], width=96)
        cell.text(f"{item['id']}\n{item['label_old']} -> {item['label_new']}"
                  + (f"\nreview: {item['review']}" if item["review"] else ""))
