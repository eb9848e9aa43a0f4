"""Policy file validation and the checks of evaluate_policy (statuses, values, intervals, ERROR/SKIPPED)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from audit.errors import PolicyError
from audit.policy import (ERROR_POLICY_NOT_FOUND, ERROR_POLICY_TOML, ERROR_UNKNOWN_KEY, ERROR_UNKNOWN_METRIC,
                          ERROR_UNKNOWN_SECTION, ERROR_VALUE_RANGE, ERROR_WRONG_TYPE, Policy, _difference_interval,
                          evaluate_policy, load_policy, overall_status, policy_from_dict)
from audit.folder import load_audit_json, load_group_metrics
from audit.schema import validate_audit

from tests.audit_builder import build_audit_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_audit_folder(tmp_path_factory.mktemp("policy") / "audit")


@pytest.fixture(scope="module")
def audit(folder):
    return load_audit_json(folder)


@pytest.fixture(scope="module")
def gm(folder):
    return load_group_metrics(folder)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def row(gm, attribute, group, metric="accuracy"):
    return gm[(gm.attribute == attribute) & (gm.group == group) & (gm.metric == metric) & (gm["class"] == "")].iloc[0]


# -- loading ---------------------------------------------------------------------------------------------------
def test_example_policy_loads_and_sets_every_key():
    policy = load_policy(REPO / "policy.example.toml")
    for name, value in vars(policy).items():
        assert value is not None, f"policy.example.toml does not set {name}"


def test_unknown_key_names_the_key(tmp_path):
    path = write(tmp_path, "[performance]\nmin_worst_grup = 0.8\n")
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value) == ERROR_UNKNOWN_KEY.format(
        path=path, key="performance.min_worst_grup", section="performance",
        allowed="metric, min_worst_group, max_gap, min_ratio, attributes")
    assert error.value.column == "performance.min_worst_grup"


def test_unknown_section(tmp_path):
    path = write(tmp_path, "[fairness]\nmax_gap = 0.1\n")
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value) == ERROR_UNKNOWN_SECTION.format(
        path=path, section="fairness", allowed="[label_noise], [representation], [performance], [gate], [regression], "
                                                "[annotation]")


@pytest.mark.parametrize("text, key, expected, got, value", [
    ('[label_noise]\nmax_rate = "5%"\n', "label_noise.max_rate", "a number", "a string", "5%"),
    ("[representation]\nmin_group_images = 30.5\n", "representation.min_group_images", "a whole number", "a number",
     30.5),
    ("[representation]\nmin_group_images = true\n", "representation.min_group_images", "a whole number",
     "a boolean", True),
    ('[representation]\nattributes = "race"\n', "representation.attributes", "a list of strings", "a string", "race"),
    ("[performance]\nmetric = 1\n", "performance.metric", "a string", "an integer", 1),
])
def test_wrong_type_names_the_key(tmp_path, text, key, expected, got, value):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value) == ERROR_WRONG_TYPE.format(path=path, key=key, expected=expected, got=got, value=value)


def test_out_of_range_and_bad_metric(tmp_path):
    path = write(tmp_path, "[label_noise]\nmax_rate = 5\n")
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value) == ERROR_VALUE_RANGE.format(path=path, key="label_noise.max_rate",
                                                        what="between 0 and 1", value=5.0)
    path = write(tmp_path, '[performance]\nmetric = "acuracy"\n')
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value).startswith(ERROR_UNKNOWN_METRIC.split("{value!r}")[0].format(path=path))
    assert "acuracy" in str(error.value)


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(PolicyError) as error:
        load_policy(tmp_path / "nope.toml")
    assert str(error.value) == ERROR_POLICY_NOT_FOUND.format(path=tmp_path / "nope.toml")
    path = write(tmp_path, "[gate\nwarn_margin = 0.1\n")
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value).startswith(ERROR_POLICY_TOML.split("{reason}")[0].format(path=path))


def test_integer_accepted_where_a_number_is_expected():
    policy = policy_from_dict({"representation": {"max_class_imbalance_ratio": 10}})
    assert policy.representation_max_class_imbalance_ratio == 10.0


# -- evaluation --------------------------------------------------------------------------------------------------
def test_verdict_object_follows_contract(audit, gm):
    policy = policy_from_dict({"label_noise": {"max_rate": 0.5}, "performance": {"min_worst_group": 0.1}})
    verdict = evaluate_policy(audit, gm, policy).to_dict()
    assert set(verdict) == {"status", "checks"}
    for check in verdict["checks"]:
        assert list(check) == ["name", "status", "value", "threshold", "attribute", "group", "class", "message"]
    validate_audit(dict(audit, verdict=verdict))  # the schema accepts it inside audit.json
    json.dumps(verdict, allow_nan=False)


def test_noise_rate_pass_fail_and_straddle(audit, gm):
    section = audit["analyses"]["label_noise"]
    rate, (low, high) = section["label_disagreement_rate"], section["label_disagreement_rate_ci"]

    def status(threshold):
        check = evaluate_policy(audit, gm, policy_from_dict({"label_noise": {"max_rate": threshold, "basis": "model"}})).checks[0]
        assert check.value == rate and check.threshold == threshold
        return check.status

    assert status(high + 0.01) == "PASS"
    assert status(low - 0.01) == "FAIL"
    assert status((low + high) / 2) == "INSUFFICIENT_EVIDENCE"


def test_noise_rate_message_says_screening_figure(audit, gm):
    from audit.policy import MESSAGE_NOISE_RATE, _ci, _fmt

    section = audit["analyses"]["label_noise"]
    check = evaluate_policy(audit, gm, policy_from_dict({"label_noise": {"max_rate": 0.9, "basis": "model"}})).checks[0]
    low, high = section["label_disagreement_rate_ci"]
    assert check.message == MESSAGE_NOISE_RATE.format(
        value=_fmt(section["label_disagreement_rate"]), interval=_ci(low, high),
        error=_fmt(section["model_error_rate"]), n_flagged=section["n_label_issues"], limit=_fmt(0.9))
    assert "not a label-error rate" in check.message


def test_policy_checks_a_migrated_old_audit(tmp_path):
    """A 1.x folder (estimated_noise_rate) still passes through [label_noise] keys, on the renamed metric."""
    old = build_audit_folder(tmp_path / "old", schema="1.0")
    audit, gm = load_audit_json(old), load_group_metrics(old)
    assert audit["schema_version"] == "2.0" and audit["migrated_from"] == "1.0"
    assert "estimated_noise_rate" not in set(gm["metric"])
    policy = policy_from_dict({"label_noise": {"max_rate": 0.9, "max_class_rate": 0.9, "max_group_rate": 0.9,
                                              "basis": "model"}})
    checks = evaluate_policy(audit, gm, policy).checks
    assert [c.status for c in checks] and all(c.status in ("PASS", "WARN", "INSUFFICIENT_EVIDENCE") for c in checks)
    assert checks[0].value == pytest.approx(audit["analyses"]["label_noise"]["n_label_issues"] / 600)


def test_warn_margin(audit, gm):
    section = audit["analyses"]["label_noise"]
    rate, (low, high) = section["label_disagreement_rate"], section["label_disagreement_rate_ci"]
    policy = policy_from_dict({"label_noise": {"max_rate": high + 0.01, "basis": "model"}, "gate": {"warn_margin": high + 0.02 - rate}})
    verdict = evaluate_policy(audit, gm, policy)
    assert verdict.checks[0].status == "WARN"
    assert verdict.status == "PASS"


def test_min_worst_group_decides_on_the_worst_group(audit, gm):
    female = row(gm, "gender", "Female")
    assert female.value < row(gm, "gender", "Male").value
    policy = policy_from_dict({"performance": {"min_worst_group": female.ci_high + 0.01, "attributes": ["gender"]}})
    check = evaluate_policy(audit, gm, policy).checks[0]
    assert (check.status, check.attribute, check.group, check.value) == ("FAIL", "gender", "Female", female.value)
    policy = policy_from_dict({"performance": {"min_worst_group": (female.ci_low + female.value) / 2,
                                               "attributes": ["gender"]}})
    assert evaluate_policy(audit, gm, policy).checks[0].status == "INSUFFICIENT_EVIDENCE"


def test_small_group_is_insufficient_evidence_not_pass(audit, gm):
    old = row(gm, "age", "old")
    assert old.insufficient_evidence
    policy = policy_from_dict({"performance": {"min_worst_group": 0.01, "attributes": ["age"]}})
    check = evaluate_policy(audit, gm, policy).checks[0]
    assert (check.status, check.group) == ("INSUFFICIENT_EVIDENCE", "old")
    assert "<missing>" not in check.message  # the missing-value group is not judged


def test_default_attributes_are_the_group_attributes_not_pixel_ones(audit, gm):
    policy = policy_from_dict({"representation": {"min_group_images": 25}, "performance": {"max_gap": 0.5}})
    checks = evaluate_policy(audit, gm, policy).checks
    assert [c.attribute for c in checks] == ["gender", "age", "gender", "age"]
    min_images = checks[1]
    assert (min_images.status, min_images.group, min_images.value) == ("FAIL", "old", 20.0)


def test_intersection_attribute_and_unknown_attribute(audit, gm):
    policy = policy_from_dict({"representation": {"min_group_images": 5, "attributes": ["gender & age", "race"]}})
    checks = evaluate_policy(audit, gm, policy).checks
    assert checks[0].attribute == "gender & age" and checks[0].status == "PASS"
    groups = audit["analyses"]["attribute_distribution"]["intersections"]["gender & age"]["groups"]
    smallest = min(g["n"] for g in groups if "<missing>" not in g["group"])
    assert checks[0].value == smallest
    assert checks[1].status == "ERROR" and "race" in checks[1].message
    assert evaluate_policy(audit, gm, policy).status == "ERROR"


def test_gap_and_ratio_use_intervals(audit, gm):
    female, male = row(gm, "gender", "Female"), row(gm, "gender", "Male")
    gap = male.value - female.value
    low, high = _difference_interval(male, female)
    assert low < gap < high
    for threshold, expected in [(high + 0.01, "PASS"), (max(low - 0.01, 0.0), "FAIL"), (gap, "INSUFFICIENT_EVIDENCE")]:
        policy = policy_from_dict({"performance": {"max_gap": threshold, "attributes": ["gender"]}})
        check = evaluate_policy(audit, gm, policy).checks[0]
        assert check.status == expected, (threshold, check.message)
        assert check.value == pytest.approx(gap) and check.group == "Female"
    ratio = female.value / male.value
    policy = policy_from_dict({"performance": {"min_ratio": 0.5, "attributes": ["gender"]}})
    check = evaluate_policy(audit, gm, policy).checks[0]
    assert check.status == "PASS" and check.value == pytest.approx(ratio)
    policy = policy_from_dict({"performance": {"min_ratio": 0.99, "attributes": ["gender"]}})
    assert evaluate_policy(audit, gm, policy).checks[0].status in ("FAIL", "INSUFFICIENT_EVIDENCE")


def test_lower_is_better_metric():
    audit = {"analyses": {"group_performance": {}}, "errors": [], "dataset": {"group_attributes": ["g"]},
             "metrics": {"expected_calibration_error": {"higher_is_better": False, "description": ""}}}
    gm = pd.DataFrame({"attribute": ["g", "g"], "group": ["a", "b"], "class": ["", ""], "n": [500, 500],
                       "metric": ["expected_calibration_error"] * 2, "value": [0.02, 0.20],
                       "ci_low": [0.01, 0.15], "ci_high": [0.03, 0.25], "insufficient_evidence": [False, False],
                       "verdict": ["", ""]})
    policy = policy_from_dict({"performance": {"metric": "expected_calibration_error", "min_worst_group": 0.1}})
    check = evaluate_policy(audit, gm, policy).checks[0]
    assert (check.status, check.group, check.value) == ("FAIL", "b", 0.20)


def test_class_rates_and_group_rates(audit, gm):
    per_class = gm[(gm.metric == "label_disagreement_rate") & (gm["class"] != "")]
    worst = per_class.sort_values("value").iloc[-1]
    policy = policy_from_dict({"label_noise": {"max_class_rate": 0.9, "max_group_rate": 0.9, "basis": "model"}})
    checks = evaluate_policy(audit, gm, policy).checks
    assert checks[0].class_ == worst["class"] and checks[0].value == worst.value and checks[0].status == "PASS"
    assert [c.attribute for c in checks[1:]] == ["gender", "age"]


def test_imbalance_and_association(audit, gm):
    ratio = audit["analyses"]["class_distribution"]["imbalance_ratio"]
    policy = policy_from_dict({"representation": {"max_class_imbalance_ratio": 1.0, "max_association": 0.1}})
    checks = evaluate_policy(audit, gm, policy).checks
    assert (checks[0].status, checks[0].value) == ("FAIL", ratio)
    assert [(c.attribute, c.status) for c in checks[1:]] == [("gender", "PASS"), ("age", "FAIL")]


def test_skipped_without_model_and_error_when_analysis_failed(tmp_path):
    no_model = build_audit_folder(tmp_path / "nomodel", with_model=False, n_image_files=0)
    policy = policy_from_dict({"label_noise": {"max_rate": 0.1, "basis": "model"}, "performance": {"min_worst_group": 0.5}})
    verdict = evaluate_policy(load_audit_json(no_model), load_group_metrics(no_model), policy)
    assert [c.status for c in verdict.checks] == ["SKIPPED", "SKIPPED"] and verdict.status == "PASS"
    failed = build_audit_folder(tmp_path / "failed", errors=["label_noise"], n_image_files=0)
    verdict = evaluate_policy(load_audit_json(failed), load_group_metrics(failed), policy)
    assert verdict.checks[0].status == "ERROR" and "synthetic failure" in verdict.checks[0].message
    assert verdict.status == "ERROR"


def test_overall_status_rules():
    assert overall_status([{"status": "PASS"}, {"status": "WARN"}]) == "PASS"
    assert overall_status([{"status": "INSUFFICIENT_EVIDENCE"}]) == "PASS"
    assert overall_status([{"status": "INSUFFICIENT_EVIDENCE"}], strict=True) == "FAIL"
    assert overall_status([{"status": "FAIL"}, {"status": "ERROR"}]) == "ERROR"
    assert overall_status([{"status": "SKIPPED"}]) == "PASS"
    assert overall_status([]) == "PASS"


def test_empty_policy_passes(audit, gm):
    verdict = evaluate_policy(audit, gm, Policy())
    assert verdict.to_dict() == {"status": "PASS", "checks": []}


def test_policy_module_imports_no_ui():
    code = ("import sys, audit.policy, audit.gate; "
            "print(any(m.split('.')[0] in ('plotly', 'streamlit') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


# -- [label_noise] on the verified label-error rate (issue 13 item 2) ------------------------------------------
def _status(estimate=None, low=None, high=None, reviewed=0, by_class=(), by_group=()):
    return {"label_error_rate": {"estimate": estimate, "ci_low": low, "ci_high": high, "confidence": 0.95,
                                 "sample_size": reviewed, "reviewed": reviewed, "confirmed_errors": 3,
                                 "method": "m"},
            "by_class": list(by_class), "by_group": list(by_group), "message": "" if estimate is not None else
            "no review sample yet, so no verified label-error rate: draw one"}


def test_verified_basis_is_the_default_and_needs_reviews(audit, gm):
    from audit.policy import MESSAGE_NO_VERIFIED

    policy = policy_from_dict({"label_noise": {"max_rate": 0.05}})
    check = evaluate_policy(audit, gm, policy, reviews=_status()).checks[0]
    assert check.status == "INSUFFICIENT_EVIDENCE" and check.value is None
    # the reason once, not "no verified label-error rate yet (no review sample yet, so no verified label-error rate)"
    assert check.message == MESSAGE_NO_VERIFIED.format(why="no review sample yet", needed=150)
    assert check.message.count("verified label-error rate") == 1
    # the disagreement rate is not used, whatever it is
    assert "disagreement rate" not in check.message.split("basis")[0]
    assert evaluate_policy(audit, gm, policy).checks[0].status == "INSUFFICIENT_EVIDENCE"


def test_verified_rate_pass_fail_straddle_with_reviews_needed(audit, gm):
    from audit.policy import MESSAGE_VERIFIED_MORE

    def check(threshold):
        return evaluate_policy(audit, gm, policy_from_dict({"label_noise": {"max_rate": threshold}}),
                               reviews=_status(0.02, 0.01, 0.04, 200)).checks[0]

    assert (check(0.05).status, check(0.05).value) == ("PASS", 0.02)
    assert check(0.005).status == "FAIL"
    straddle = check(0.03)
    assert straddle.status == "INSUFFICIENT_EVIDENCE"
    assert straddle.message.endswith(MESSAGE_VERIFIED_MORE.format(needed=250))


def test_verified_class_and_group_rates(audit, gm):
    by_class = [{"class": "cat", "estimate": 0.01, "ci_low": 0.0, "ci_high": 0.05, "reviewed": 60},
                {"class": "dog", "estimate": 0.2, "ci_low": 0.12, "ci_high": 0.3, "reviewed": 60},
                {"class": "fox", "estimate": None, "ci_low": None, "ci_high": None, "reviewed": 0}]
    by_group = [{"attribute": "gender", "group": g, "estimate": 0.02, "ci_low": 0.0, "ci_high": 0.06, "reviewed": 50}
                for g in ("Female", "Male")]
    policy = policy_from_dict({"label_noise": {"max_class_rate": 0.1, "max_group_rate": 0.1,
                                               "attributes": ["gender"]}})
    checks = evaluate_policy(audit, gm, policy, reviews=_status(0.05, 0.03, 0.08, 180, by_class, by_group)).checks
    assert (checks[0].name, checks[0].status, checks[0].class_, checks[0].value) == (
        "label_noise.max_class_rate", "FAIL", "dog", 0.2)
    assert (checks[1].attribute, checks[1].status) == ("gender", "PASS")


def test_unknown_basis_is_refused(tmp_path):
    from audit.policy import ERROR_UNKNOWN_BASIS

    path = write(tmp_path, '[label_noise]\nbasis = "humans"\nmax_rate = 0.1\n')
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value) == ERROR_UNKNOWN_BASIS.format(path=path, value="humans")


def test_a_one_image_group_is_one_image_not_one_images(audit, gm):
    import copy

    one = copy.deepcopy(audit)
    groups = one["analyses"]["attribute_distribution"]["attributes"]["age"]["groups"]
    next(g for g in groups if g["group"] == "old")["n"] = 1
    policy = policy_from_dict({"representation": {"min_group_images": 25, "attributes": ["age"]}})
    check = evaluate_policy(one, gm, policy).checks[0]
    assert "smallest old with 1 image (minimum 25)" in check.message and "1 images" not in check.message
