"""Known-answer comparisons on generated pairs: a planted regression in one group is found; a null pair
yields no regression and no improvement; the CLI writes a valid comparison folder."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.cli import main
from audit.compare.core import compare_audits
from audit.compare.folder import load_comparison_folder, load_pair
from tests.compare.builders import planted_pair


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_pair(tmp_path_factory.mktemp("planted"), drop=0.15, seed=1)


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    return planted_pair(tmp_path_factory.mktemp("null"), drop=0.0, seed=2)


def _rows(comparison):
    return pd.DataFrame(comparison["model"]["rows"])


def test_planted_regression_is_found_in_its_group_only(planted):
    old, new, truth = planted
    result = compare_audits(*load_pair(old, new), n_bootstrap=200)
    rows = _rows(result.comparison)
    assert result.comparison["model"]["method"] == "paired"
    target = rows[(rows.attribute == "site") & (rows.group == "C") & (rows.metric == "accuracy") & (rows["class"] == "")]
    assert target["verdict"].item() == "regressed" and target["scope"].item() == "primary"
    # the difference is the direct paired computation on the planted group
    mask = truth["site"] == "C"
    direct = truth["correct_new"][mask].mean() - truth["correct_old"][mask].mean()
    assert target["difference"].item() == pytest.approx(direct, abs=1e-12)
    # the other sites did not change (age groups each hold a quarter of site C, so they may rightly show it)
    other_sites = rows[(rows.scope == "primary") & (rows.attribute == "site") & (rows.group != "C")]
    assert len(other_sites) == 3 and set(other_sites["verdict"]) == {"no_evidence_of_change"}
    assert result.comparison["findings"][0].startswith("Accuracy fell") and "site = C" in result.comparison["findings"][0]
    # found after the comparison-wide families: Holm over every primary row, BH over everything else incl. data tests
    multiplicity = result.comparison["multiplicity"]
    assert multiplicity["families"]["primary"]["n_tests"] == len(rows[(rows.scope == "primary")
                                                                      & ~rows.insufficient_evidence])
    assert target["p_adjusted"].item() < 0.05 and target["p_adjusted"].item() >= target["p_value"].item()
    data = result.comparison["data"]
    for test in data["class_shares"] + data["group_shares"] + data["shift_tests"]:
        assert test["scope"] == "exploratory" and test["p_adjusted"] >= test["p_value"]
    assert multiplicity["families"]["exploratory"]["n_data_tests"] == len(
        data["class_shares"] + data["group_shares"] + data["shift_tests"])
    assert any(f.startswith(f"The comparison made {multiplicity['n_tests']} tests") for f in result.comparison["findings"])


def test_null_pair_yields_no_change(null):
    old, new, _ = null
    result = compare_audits(*load_pair(old, new), n_bootstrap=200)
    rows = _rows(result.comparison)
    assert not rows.empty
    assert set(rows["verdict"]) <= {"no_evidence_of_change", "insufficient_data"}
    assert result.comparison["matching"]["counts"]["unchanged"] == 2400


def test_cli_writes_a_valid_comparison_folder(planted, tmp_path, capsys):
    old, new, _ = planted
    out = tmp_path / "cmp"
    assert main(["compare", str(old), str(new), "--out", str(out), "--n-bootstrap", "100"]) == 0
    folder = load_comparison_folder(out)  # validates against the shipped schema
    assert folder.comparison["kind"] == "comparison"
    changes = folder.image_changes
    assert len(changes) == 2400 and set(changes["change"]) == {"unchanged"}
    assert "comparison written to" in capsys.readouterr().out
    assert main(["compare", str(old), str(new), "--out", str(tmp_path / "md"), "--format", "md",
                 "--n-bootstrap", "100"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("## imagefair comparison") and "regressed" in text and len(text) < 65_000


def test_baseline_gate_fails_on_the_planted_regression_and_passes_the_null(planted, null, tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text("[regression]\nmetric = \"accuracy\"\nmax_drop = 0.05\nmax_removed_share = 0.1\n")
    old, new, _ = planted
    verdict_file = tmp_path / "verdict.json"
    assert main(["gate", str(new), "--baseline", str(old), "--policy", str(policy), "--json", str(verdict_file)]) == 1
    verdict = json.loads(verdict_file.read_text())
    drop = [c for c in verdict["checks"] if c["name"] == "regression.max_drop"][0]
    assert drop["status"] == "FAIL" and drop["attribute"] == "site" and drop["group"] == "C"
    old, new, _ = null
    code = main(["gate", str(new), "--baseline", str(old), "--policy", str(policy), "--json", str(verdict_file)])
    verdict = json.loads(verdict_file.read_text())
    statuses = {c["name"]: c["status"] for c in verdict["checks"]}
    # the null pair: no drop is established; small differences leave the interval straddling or below 5 points
    assert statuses["regression.max_drop"] in ("PASS", "INSUFFICIENT_EVIDENCE") and code == 0
    assert statuses["regression.max_removed_share"] == "PASS"


def test_compare_with_a_policy_records_the_regression_verdict(planted, tmp_path):
    old, new, _ = planted
    policy = tmp_path / "policy.toml"
    policy.write_text("[regression]\nmax_drop = 0.05\nmax_worst_group_drop = 0.05\nmax_gap_increase = 0.05\n")
    out = tmp_path / "cmp"
    assert main(["compare", str(old), str(new), "--out", str(out), "--policy", str(policy),
                 "--n-bootstrap", "50"]) == 0
    verdict = load_comparison_folder(out).comparison["verdict"]
    statuses = {c["name"]: c["status"] for c in verdict["checks"]}
    assert verdict["status"] == "FAIL" and statuses["regression.max_drop"] == "FAIL"
    assert statuses["regression.max_worst_group_drop"] == "FAIL"  # site C: 82.8 % -> 71.0 %
    assert statuses["regression.max_gap_increase"] == "FAIL"


def test_unknown_regression_metric_is_a_policy_error(planted, tmp_path, capsys):
    old, new, _ = planted
    policy = tmp_path / "policy.toml"
    policy.write_text("[regression]\nmetric = \"top_k_accuracy\"\nmax_drop = 0.05\n")
    assert main(["gate", str(new), "--baseline", str(old), "--policy", str(policy)]) == 2
    from audit.compare.gate import ERROR_REGRESSION_METRIC, REGRESSION_METRICS

    assert capsys.readouterr().err.strip() == "error: " + ERROR_REGRESSION_METRIC.format(
        path=policy, value="top_k_accuracy", allowed=", ".join(REGRESSION_METRICS))


def test_regression_keys_without_a_baseline_are_skipped(planted, tmp_path, capsys):
    """Without --baseline a regression-only policy checks nothing: refused (exit 2, one line), unless
    --allow-empty, when the regression checks are listed as SKIPPED."""
    from audit.policy import ERROR_ONLY_REGRESSION, MESSAGE_NO_BASELINE

    _, new, _ = planted
    policy = tmp_path / "policy.toml"
    policy.write_text("[regression]\nmax_drop = 0.05\n")
    verdict_file = tmp_path / "v.json"
    assert main(["gate", str(new), "--policy", str(policy), "--json", str(verdict_file)]) == 2
    assert capsys.readouterr().err.strip() == "error: " + ERROR_ONLY_REGRESSION.format(path=policy)
    assert not verdict_file.exists()
    assert main(["gate", str(new), "--policy", str(policy), "--json", str(verdict_file), "--allow-empty"]) == 0
    checks = json.loads(verdict_file.read_text())["checks"]
    assert checks == [{"name": "regression.max_drop", "status": "SKIPPED", "value": None, "threshold": 0.05,
                       "attribute": "", "group": "", "class": "", "message": MESSAGE_NO_BASELINE}]


def test_verified_label_error_rates_are_compared_when_both_audits_have_them(planted):
    from audit.compare.core import compare_audits

    old, new, _ = planted

    def status(estimate, low, high, reviewed, by_group):
        return {"label_error_rate": {"estimate": estimate, "ci_low": low, "ci_high": high, "reviewed": reviewed},
                "by_group": by_group, "by_class": []}

    verified_old = status(0.10, 0.06, 0.16, 200, [{"attribute": "site", "group": "A", "estimate": 0.1,
                                                    "ci_low": 0.04, "ci_high": 0.2, "reviewed": 50}])
    verified_new = status(0.03, 0.01, 0.07, 200, [{"attribute": "site", "group": "A", "estimate": 0.02,
                                                    "ci_low": 0.0, "ci_high": 0.1, "reviewed": 50}])
    comparison = compare_audits(*load_pair(old, new), n_bootstrap=50, verified_old=verified_old,
                                verified_new=verified_new).comparison
    rows = [r for r in comparison["labels"]["rows"] if r["metric"] == "label_error_rate"]
    assert comparison["labels"]["verified_available"] and len(rows) == 2
    overall = [r for r in rows if r["attribute"] == "all"][0]
    assert overall["difference"] == pytest.approx(-0.07)
    # square-and-add of the two intervals
    assert overall["ci_low"] == pytest.approx(-0.07 - np.hypot(0.02, 0.06))
    assert overall["ci_high"] == pytest.approx(-0.07 + np.hypot(0.04, 0.04))
    from scipy import stats

    se = (overall["ci_high"] - overall["ci_low"]) / (2 * stats.norm.ppf(0.975))
    assert overall["p_value"] == pytest.approx(2 * stats.norm.sf(0.07 / se))
    # tested in the exploratory family (false discovery rate across every exploratory row of the comparison)
    assert overall["scope"] == "exploratory" and overall["p_adjusted"] >= overall["p_value"]
