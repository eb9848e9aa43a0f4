"""Audit-wide multiplicity (issue 13, item 4): scope, families, adjusted p-values, verdicts and findings."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.analysis._stats import adjust_p_values
from audit.analysis._table import GROUP_METRIC_COLUMNS, insufficient_by_size
from audit.analysis.multiplicity import (ERROR_CORRECTION, apply_audit_multiplicity, is_metadata_attribute,
                                         is_metadata_only)
from audit.findings import compose_findings


def _table() -> pd.DataFrame:
    rows = [
        # attribute, group, class, n, metric, value, p_value, insufficient
        ("all", "all", "", 1000, "accuracy", 0.8, np.nan, False),
        ("age", "0-2", "", 60, "accuracy", 0.6, 0.0004, False),
        ("age", "3-9", "", 60, "accuracy", 0.78, 0.4, False),
        ("race", "Black", "", 82, "accuracy", 0.67, 0.004, False),
        ("race", "White", "", 10, "accuracy", 0.9, 0.9, True),
        ("age", "0-2", "", 60, "macro_f1", 0.6, 0.0001, False),
        ("age", "0-2", "female", 30, "recall", 0.5, 0.01, False),
        ("age & race", "0-2 & Black", "", 40, "accuracy", 0.5, 0.00001, False),
        ("image_brightness_group", "dark", "", 50, "accuracy", 0.6, 0.02, False),
        ("age", "0-2", "", 60, "share", 0.06, np.nan, False),
        ("race", "Black", "", 82, "issue_rate:blurry", 0.07, 0.03, False),
    ]
    frame = pd.DataFrame(rows, columns=["attribute", "group", "class", "n", "metric", "value", "p_value",
                                        "insufficient_evidence"])
    frame["ci_low"], frame["ci_high"] = frame["value"] - 0.1, frame["value"] + 0.1
    frame["rest_value"] = 0.8
    frame["verdict"] = np.where(frame["insufficient_evidence"], "insufficient_data", "")
    return frame


def test_scope_families_and_verdicts():
    result = apply_audit_multiplicity(_table(), alpha=0.05)
    table = result.table
    assert tuple(table.columns) == GROUP_METRIC_COLUMNS
    scope = dict(zip(zip(table["attribute"], table["group"], table["class"], table["metric"]), table["scope"]))
    assert scope[("age", "0-2", "", "accuracy")] == "primary"
    assert scope[("race", "Black", "", "accuracy")] == "primary"
    assert scope[("race", "White", "", "accuracy")] == ""  # insufficient: not a test
    assert scope[("all", "all", "", "accuracy")] == ""
    assert scope[("age", "0-2", "", "share")] == ""
    for key in (("age", "0-2", "", "macro_f1"), ("age", "0-2", "female", "recall"),
                ("age & race", "0-2 & Black", "", "accuracy"), ("image_brightness_group", "dark", "", "accuracy"),
                ("race", "Black", "", "issue_rate:blurry")):
        assert scope[key] == "exploratory", key
    primary = table[table["scope"] == "primary"]
    np.testing.assert_allclose(primary["p_adjusted"], adjust_p_values(primary["p_value"], method="holm"))
    exploratory = table[table["scope"] == "exploratory"]
    np.testing.assert_allclose(exploratory["p_adjusted"], adjust_p_values(exploratory["p_value"], method="bh"))
    tested = table["scope"] != ""
    assert ((table.loc[tested, "verdict"] == "worse_than_rest") == (table.loc[tested, "p_adjusted"] < 0.05)).all()
    assert (table.loc[~tested & ~table["insufficient_evidence"], "verdict"] == "").all()
    assert (table.loc[table["insufficient_evidence"], "verdict"] == "insufficient_data").all()
    summary = result.to_dict()
    assert summary["n_tests"] == 8
    assert summary["families"]["primary"]["n_tests"] == 3
    assert summary["families"]["exploratory"]["n_tests"] == 5
    assert summary["primary_attributes"] == ["age", "race"]


def test_correction_bh_applies_to_the_primary_family_and_primary_metric_follows_the_policy():
    table = _table()
    holm = apply_audit_multiplicity(table, correction="holm").table
    bh = apply_audit_multiplicity(table, correction="bh").table
    primary = holm["scope"] == "primary"
    assert (bh.loc[primary, "p_adjusted"] <= holm.loc[primary, "p_adjusted"] + 1e-15).all()
    f1 = apply_audit_multiplicity(table, primary_metric="macro_f1").table
    assert set(f1.loc[f1["scope"] == "primary", "metric"]) == {"macro_f1"}
    with pytest.raises(ValueError) as error:
        apply_audit_multiplicity(table, correction="bonferroni")
    assert str(error.value) == ERROR_CORRECTION.format(value="bonferroni")


def test_attribute_kinds():
    assert is_metadata_attribute("age") and not is_metadata_attribute("age & race")
    assert not is_metadata_attribute("image_brightness_group") and not is_metadata_attribute("all")
    assert is_metadata_only("age & race") and not is_metadata_only("age & image_brightness_group")


def test_insufficient_evidence_depends_on_n_only():
    n = np.array([10, 30, 38, 39, 60, 500])
    flags = insufficient_by_size(n, min_group_size=30, max_ci_width=0.3)
    assert flags.tolist() == [True, True, True, False, False, False]
    assert insufficient_by_size([35], min_group_size=5, max_ci_width=0.3).tolist() == [True]


def test_findings_headline_from_primary_leads_from_exploratory_and_tests_counted():
    result = apply_audit_multiplicity(_table(), alpha=0.05)
    sections = {"multiplicity": result.to_dict()}
    findings = compose_findings(sections, result.table)
    texts = [f["text"] for f in findings]
    headline = [f for f in findings if f["analysis"] == "group_performance" and "points worse" in f["text"]]
    assert {("age = 0-2" in f["text"]) or ("race = Black" in f["text"]) for f in headline} == {True}
    assert all("against" in f["text"] and "for the rest of the data" in f["text"] for f in headline)
    assert all("Holm over 3 primary tests" in f["text"] for f in headline)
    leads = [f for f in findings if f["text"].startswith("Lead")]
    assert leads and all(f["severity"] == "low" and "adjusted p = " in f["text"] for f in leads)
    # the intersection containing a headline group restates it: not a lead; the pixel group is one
    assert not any("0-2 & Black" in f["text"] for f in leads)
    # the pixel attribute in words (audit.display.attribute_label), as every view names it
    assert any("image brightness = dark" in f["text"] for f in leads)
    assert not any("image_brightness_group" in t for t in texts)
    tests = [t for t in texts if t.startswith("This audit made 8 tests")]
    assert len(tests) == 1 and "3 primary" in tests[0] and "5 exploratory" in tests[0]


def test_a_lead_without_a_rest_value_says_no_against_n_a():
    """An annotator x group agreement row has no "rest of the data": the lead leaves the comparison out."""
    from audit.findings import _lead_findings

    rows = pd.DataFrame([{"attribute": "annotator & age", "group": "careless & 3-9", "class": "", "n": 100,
                          "metric": "annotation_agreement", "value": 0.35, "ci_low": 0.2, "ci_high": 0.5,
                          "insufficient_evidence": False, "verdict": "worse_than_rest", "scope": "exploratory",
                          "p_value": 1e-5, "p_adjusted": 8.6e-5, "rest_value": float("nan")}])
    (lead,) = _lead_findings(rows, {"families": {"exploratory": {"n_tests": 27}}})
    assert "n/a" not in lead["text"] and "for annotator & age = careless & 3-9 (n = 100); adjusted p" in lead["text"]
