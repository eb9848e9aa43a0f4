"""What a new user reads (issue 12 item 7), outside the app: balanced or tied classes are never named at
random, leakage is not reported as "0 pairs" without splits, metric names and group orders are words and
numbers, in the engine, the policy messages, the findings and the reports."""
import json

import pandas as pd
import pytest

from audit.analysis.distribution import compute_class_distribution
from audit.display import LEAKAGE_NOT_CHECKED_NO_SPLITS
from audit.findings import imbalance_sentence
from audit.folder import load_audit_json, load_group_metrics
from audit.policy import evaluate_policy, policy_from_dict
from audit.report.render import build_report
from tests.audit_builder import build_audit_folder


def test_balanced_classes_list_every_tied_class():
    balanced = compute_class_distribution(pd.Series(["b", "a", "b", "a"]), classes=["a", "b"]).to_dict()
    assert balanced["is_balanced"] and balanced["smallest_classes"] == balanced["largest_classes"] == ["a", "b"]
    tied = compute_class_distribution(pd.Series(list("aabbc")), classes=["a", "b", "c", "d"]).to_dict()
    assert not tied["is_balanced"]
    assert (tied["largest_classes"], tied["smallest_classes"]) == (["a", "b"], ["c"])  # d is empty, not smallest
    assert (tied["largest_class"], tied["smallest_class"]) == ("a", "c")


def test_imbalance_finding_names_all_tied_classes():
    assert imbalance_sentence({"a": 10, "b": 10, "c": 2}, 5.0) == \
        "Classes are imbalanced: a and b have 10 images each, 5.0x as many as c (2)."
    assert imbalance_sentence({"a": 10, "b": 2, "c": 2}, 5.0) == \
        "Classes are imbalanced: a has 10 images, 5.0x as many as b and c (2 each)."


def _balanced(folder):
    audit = json.loads((folder / "audit.json").read_text())
    audit["analyses"]["class_distribution"]["counts"] = {c: 200 for c in audit["classes"]}
    audit["analyses"]["class_distribution"]["imbalance_ratio"] = 1.0
    audit["dataset"]["splits"] = []
    (folder / "audit.json").write_text(json.dumps(audit))
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # age-like values that sort wrongly as text ("10-19" < "3-9")
    return _balanced(build_audit_folder(tmp_path_factory.mktemp("readable") / "audit", gender_values=("3-9", "10-19"),
                                        n_image_files=0))


def test_policy_messages_single_out_no_class_or_group_at_random(folder):
    policy = policy_from_dict({"representation": {"max_class_imbalance_ratio": 3, "min_group_images": 5}})
    checks = evaluate_policy(load_audit_json(folder), load_group_metrics(folder), policy).checks
    imbalance = next(c for c in checks if c.name == "representation.max_class_imbalance_ratio")
    assert imbalance.class_ == "" and imbalance.message.startswith("classes balanced (200 images each)")
    tie = {"analyses": {"class_distribution": {"counts": {"a": 9, "b": 9, "c": 3}, "imbalance_ratio": 3.0},
                        "attribute_distribution": {"attributes": {"age": {"groups": [
                            {"group": "10-19", "n": 4}, {"group": "3-9", "n": 4}, {"group": "0-2", "n": 9}]}}}},
           "dataset": {"group_attributes": ["age"]}}
    checks = {c.name: c for c in evaluate_policy(tie, pd.DataFrame(), policy).checks}
    check = checks["representation.max_class_imbalance_ratio"]
    assert check.message.startswith("largest classes a and b (9 each) / smallest c (3) = 3") and check.class_ == "c"
    check = checks["representation.min_group_images"]
    assert check.group == "3-9" and check.message.startswith("3 groups; smallest 3-9 and 10-19 with 4 images each")


def test_report_reads_as_words_in_natural_order(folder):
    report = build_report(folder, thumbnails=False)
    classes = report.sections["composition"]["classes"]
    assert classes["balanced"] and classes["largest_n"] == "200 images each"
    gender = next(a for a in report.sections["composition"]["attributes"] if a["name"] == "gender")
    assert [r["group"] for r in gender["rows"]] == ["3-9", "10-19"]
    table = next(t for t in report.sections["performance"]["tables"] if t["attribute"] == "gender")
    assert [r["group"] for r in table["rows"]] == ["3-9", "10-19"]
    assert {r["verdict"] for r in table["rows"]} <= {"worse than the rest", "no evidence of a gap", "insufficient data"}
    quality = report.sections["data_quality"]
    assert quality["leakage_not_checked"] == LEAKAGE_NOT_CHECKED_NO_SPLITS
    assert ("train/test leakage", "not checked: the data has no split column") in quality["items"]
    assert not any("n_pairs" in k or "_" in k for k, _ in quality["items"])
    from audit.report.html import render_html

    html = render_html(report)
    assert "balanced (200 images each)" in html and "no_evidence_of_gap" not in html


def test_policy_ties_between_groups_go_to_the_natural_order(folder):
    gm = load_group_metrics(folder)
    chosen = (gm["attribute"] == "gender") & (gm["metric"] == "accuracy") & (gm["class"] == "")
    gm.loc[chosen, ["value", "ci_low", "ci_high", "insufficient_evidence"]] = [0.5, 0.45, 0.55, False]
    policy = policy_from_dict({"performance": {"min_worst_group": 0.8}})
    check = next(c for c in evaluate_policy(load_audit_json(folder), gm, policy).checks if c.attribute == "gender")
    assert check.group == "3-9" and "below the limit: 3-9 0.5" in check.message  # not "10-19", first as text
