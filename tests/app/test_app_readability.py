"""Issue 12 item 7 in the app (AppTest): what a new user reads. Balanced classes name no class at random,
leakage is not "0 pairs" without splits, model metrics and data rates are two lists, metric names are words,
age-like groups are listed in numeric order, charts carry no toolbar over their legends, and the Overview's
policy table shows each check's status and details in full."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from tests.app.apptest import open_app_page

from audit.display import LEAKAGE_NOT_CHECKED_NO_SPLITS
from audit.escaping import streamlit_markdown_code
from tests.audit_builder import build_audit_folder

LONG_MESSAGE = "9 groups; smallest 3-9 and 10-19 with 4 images each (minimum 30); " + "details " * 30


def _build(folder: Path, *, counts=None, splits=()) -> Path:
    """A synthetic audit whose ``gender`` values look like age bins (``10-19`` sorts before ``3-9`` as text),
    with per-group rates of one data-quality issue and a policy verdict with a long message."""
    build_audit_folder(folder, gender_values=("3-9", "10-19"), n_image_files=0, verdict={
        "status": "FAIL", "checks": [
            {"name": "representation.min_group_images", "status": "INSUFFICIENT_EVIDENCE", "value": 4.0,
             "threshold": 30.0, "attribute": "gender & age", "group": "10-19 & old", "class": "",
             "message": LONG_MESSAGE},
            {"name": "performance.min_worst_group", "status": "FAIL", "value": 0.5, "threshold": 0.8,
             "attribute": "gender", "group": "3-9", "class": "", "message": "below the limit"}]})
    audit = json.loads((folder / "audit.json").read_text())
    if counts is not None:
        audit["classes"] = list(counts)
        audit["analyses"]["class_distribution"].update(counts=counts, imbalance_ratio=max(counts.values()) /
                                                       min(counts.values()))
    audit["dataset"]["splits"] = list(splits)
    audit["analyses"]["group_performance"]["attributes"] = [{
        "attribute": "gender", "metrics": {"macro_f1": {"worst_group": "3-9", "worst_value": 0.7, "best_group": "10-19",
                                                        "best_value": 0.8, "difference": 0.1, "ratio": 0.875}},
        "equalized_odds_gap": {"value": 0.2, "class": audit["classes"][0], "rate": "tpr", "high_group": "10-19",
                               "low_group": "3-9"},
        "binary": {"positive_class_index": 1, "n_groups_compared": 2, "demographic_parity_difference": 0.125}}]
    audit["metrics"]["issue_rate:dark"] = {"higher_is_better": False, "description": "share flagged as too dark"}
    (folder / "audit.json").write_text(json.dumps(audit))
    table = pd.read_parquet(folder / "group_metrics.parquet")
    dark = table[(table["metric"] == "accuracy") & table["attribute"].isin(["all", "gender"])].copy()
    dark["metric"] = "issue_rate:dark"
    dark["value"] = np.linspace(0.05, 0.1, len(dark))
    pd.concat([table, dark], ignore_index=True).to_parquet(folder / "group_metrics.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def balanced(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("readable") / "balanced", counts={"cat": 200, "dog": 200, "fox": 200})


def _open(folder: Path, page: str, monkeypatch) -> AppTest:
    return open_app_page(folder, page, monkeypatch, check=True)


def _chart(app: AppTest, key: str):
    return next(c for c in app.get("plotly_chart") if c.proto.id.endswith(f"-{key}"))


def _metrics(app: AppTest) -> dict:
    return {m.label: m.value for m in app.metric}


def test_balanced_classes_name_no_smallest_or_largest_class(balanced, monkeypatch):
    shown = _metrics(_open(balanced, "classes", monkeypatch))
    assert shown["Classes"] == "balanced"
    assert "Smallest class" not in shown and "Largest class" not in shown


def test_tied_classes_are_all_named(tmp_path, monkeypatch):
    folder = _build(tmp_path / "tied", counts={"cat": 300, "dog": 300, "fox": 100})
    shown = _metrics(_open(folder, "classes", monkeypatch))
    assert shown["Largest classes (tied)"] == "cat and dog"
    assert shown["Smallest class"] == "fox"


def test_leakage_without_splits_says_it_was_not_checked(balanced, monkeypatch):
    app = _open(balanced, "quality", monkeypatch)
    assert LEAKAGE_NOT_CHECKED_NO_SPLITS in [i.value for i in app.info]
    assert not any("pair(s) across splits" in m.value for m in app.markdown)


def test_fairness_lists_model_metrics_apart_from_data_rates_in_words(balanced, monkeypatch):
    app = _open(balanced, "fairness", monkeypatch)
    assert app.radio(key="fair_kind").options == ["Model performance", "Data and label rates"]
    model = app.selectbox(key="fair_metric").options
    assert "accuracy" in model and not any("issue" in m or "noise" in m for m in model)
    app.radio(key="fair_kind").set_value("Data and label rates").run()
    rates = app.selectbox(key="fair_rate_metric")
    assert "share flagged as too dark" in rates.options
    rates.set_value("issue_rate:dark").run()
    app.selectbox(key="fair_attribute").set_value("gender").run()
    title = json.loads(_chart(app, "fair_metric_chart").proto.spec)["layout"]["title"]["text"]
    assert title.startswith("share flagged as too dark by gender") and "issue_rate" not in title


def test_age_like_groups_are_listed_in_numeric_order(balanced, monkeypatch):
    app = _open(balanced, "fairness", monkeypatch)
    app.selectbox(key="fair_attribute").set_value("gender").run()
    table = app.dataframe[0].value  # the per-group table under the chart
    assert table["group"].tolist() == ["3-9", "10-19"]
    assert list(table.columns) == ["group", "images", "accuracy", "95 % CI low", "95 % CI high",
                                   "too little evidence", "verdict"]
    layout = json.loads(_chart(app, "fair_metric_chart").proto.spec)["layout"]
    assert layout["yaxis"]["categoryarray"] == ["3-9", "10-19"]
    assert not layout.get("annotations")  # the reference lines are named in the legend, never overlapping
    app = _open(balanced, "attributes", monkeypatch)
    shares = json.loads(_chart(app, "attr_shares").proto.spec)
    assert shares["data"][0]["y"] == ["3-9", "10-19"]


def test_charts_have_no_toolbar_over_their_legends(balanced, monkeypatch):
    app = _open(balanced, "fairness", monkeypatch)
    charts = app.get("plotly_chart")
    assert charts and all(json.loads(c.proto.config).get("displayModeBar") is False for c in charts)


def test_overview_policy_table_shows_status_and_details_in_full(balanced, monkeypatch):
    app = _open(balanced, "overview", monkeypatch)
    # a static table wraps long cells; the scrolling data frame cut "INSUFFICIENT_EVIDENCE" and the details
    table = app.table[0].value
    assert table["status"].tolist() == ["FAIL", "INSUFFICIENT_EVIDENCE"]
    # st.table renders Markdown: the details are escaped (commands in backticks stay code spans)
    assert streamlit_markdown_code(LONG_MESSAGE) in table["details"].tolist()


def test_fairness_summary_in_words(balanced, monkeypatch):
    app = _open(balanced, "fairness", monkeypatch)
    app.selectbox(key="fair_attribute").set_value("gender").run()
    disparity = app.dataframe[1].value
    assert disparity["metric"].tolist() == ["macro-F1"] and "worst group" in disparity.columns
    text = " ".join(m.value for m in app.markdown).replace("\\", "")
    assert "true positive rate of class cat" in text and "tpr" not in text
    # the positive class by name and the number of groups as a count, not "positive class index 1.000"
    assert "positive class dog, 2 groups): demographic parity difference 0.125" in text
    assert "index" not in text and "2.000" not in text
