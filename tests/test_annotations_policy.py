"""Policy [annotation] checks: min_agreement (overall and per group) and max_annotator_error on intervals."""
import pandas as pd
import pytest

from audit.policy import (FAIL, INSUFFICIENT_EVIDENCE, PASS, SKIPPED, evaluate_policy, load_policy,
                          policy_from_dict)


def rows(*entries):
    columns = ["attribute", "group", "class", "n", "metric", "value", "ci_low", "ci_high", "insufficient_evidence",
               "verdict"]
    return pd.DataFrame([dict(zip(columns, entry)) for entry in entries], columns=columns)


def audit(annotators=None, group_attributes=()):
    analyses = {}
    if annotators is not None:
        analyses["annotations"] = {"method": "dawid_skene", "annotators": annotators}
    return {"analyses": analyses, "errors": [], "dataset": {"group_attributes": list(group_attributes)}}


GM = rows(("all", "all", "", 900, "annotation_agreement", 0.70, 0.66, 0.74, False, ""),
          ("site", "north", "", 500, "annotation_agreement", 0.75, 0.70, 0.80, False, "no_evidence_of_gap"),
          ("site", "south", "", 400, "annotation_agreement", 0.52, 0.45, 0.58, False, "worse_than_rest"))


def test_min_agreement_overall_and_per_group():
    policy = policy_from_dict({"annotation": {"min_agreement": 0.6}})
    verdict = evaluate_policy(audit([], group_attributes=["site"]), GM, policy)
    overall, site = verdict.checks
    assert (overall.name, overall.status, overall.value) == ("annotation.min_agreement", PASS, 0.70)
    assert (site.attribute, site.group, site.status) == ("site", "south", FAIL)
    assert verdict.status == FAIL
    straddle = evaluate_policy(audit([]), GM, policy_from_dict({"annotation": {"min_agreement": 0.72}}))
    assert straddle.checks[0].status == INSUFFICIENT_EVIDENCE


def test_max_annotator_error_judged_on_the_interval():
    annotators = [
        {"annotator": "good", "n": 300, "accuracy": 0.9, "ci_low": 0.86, "ci_high": 0.93, "verdict": "no_evidence_of_gap"},
        {"annotator": "bad", "n": 200, "accuracy": 0.3, "ci_low": 0.24, "ci_high": 0.37, "verdict": "worse_than_rest"},
        {"annotator": "new", "n": 5, "accuracy": 0.8, "ci_low": 0.4, "ci_high": 0.97, "verdict": "insufficient_data"},
    ]
    policy = policy_from_dict({"annotation": {"max_annotator_error": 0.2}})
    check = evaluate_policy(audit(annotators), rows(), policy).checks[0]
    assert (check.status, check.group, check.attribute) == (FAIL, "bad", "annotator")
    assert check.value == pytest.approx(0.7)
    assert "1 undecided" in check.message
    only_good = evaluate_policy(audit(annotators[:1]), rows(), policy).checks[0]
    assert only_good.status == PASS


def test_skipped_without_annotations_and_example_policy_has_the_section():
    policy = policy_from_dict({"annotation": {"min_agreement": 0.6, "max_annotator_error": 0.2}})
    verdict = evaluate_policy(audit(None), rows(), policy)
    assert [c.status for c in verdict.checks] == [SKIPPED, SKIPPED]
    assert verdict.status == PASS
    example = load_policy("policy.example.toml")
    assert example.annotation_min_agreement == 0.6 and example.annotation_max_annotator_error == 0.3
