"""One multiplicity story for a comparison, the same as for a single audit (:mod:`audit.analysis.multiplicity`).

A comparison makes many tests: every metric, group and class of the model (``model.rows``), the label rates
(``labels.rows``), every class and group share (``data.class_shares``, ``data.group_shares``) and the shift
test of each attribute (``data.shift_tests``). Each belongs to one of two families, adjusted across the whole
comparison:

* ``primary``: the release question. The whole data set and every group of a single *metadata* attribute
  (the audit's rule, :func:`audit.analysis.multiplicity.is_metadata_attribute`: not a pixel attribute
  ``image_*``, not an intersection) x the primary metric (the policy's ``[regression] metric``, default
  ``accuracy``), over all classes. Holm's step-down over all tested primary rows: the chance that *any*
  primary ``regressed``/``improved`` is a false alarm is at most ``alpha``.
* ``exploratory``: every other test of the comparison (other metrics, per-class rows, intersections, pixel
  attributes, label rates, share changes, shift tests). Benjamini-Hochberg over all of them together: the
  false discovery rate is at most ``alpha`` and, when nothing changed, so is the chance of any false alarm.

A test is *tested* (counted in its family) when it has a finite ``p_value`` and, for metric rows, not
``insufficient_evidence``. ``scope`` names the family a row belongs to whether or not it was tested (data
tests without a p-value get ``""``); ``p_adjusted`` is its adjusted p-value within the family (null when not
tested). A tested metric row is significant when ``p_adjusted < alpha`` (as ``worse_than_rest`` in an audit):
``regressed`` in the metric's harmful direction, else ``improved``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from audit.analysis._stats import adjust_p_values
from audit.analysis.multiplicity import METHOD_NAMES, is_metadata_attribute

PRIMARY, EXPLORATORY, NO_SCOPE = "primary", "exploratory", ""
#: Families and their adjustment (``comparison.json`` ``settings.correction``).
CORRECTION = {PRIMARY: "holm", EXPLORATORY: "bh"}

DESCRIPTION = ("Primary tests (the whole data set and each group of a single metadata attribute x the primary "
               "metric) form one family for the whole comparison, Holm-adjusted (family-wise error rate); every "
               "other test of the comparison (other metrics, classes, intersections, pixel attributes, label rates, "
               "share changes, shift tests) forms one exploratory family, Benjamini-Hochberg-adjusted (false "
               "discovery rate). p_adjusted is the adjusted p-value within the row's family; a row is significant "
               "when p_adjusted < alpha.")


def row_scope(attribute: str, class_: str, metric: str, primary_metric: str) -> str:
    """The family of one comparison row: ``primary`` or ``exploratory``."""
    attribute = str(attribute)
    if metric == primary_metric and class_ == "" and (attribute == "all" or is_metadata_attribute(attribute)):
        return PRIMARY
    return EXPLORATORY


def adjust_comparison(rows: pd.DataFrame, data_p_values=(), *, insufficient, primary_metric: str,
                      alpha: float) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Set ``scope`` and ``p_adjusted`` of every metric row and adjust the data tests with them.

    Parameters
    ----------
    rows : DataFrame
        Model and label rows (``attribute, group, class, metric, p_value``...).
    data_p_values : sequence of float
        Raw p-values of the comparison's data tests (share changes, shift tests), all exploratory; NaN: no test.
    insufficient : array of bool
        Metric rows not tested (too few images or too wide an interval).
    primary_metric : str
    alpha : float

    Returns
    -------
    rows : DataFrame
        With ``scope`` (the family) and ``p_adjusted`` (NaN when not tested).
    data_adjusted : ndarray
        ``p_adjusted`` of each data test (NaN when not tested).
    summary : dict
        ``comparison.json`` ``multiplicity`` without the verdict counts (see :func:`summarise`).
    """
    rows = rows.copy()
    scope = np.array([row_scope(a, c, m, primary_metric) for a, c, m in
                      zip(rows["attribute"], rows["class"], rows["metric"])], dtype=object)
    rows["scope"] = scope if len(rows) else pd.Series(dtype=object)
    p_rows = pd.to_numeric(rows["p_value"], errors="coerce").to_numpy(dtype=float)
    tested_rows = np.isfinite(p_rows) & ~np.asarray(insufficient, dtype=bool)
    p_data = np.asarray(list(data_p_values), dtype=float)
    tested_data = np.isfinite(p_data)
    primary = tested_rows & (scope == PRIMARY)
    exploratory = tested_rows & (scope == EXPLORATORY)
    adjusted_rows = np.full(len(rows), np.nan)
    adjusted_data = np.full(p_data.size, np.nan)
    if primary.any():
        adjusted_rows[primary] = adjust_p_values(p_rows[primary], method=CORRECTION[PRIMARY])
    n_exploratory = int(exploratory.sum())
    if n_exploratory or tested_data.any():
        pooled = adjust_p_values(np.concatenate([p_rows[exploratory], p_data[tested_data]]),
                                 method=CORRECTION[EXPLORATORY])
        adjusted_rows[exploratory] = pooled[:n_exploratory]
        adjusted_data[tested_data] = pooled[n_exploratory:]
    rows["p_adjusted"] = adjusted_rows
    summary = {
        "alpha": float(alpha),
        "primary_metric": primary_metric,
        "n_tests": int(primary.sum() + n_exploratory + tested_data.sum()),
        "families": {
            PRIMARY: {"n_tests": int(primary.sum()), "method": CORRECTION[PRIMARY],
                      "method_name": METHOD_NAMES[CORRECTION[PRIMARY]], "controls": "family-wise error rate"},
            EXPLORATORY: {"n_tests": int(n_exploratory + tested_data.sum()), "n_metric_tests": n_exploratory,
                          "n_data_tests": int(tested_data.sum()), "method": CORRECTION[EXPLORATORY],
                          "method_name": METHOD_NAMES[CORRECTION[EXPLORATORY]], "controls": "false discovery rate"},
        },
        "n_untested": int((~tested_rows).sum()),
        "description": DESCRIPTION,
    }
    return rows, adjusted_data, summary


