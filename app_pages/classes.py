"""Classes: distribution overall and per split, imbalance figures."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _charts, _state
from audit.display import join_names, tied_extremes
from audit.report import figures

audit = _state.current_audit()
st.title("Classes")
section = audit.analyses.get("class_distribution")
if not section:
    st.info("This audit has no class distribution (the analysis did not run; see Overview for errors).")
    st.stop()

classes = [c for c in audit.classes if c in section.get("counts", {})] or list(section.get("counts", {}))
counts = [section["counts"][c] for c in classes]
shares = [section.get("shares", {}).get(c) for c in classes]

columns = st.columns(4)
ratio = section.get("imbalance_ratio")
columns[0].metric("Imbalance ratio", "-" if ratio is None else f"{ratio:.2f}",
                  help="Largest class / smallest non-empty class.")
entropy = section.get("normalised_entropy")
columns[1].metric("Normalised entropy", "-" if entropy is None else f"{entropy:.3f}",
                  help="Entropy of the class shares / log K (1 = perfectly balanced).")
extremes = tied_extremes(section.get("counts", {}))
if extremes["balanced"]:
    # balanced data has no smallest or largest class: naming one would pick it at random
    columns[2].metric("Classes", "balanced", help=f"Every class has {section['counts'][extremes['smallest'][0]]:,} "
                                                  "images.")
else:
    for column, word in ((columns[2], "smallest"), (columns[3], "largest")):
        names = extremes[word]
        column.metric(f"{word.capitalize()} class" + ("es (tied)" if len(names) > 1 else ""),
                      join_names(names, limit=3) if names else "-",
                      help=f"{section['counts'][names[0]]:,} images" + (" each" if len(names) > 1 else "")
                      if names else None)
if section.get("empty_classes"):
    st.warning("Classes without images: " + _state.escape_markdown(", ".join(section["empty_classes"])))

st.plotly_chart(figures.class_counts_figure(section["counts"]), config=_charts.CONFIG, width="stretch",
                key="class_counts")
st.dataframe(pd.DataFrame({"class": classes, "images": counts, "share": shares}), hide_index=True,
             width="stretch", column_config={"share": st.column_config.NumberColumn(format="%.3f")})

by_split = section.get("by_split") or {}
if by_split:
    st.subheader("Per split")
    series = {split: [values.get(c, 0) for c in classes] for split, values in by_split.items()}
    st.plotly_chart(_charts.grouped_bar(series, classes, title="Images per class and split", value_title="images"),
                    config=_charts.CONFIG, width="stretch", key="class_by_split")
    shift = section.get("split_shift")
    if shift:
        p_value = shift.get("p_value")
        st.write(f"Class mix by split: chi-square {shift.get('chi2', 0):.2f} on {shift.get('dof')} degrees of "
                 f"freedom, p = {p_value:.3g}, Cramér's V = {shift.get('cramers_v', 0):.3f}"
                 if p_value is not None else "Class mix by split: no test.")
