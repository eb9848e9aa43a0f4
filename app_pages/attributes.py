"""Attributes: groups of each attribute, intersections of any pair, class x attribute associations, reference."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import _charts, _state
from audit.display import attribute_label, group_sort_key, sort_groups
from audit.report import figures

#: Words for the association table's columns.
ASSOCIATION_COLUMNS = {"n_groups": "groups", "cramers_v": "Cramér's V", "chi2": "chi-square",
                       "dof": "degrees of freedom", "p_value": "p", "p_value_adjusted": "adjusted p", "significant": "significant",
                       "low_expected_counts": "low expected counts"}

audit = _state.current_audit()
st.title("Attributes")
distribution = audit.analyses.get("attribute_distribution")
if not distribution:
    st.info("This audit has no attribute distribution (no group attributes, or the analysis failed).")
    st.stop()

attributes = distribution.get("attributes", {})
names = list(attributes)
attribute = st.selectbox("Attribute", names, key="attr_attribute", format_func=attribute_label)
entry = attributes[attribute]
groups = pd.DataFrame(entry.get("groups", []))
columns = st.columns(4)
columns[0].metric("Groups", entry.get("n_groups", len(groups)))
columns[1].metric("Missing values", entry.get("n_missing", 0),
                  help=f"Share missing: {entry.get('missing_rate', 0):.1%}" if entry.get("missing_rate") is not None
                  else None)
columns[2].metric("Small groups", entry.get("n_small_groups", 0),
                  help=f"Fewer than {distribution.get('min_group_size')} images.")
columns[3].metric("Minimum group size", distribution.get("min_group_size", "-"))
if not groups.empty:
    st.plotly_chart(figures.group_shares_figure(entry["groups"], attribute=attribute), config=_charts.CONFIG,
                    width="stretch",
                    key="attr_shares")
    st.caption(f"Grey bars: groups smaller than {distribution.get('min_group_size')} images.")

reference = entry.get("reference")
if reference:
    st.subheader("Comparison with reference proportions")
    rows = pd.DataFrame(reference.get("rows", []))
    if not rows.empty:
        rows = figures.sort_rows(rows)  # natural group order (0-2, 3-9, 10-19)
        st.plotly_chart(_charts.grouped_bar({"observed": rows["observed_share"], "reference": rows["expected_share"]},
                                            rows["group"], title=f"{attribute_label(attribute)}: observed vs reference share",
                                            value_title="share"), config=_charts.CONFIG, width="stretch",
                        key="attr_reference")
        st.dataframe(rows, hide_index=True, width="stretch")
    if reference.get("p_value") is not None:
        st.write(f"Goodness of fit: chi-square {reference.get('chi2'):.2f}, {reference.get('dof')} degrees of freedom, "
                 f"p = {reference.get('p_value'):.3g}.")
    if reference.get("groups_not_in_reference"):
        st.caption("Groups not in the reference: " + _state.escape_markdown(", ".join(reference["groups_not_in_reference"])))

# -- intersections ----------------------------------------------------------------------------------------
intersections = distribution.get("intersections", {})
pairs = {tuple(v.get("attributes", [])): k for k, v in intersections.items() if len(v.get("attributes", [])) == 2}
if pairs:
    st.subheader("Intersections")
    left, right = st.columns(2)
    first = left.selectbox("Rows", names, index=0, key="attr_pair_first", format_func=attribute_label)
    second = right.selectbox("Columns", [n for n in names if n != first], index=0, key="attr_pair_second",
                             format_func=attribute_label)
    key = pairs.get((first, second)) or pairs.get((second, first))
    if key is None:
        st.info("This pair was not analysed (see the audit's intersection depth).")
    else:
        block = intersections[key]
        row_attr, column_attr = block["attributes"]
        row_values = sort_groups(g["group"] for g in attributes[row_attr]["groups"])
        column_values = sort_groups(g["group"] for g in attributes[column_attr]["groups"])
        cells = {}
        for group in block.get("groups", []):
            for value in sorted(row_values, key=len, reverse=True):
                if group["group"].startswith(value + " & "):
                    cells[(value, group["group"][len(value) + 3:])] = group
                    break
        z = [[cells.get((r, c), {}).get("n", 0) for c in column_values] for r in row_values]
        text = [[f"{cells[(r, c)]['n']}" + (" (small)" if cells[(r, c)].get("is_small") else "")
                 if (r, c) in cells else "0 (empty)" for c in column_values] for r in row_values]
        st.plotly_chart(_charts.heatmap(z, x=column_values, y=row_values, text=text,
                                        title=f"Images by {attribute_label(row_attr)} x {attribute_label(column_attr)}",
                                        x_title=attribute_label(column_attr), y_title=attribute_label(row_attr),
                                        colorbar_title="images"),
                        config=_charts.CONFIG, width="stretch", key="attr_intersection")
        st.caption(f"{block.get('n_cells_empty', 0)} of {block.get('n_cells_possible', 0)} cells empty, "
                   f"{block.get('n_small_groups', 0)} small.")

# -- associations -----------------------------------------------------------------------------------------
associations = audit.analyses.get("associations")
if associations:
    st.subheader("Class x attribute association")
    summary = pd.DataFrame(associations.get("attributes", []))
    if not summary.empty:
        st.plotly_chart(figures.association_figure(associations.get("attributes", [])), config=_charts.CONFIG,
                        width="stretch",
                        key="attr_assoc_strength")
        shown = [c for c in ("attribute", "n_groups", "cramers_v", "chi2", "dof", "p_value", "p_value_adjusted",
                             "significant", "low_expected_counts") if c in summary.columns]
        summary = summary.assign(attribute=summary["attribute"].map(attribute_label))
        st.dataframe(summary[shown].rename(columns=ASSOCIATION_COLUMNS), hide_index=True, width="stretch",
                     key="attr_assoc_table")
    contingency = associations.get("contingency", {})
    if contingency:
        chosen = st.selectbox("Attribute for the class x group heatmap", list(contingency), key="attr_assoc_attribute",
                              format_func=attribute_label)
        table = dict(contingency[chosen])
        # groups (columns) in natural order: 0-2, 3-9, 10-19 (the stored order sorts them as text)
        permutation = sorted(range(len(table["groups"])), key=lambda j: group_sort_key(table["groups"][j]))
        table["groups"] = [table["groups"][j] for j in permutation]
        for name in ("counts", "adjusted_residuals"):
            table[name] = [[row[j] for j in permutation] for row in table[name]]
        significant = set()
        for item in associations.get("attributes", []):
            if item.get("attribute") == chosen:
                significant = {(c["class"], c["group"]) for c in item.get("cells", []) if c.get("significant")}
        text = [[f"{count}" + (" *" if (cls, grp) in significant else "") for grp, count in zip(table["groups"], row)]
                for cls, row in zip(table["classes"], table["counts"])]
        st.plotly_chart(_charts.heatmap(table["adjusted_residuals"], x=table["groups"], y=table["classes"], text=text,
                                        colorscale="RdBu_r", zmid=0, x_title=attribute_label(chosen), y_title="class",
                                        colorbar_title="adjusted residual",
                                        title=f"Class x {attribute_label(chosen)}: adjusted residuals (text: images; "
                                              "* significant)"),
                        config=_charts.CONFIG, width="stretch", key="attr_assoc_heatmap")
        st.caption("Red: more images than independence predicts; blue: fewer. * = significant after "
                   "multiple-comparison control.")