def summarise(summary: dict, rows: pd.DataFrame, data_adjusted: np.ndarray) -> dict:
    """Add the counts of significant tests per family (``n_regressed``, ``n_improved``, ``n_data_significant``)."""
    summary = {**summary, "families": {k: dict(v) for k, v in summary["families"].items()}}
    for family in (PRIMARY, EXPLORATORY):
        in_family = rows["scope"] == family if len(rows) else pd.Series(dtype=bool)
        for verdict in ("regressed", "improved"):
            summary["families"][family][f"n_{verdict}"] = int((in_family & (rows["verdict"] == verdict)).sum()) \
                if len(rows) else 0
    alpha = summary["alpha"]
    summary["families"][EXPLORATORY]["n_data_significant"] = int(np.sum(np.nan_to_num(data_adjusted, nan=1.0) < alpha))
    return summary


def tests_made_sentence(summary: dict) -> str:
    """One plain sentence saying how many tests the comparison made and how they were controlled."""
    primary, exploratory = summary["families"][PRIMARY], summary["families"][EXPLORATORY]
    level = f"{100 * summary['alpha']:g} %"
    return (f"The comparison made {summary['n_tests']} tests: {primary['n_tests']} primary ({summary['primary_metric']}"
            f" overall and per group of each metadata attribute; Holm, family-wise error {level}: "
            f"{primary.get('n_regressed', 0)} regressed, {primary.get('n_improved', 0)} improved) and "
            f"{exploratory['n_tests']} exploratory (Benjamini-Hochberg, false discovery rate {level}: "
            f"{exploratory.get('n_regressed', 0)} regressed, {exploratory.get('n_improved', 0)} improved, "
            f"{exploratory.get('n_data_significant', 0)} share change(s) or shift(s)).")
