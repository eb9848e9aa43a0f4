"""Intervals and tests of audit.compare.stats: known answers and coverage checked by simulation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from audit.compare.stats import (bootstrap_difference, chi_square_shift, fisher_two_sided_p_value,
                                 mcnemar_exact_p_value, paired_difference_interval, unpaired_difference_interval)


def test_paired_interval_reduces_to_square_and_add_without_correlation():
    # a*d == b*c gives phi = 0: the paired interval is then the square-and-add of the two Wilson intervals
    diff, low, high = paired_difference_interval(20, 20, 10, 10)
    _, u_low, u_high = unpaired_difference_interval(40, 60, 30, 60)
    assert diff == pytest.approx(-1 / 6)
    assert (low, high) == pytest.approx((u_low, u_high))
    # positive correlation narrows it
    _, c_low, c_high = paired_difference_interval(35, 5, 0, 20)
    _, i_low, i_high = unpaired_difference_interval(40, 60, 35, 60)
    assert c_high - c_low < i_high - i_low


def test_newcombe_unpaired_known_answer():
    # Newcombe (1998) Statistics in Medicine 17:873, example 56/70 vs 48/80: method 10 gives 0.0524-0.3339
    diff, low, high = unpaired_difference_interval(48, 80, 56, 70)
    assert diff == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=5e-4)


def test_mcnemar_matches_scipy_binomtest():
    for b, c in [(3, 11), (0, 7), (20, 25), (0, 0)]:
        expected = stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
        assert mcnemar_exact_p_value(b, c) == pytest.approx(expected)


def test_fisher_two_sided_is_never_below_scipy_fisher():
    for table in [(5, 20, 12, 20), (30, 100, 45, 100), (0, 10, 4, 10)]:
        x_old, n_old, x_new, n_new = table
        ours = fisher_two_sided_p_value(*table)
        reference = stats.fisher_exact([[x_old, n_old - x_old], [x_new, n_new - x_new]]).pvalue
        assert ours >= reference - 1e-12 and ours <= min(1.0, 2 * reference + 1e-12)


@pytest.mark.parametrize("n, p_old, p_new, rho", [(40, 0.85, 0.75, 0.5), (200, 0.9, 0.9, 0.3), (60, 0.5, 0.6, 0.0)])
def test_paired_interval_coverage(n, p_old, p_new, rho):
    rng = np.random.default_rng(7)
    reps = 4000
    # correlated Bernoulli pairs via a Gaussian copula
    z = rng.standard_normal((reps, n, 2))
    z[..., 1] = rho * z[..., 0] + np.sqrt(1 - rho ** 2) * z[..., 1]
    old = z[..., 0] < stats.norm.ppf(p_old)
    new = z[..., 1] < stats.norm.ppf(p_new)
    a = (old & new).sum(1)
    b = (old & ~new).sum(1)
    c = (~old & new).sum(1)
    d = n - a - b - c
    _, low, high = paired_difference_interval(a, b, c, d)
    coverage = np.mean((low <= p_new - p_old) & (p_new - p_old <= high))
    assert coverage >= 0.93, coverage


@pytest.mark.parametrize("n_old, n_new, p_old, p_new", [(30, 30, 0.9, 0.8), (300, 100, 0.7, 0.72), (50, 500, 0.05, 0.1)])
def test_unpaired_interval_coverage(n_old, n_new, p_old, p_new):
    rng = np.random.default_rng(11)
    reps = 20000
    x_old = rng.binomial(n_old, p_old, reps)
    x_new = rng.binomial(n_new, p_new, reps)
    _, low, high = unpaired_difference_interval(x_old, n_old, x_new, n_new)
    coverage = np.mean((low <= p_new - p_old) & (p_new - p_old <= high))
    assert coverage >= 0.93, coverage


def test_mcnemar_and_fisher_keep_their_level_under_the_null():
    rng = np.random.default_rng(3)
    b = rng.binomial(30, 0.5, 20000)
    assert np.mean(mcnemar_exact_p_value(b, 30 - b) <= 0.05) <= 0.05
    x_old = rng.binomial(80, 0.8, 20000)
    x_new = rng.binomial(80, 0.8, 20000)
    assert np.mean(fisher_two_sided_p_value(x_old, 80, x_new, 80) <= 0.05) <= 0.05


def test_paired_bootstrap_interval_coverage_for_balanced_accuracy():
    """The paired Poisson bootstrap of a non-proportion metric (balanced accuracy) covers at about 95 %."""
    from audit.compare.model import _bootstrap_metrics, _weighted_confusion

    rng = np.random.default_rng(5)
    n, k, reps, boots = 300, 3, 150, 300
    truth_rows = []
    covered = 0
    for _ in range(reps):
        labels = rng.integers(0, k, n)
        correct_old = rng.random(n) < np.array([0.9, 0.8, 0.7])[labels]
        keep = rng.random(n) < 0.7
        correct_new = np.where(keep, correct_old, rng.random(n) < np.array([0.85, 0.85, 0.75])[labels])
        pred_old = np.where(correct_old, labels, (labels + 1) % k)
        pred_new = np.where(correct_new, labels, (labels + 1) % k)
        # true difference of balanced accuracy: mean over classes of (new - old) expected recall
        p_old = np.array([0.9, 0.8, 0.7])
        p_new = 0.7 * p_old + 0.3 * np.array([0.85, 0.85, 0.75])
        true = float(np.mean(p_new - p_old))
        ones = np.ones((1, n), dtype=np.float32)
        est = (_bootstrap_metrics(*_weighted_confusion(ones, labels, pred_new, k))["balanced_accuracy"][0]
               - _bootstrap_metrics(*_weighted_confusion(ones, labels, pred_old, k))["balanced_accuracy"][0])
        w = rng.poisson(1.0, (boots, n)).astype(np.float32)
        b_old = _bootstrap_metrics(*_weighted_confusion(w, labels, pred_old, k))["balanced_accuracy"]
        b_new = _bootstrap_metrics(*_weighted_confusion(w, labels, pred_new, k))["balanced_accuracy"]
        low, high, _ = bootstrap_difference(b_old, b_new, est)
        covered += low <= true <= high
        truth_rows.append(true)
    assert covered / reps >= 0.90, covered / reps


def test_chi_square_shift():
    statistic, dof, p = chi_square_shift([50, 50], [50, 50])
    assert statistic == 0 and dof == 1 and p == pytest.approx(1.0)
    _, _, p = chi_square_shift([80, 20, 0], [50, 50, 0])
    assert p < 1e-4


def _null_comparison(rng, n=400, n_bootstrap=100):
    """A paired null pair with two metadata attributes: the same accuracy in every group and class. Returns
    the whole comparison's rows after the comparison-wide families, the data tests' adjusted p-values and the
    multiplicity summary."""
    import pandas as pd

    from audit.compare.core import _share_rows
    from audit.compare.model import VersionData, compare_model, decide_rows

    labels = rng.integers(0, 2, n)
    groups = {"site": pd.Series(np.array(["A", "B", "C", "D"])[rng.integers(0, 4, n)]),
              "age": pd.Series(np.array(["young", "old"])[rng.integers(0, 2, n)])}
    old_correct = rng.random(n) < 0.8
    new_correct = np.where(rng.random(n) < 0.6, old_correct, rng.random(n) < 0.8)
    old = VersionData(labels, np.where(old_correct, labels, 1 - labels), groups, 2)
    new = VersionData(labels, np.where(new_correct, labels, 1 - labels), groups, 2)
    rows = compare_model(old, new, classes=["a", "b"], method="paired", metadata_attributes=["site", "age"],
                         n_bootstrap=n_bootstrap, seed=int(rng.integers(1 << 30)))
    data = []
    for name, values in (("class", pd.Series(labels).astype(str)), ("site", groups["site"]), ("age", groups["age"])):
        shares, shift = _share_rows(name, values, values, np.zeros(n, dtype=bool), confidence_level=0.95)
        data += [r["p_value"] for r in shares] + [shift["p_value"]]
    return decide_rows(rows, data, min_group_size=30, max_ci_width=0.3)


def test_both_families_keep_their_level_under_the_null_across_the_whole_comparison():
    """200 null pairs (same accuracy in every group): the chance of any primary regressed/improved verdict
    (Holm) and of any exploratory one (BH over every other row and the data tests) stays at or below 5 %.
    Before the comparison-wide families this test looked at primary rows of one attribute only (2.5 %)."""
    rng = np.random.default_rng(21)
    reps, primary_hits, exploratory_hits = 200, 0, 0
    for _ in range(reps):
        rows, data_adjusted, summary = _null_comparison(rng)
        flagged = rows["verdict"].isin(["regressed", "improved"])
        primary_hits += bool((flagged & (rows["scope"] == "primary")).any())
        exploratory_hits += bool((flagged & (rows["scope"] == "exploratory")).any()
                                 or (np.nan_to_num(data_adjusted, nan=1.0) < 0.05).any())
        assert summary["families"]["primary"]["n_tests"] == 7  # overall + 4 sites + 2 ages
    assert primary_hits / reps <= 0.05, primary_hits / reps
    assert exploratory_hits / reps <= 0.05, exploratory_hits / reps


def test_families_follow_the_audit_rule_and_span_the_whole_comparison():
    """Primary: overall and single metadata attributes x the primary metric (the audit's rule: no pixel
    attribute, no intersection, no class); everything else exploratory, adjusted together with the data tests."""
    import pandas as pd

    from audit.analysis._stats import adjust_p_values
    from audit.compare.model import decide_rows

    rows = pd.DataFrame([
        {"attribute": "all", "group": "all", "class": "", "metric": "accuracy", "p_value": 0.01},
        {"attribute": "site", "group": "A", "class": "", "metric": "accuracy", "p_value": 0.02},
        {"attribute": "site", "group": "B", "class": "", "metric": "accuracy", "p_value": 0.5},
        {"attribute": "site & age", "group": "A & old", "class": "", "metric": "accuracy", "p_value": 0.001},
        {"attribute": "image_brightness_group", "group": "dark", "class": "", "metric": "accuracy", "p_value": 0.002},
        {"attribute": "site", "group": "A", "class": "cat", "metric": "recall", "p_value": 0.03},
        {"attribute": "site", "group": "A", "class": "", "metric": "macro_f1", "p_value": 0.04},
        {"attribute": "site", "group": "A", "class": "", "metric": "label_disagreement_rate", "p_value": 0.2},
    ]).assign(scope="", method="paired", n_old=100, n_new=100, old=0.8, new=0.7, difference=-0.1, ci_low=-0.2,
              ci_high=-0.01, old_ci_low=0.7, old_ci_high=0.9, new_ci_low=0.6, new_ci_high=0.8)
    data_p = [0.004, float("nan"), 0.9]
    out, data_adjusted, summary = decide_rows(rows, data_p, min_group_size=30, max_ci_width=0.3)
    assert list(out["scope"]) == ["primary"] * 3 + ["exploratory"] * 5
    assert out["p_adjusted"][:3].tolist() == pytest.approx(adjust_p_values([0.01, 0.02, 0.5], method="holm"))
    pooled = adjust_p_values([0.001, 0.002, 0.03, 0.04, 0.2, 0.004, 0.9], method="bh")
    assert out["p_adjusted"][3:].tolist() == pytest.approx(pooled[:5])
    assert data_adjusted[[0, 2]].tolist() == pytest.approx(pooled[5:]) and np.isnan(data_adjusted[1])
    assert summary["families"]["primary"]["n_tests"] == 3 and summary["families"]["exploratory"]["n_tests"] == 7
    assert summary["families"]["exploratory"]["n_data_tests"] == 2
    # significant means p_adjusted < alpha, as worse_than_rest in an audit
    assert list(out["verdict"][:3]) == ["regressed", "regressed", "no_evidence_of_change"]
    assert summary["alpha"] == 0.05 and summary["families"]["primary"]["n_regressed"] == 2


def test_calibration_error_difference_keeps_level_and_covers():
    """Paired ECE rows (15 bins, paired Poisson bootstrap): under equal calibration the two-sided bootstrap test
    rejects at most about 5 %; with NEW less calibrated the interval covers the true difference (measured with
    300 replicates and n = 400: 3.7 % and 95.3 % / 93.7 %; this test runs 120 null replicates)."""
    import pandas as pd

    from audit.compare.model import VersionData, _weighted_ece, compare_model

    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.5, 1.0, 1000)
    correct = rng.random(1000) < confidence ** 1.5
    index = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    direct = np.abs(np.bincount(index, weights=correct - confidence, minlength=15)).sum() / 1000
    assert _weighted_ece(np.ones((1, 1000), dtype=np.float32), confidence, correct)[0] == pytest.approx(direct, abs=1e-5)
    n, reps, rejected = 400, 120, 0
    for _ in range(reps):
        labels = rng.integers(0, 2, n)
        conf_old = rng.uniform(0.5, 1.0, n)
        correct_old = rng.random(n) < conf_old ** 1.5
        keep = rng.random(n) < 0.6
        conf_new = np.where(keep, conf_old, rng.uniform(0.5, 1.0, n))
        correct_new = rng.random(n) < conf_new ** 1.5
        groups = {"site": pd.Series(np.array(["A", "B"])[rng.integers(0, 2, n)])}
        old = VersionData(labels, np.where(correct_old, labels, 1 - labels), groups, 2, confidence=conf_old)
        new = VersionData(labels, np.where(correct_new, labels, 1 - labels), groups, 2, confidence=conf_new)
        rows = compare_model(old, new, classes=["a", "b"], method="paired", metadata_attributes=[], n_bootstrap=200,
                             seed=int(rng.integers(1 << 30)))
        row = rows[(rows["metric"] == "expected_calibration_error") & (rows["attribute"] == "all")].iloc[0]
        assert row["scope"] == "exploratory" and row["n_old"] == n
        rejected += row["p_value"] < 0.05
    assert rejected / reps <= 0.05 + 0.03, rejected / reps
