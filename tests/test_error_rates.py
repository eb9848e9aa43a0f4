"""Seeded simulations that fail when the audit's intervals or tests stop having the error rates they claim.

Issue 13, item 6. Each simulation is small enough to run in seconds: many independent groups go through
one call (each group's interval and test are computed from its own images), so a few calls give hundreds
of replicates. Thresholds are the claim minus a margin for simulation error (stated per test); the
figures measured at larger scale are in bench/results/error_rates.json.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.analysis._stats import boschloo_p_value_lower, fisher_p_value_higher, fisher_p_value_lower
from audit.analysis.group_performance import compute_group_performance
from audit.analysis.multiplicity import apply_audit_multiplicity, is_metadata_only


def _replicate_groups(n: int, accuracy: float, replicates: int, rng) -> tuple:
    """``replicates`` independent groups of ``n`` images, two balanced classes, recall ``accuracy`` in each
    (so population accuracy, balanced accuracy and macro-F1 all equal ``accuracy``)."""
    labels = np.tile(np.repeat([0, 1], [n // 2, n - n // 2]), replicates)
    correct = rng.random(labels.size) < accuracy
    predictions = np.where(correct, labels, 1 - labels)
    groups = pd.DataFrame({"replicate": np.repeat([f"r{i:04d}" for i in range(replicates)], n)})
    return labels, predictions, groups


#: Coverage claims: nominal 95 %; at least 93 % from n = 30 on (issue 13). At n = 10 every interval of a
#: proportion near 0.95 is limited by discreteness (Wilson measures about 90-91 %); we require 88 %.
COVERAGE_FLOOR = {10: 0.88, 30: 0.93, 100: 0.93}


@pytest.mark.parametrize("n", [10, 30, 100])
@pytest.mark.parametrize("accuracy", [0.8, 0.95])
def test_interval_coverage_of_every_aggregate_metric(n, accuracy):
    replicates = 600
    rng = np.random.default_rng(1000 * n + int(100 * accuracy))
    labels, predictions, groups = _replicate_groups(n, accuracy, replicates, rng)
    table = compute_group_performance(labels, predictions, classes=["x", "y"], groups=groups, max_depth=1,
                                      n_bootstrap=1000, seed=int(rng.integers(1 << 30)),
                                      min_group_size=1, max_ci_width=1.0).table
    rows = table[table["attribute"] == "replicate"]
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        selected = rows[rows["metric"] == metric]
        assert len(selected) == replicates
        covered = ((selected["ci_low"] <= accuracy) & (accuracy <= selected["ci_high"])).mean()
        assert covered >= COVERAGE_FLOOR[n], (metric, n, accuracy, covered)
        # never a zero-width interval, even for a group without errors
        assert ((selected["ci_high"] - selected["ci_low"]) > 1e-6).all(), metric


def test_no_error_group_keeps_an_interval():
    labels = np.array([0, 1] * 15)
    table = compute_group_performance(labels, labels.copy(), classes=["x", "y"], groups=None, n_bootstrap=1000).table
    for metric in ("balanced_accuracy", "macro_f1"):
        row = table[table["metric"] == metric].iloc[0]
        assert row["value"] == 1.0 and row["ci_high"] == 1.0
        assert 0.8 < row["ci_low"] < 0.97, (metric, row["ci_low"])


def test_exact_proportion_tests_hold_their_level():
    """Fisher (both directions) and Boschloo never reject a true null more often than 5 % (margin: 3 SE)."""
    rng = np.random.default_rng(7)
    for n_group, n_rest, p in ((40, 400, 0.9), (60, 480, 0.8), (30, 300, 0.05)):
        sims = 20000
        x1 = rng.binomial(n_group, p, sims)
        x2 = rng.binomial(n_rest, p, sims)
        margin = 3 * np.sqrt(0.05 * 0.95 / sims)
        assert (fisher_p_value_lower(x1, n_group, x2, n_rest) < 0.05).mean() <= 0.05 + margin
        assert (fisher_p_value_higher(x1, n_group, x2, n_rest) < 0.05).mean() <= 0.05 + margin
        unique, inverse = np.unique(np.stack([x1, x2]), axis=1, return_inverse=True)
        p_unique = boschloo_p_value_lower(unique[0], n_group, unique[1], n_rest)
        rate = (p_unique[inverse.ravel()] < 0.05).mean()
        assert rate <= 0.05 + margin, (n_group, p, rate)
        # and Boschloo is at least as powerful as Fisher on every table
        assert (p_unique <= fisher_p_value_lower(unique[0], n_group, unique[1], n_rest) + 1e-9).all()


def test_calibration_error_test_false_positive_rate():
    """Same calibration curve everywhere (P(correct) = confidence ** 1.5): the permutation test's rejection
    rate at 5 % stays at most 7.5 % over 400 group tests (the old parametric test: 9-26 %)."""
    rng = np.random.default_rng(11)
    rejected = tested = 0
    for seed in range(5):
        n_groups, size = 80, 40
        n = n_groups * size
        confidence = rng.uniform(0.5, 1.0, n)
        labels = rng.integers(0, 2, n)
        correct = rng.random(n) < confidence ** 1.5
        predictions = np.where(correct, labels, 1 - labels)
        probabilities = np.zeros((n, 2))
        probabilities[np.arange(n), predictions] = confidence
        probabilities[np.arange(n), 1 - predictions] = 1 - confidence
        groups = pd.DataFrame({"g": np.repeat([f"g{i:02d}" for i in range(n_groups)], size)})
        table = compute_group_performance(labels, predictions, classes=["x", "y"], groups=groups,
                                          probabilities=probabilities, max_depth=1, n_bootstrap=400,
                                          seed=seed, min_group_size=1, max_ci_width=1.0).table
        p = table[(table["metric"] == "expected_calibration_error") & (table["attribute"] == "g")]["p_value"]
        rejected += int((p < 0.05).sum())
        tested += len(p)
    assert tested == 400
    assert rejected / tested <= 0.075, rejected / tested


def _null_audit(rng, n=600, n_bootstrap=200):
    labels = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.85
    predictions = np.where(correct, labels, 1 - labels)
    groups = pd.DataFrame({"site": rng.choice([f"s{i}" for i in range(4)], n),
                           "age": rng.choice([f"a{i}" for i in range(5)], n),
                           "camera": rng.choice(["c0", "c1"], n)})
    return compute_group_performance(labels, predictions, classes=["x", "y"], groups=groups, max_depth=2,
                                     n_bootstrap=n_bootstrap, seed=int(rng.integers(1 << 30))).table


def test_familywise_error_under_the_null_across_the_whole_table():
    """No group effect: audits with any worse_than_rest row (primary or exploratory, any metric) stay rare.

    60 null audits of 600 images, 3 attributes and their pairs (about 200 tested rows each); the claim is
    at most 5 %, we allow 6 of 60 (10 %, simulation margin). The per-family procedure it replaces flagged a
    row in most such audits.
    """
    rng = np.random.default_rng(2026)
    flagged = 0
    for _ in range(60):
        table = _null_audit(rng)
        worse = table[(table["verdict"] == "worse_than_rest") & table["attribute"].map(is_metadata_only)]
        flagged += bool(len(worse))
    assert flagged <= 6, flagged


def test_false_discovery_rate_of_the_exploratory_family():
    """200 null rows and 20 rows 25 points worse, one-sided Fisher p-values, adjusted as exploratory rows:
    the mean share of false discoveries among the discoveries stays at or below 5 % (+1 % margin)."""
    rng = np.random.default_rng(5)
    fdp = []
    for _ in range(300):
        n_null, n_effect, n, rest_n = 200, 20, 60, 2000
        p_true = np.r_[np.full(n_null, 0.8), np.full(n_effect, 0.55)]
        x = rng.binomial(n, p_true)
        rest = rng.binomial(rest_n, 0.8, p_true.size)
        table = pd.DataFrame({"attribute": "site & camera", "group": [f"g{i}" for i in range(p_true.size)],
                              "class": "", "n": n, "metric": "accuracy", "value": x / n, "ci_low": 0.0,
                              "ci_high": 1.0, "insufficient_evidence": False, "verdict": "",
                              "p_value": fisher_p_value_lower(x, n, rest, rest_n)})
        result = apply_audit_multiplicity(table, alpha=0.05)
        worse = result.table["verdict"].to_numpy() == "worse_than_rest"
        assert (result.table["scope"] == "exploratory").all()
        fdp.append(worse[:n_null].sum() / max(worse.sum(), 1))
    assert np.mean(fdp) <= 0.06, np.mean(fdp)


def test_power_when_one_group_is_ten_points_worse():
    """One site of 200 images at accuracy 0.75 against 0.85 elsewhere (5 sites, plus a 4-group attribute
    and the pairs): found as a primary worse_than_rest row in at least 60 % of 50 data sets (measured
    about 70-75 %; bench/results/error_rates.json)."""
    rng = np.random.default_rng(99)
    site = np.repeat([f"s{i}" for i in range(5)], 200)
    found = 0
    for _ in range(50):
        labels = rng.integers(0, 2, site.size)
        correct = rng.random(site.size) < np.where(site == "s0", 0.75, 0.85)
        predictions = np.where(correct, labels, 1 - labels)
        groups = pd.DataFrame({"site": site, "device": rng.choice(["d0", "d1", "d2", "d3"], site.size)})
        table = compute_group_performance(labels, predictions, classes=["x", "y"], groups=groups, max_depth=2,
                                          n_bootstrap=100, seed=int(rng.integers(1 << 30))).table
        row = table[(table["attribute"] == "site") & (table["group"] == "s0") & (table["metric"] == "accuracy")]
        assert row["scope"].iloc[0] == "primary"
        found += bool((row["verdict"] == "worse_than_rest").iloc[0])
    assert found >= 30, found
