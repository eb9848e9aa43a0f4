"""Tests of the shared statistics (audit.analysis._stats) and the vectorised bootstrap (audit.analysis._bootstrap)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from audit.analysis import _bootstrap
from audit.analysis._stats import (ERROR_UNKNOWN_CORRECTION, adjust_p_values, fisher_p_value_lower,
                                   two_proportion_p_value_lower, wilson_interval, z_value)


def test_wilson_interval_known_values_and_edges():
    low, high = wilson_interval(8, 10)
    assert (float(low), float(high)) == pytest.approx((0.4901624715, 0.9433178485), abs=1e-9)
    low, high = wilson_interval([0, 10, 0], [10, 10, 0])
    assert low[0] == 0 and high[1] == 1 and (low[2], high[2]) == (0, 1)
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_adjust_p_values_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    holm = adjust_p_values(p)
    bh = adjust_p_values(p, method="bh")
    assert np.allclose(holm[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(holm[4])
    assert np.allclose(bh[:4], [0.02, 0.04, 0.04, 0.02])
    with pytest.raises(ValueError) as raised:
        adjust_p_values(p, method="sidak")
    assert str(raised.value) == ERROR_UNKNOWN_CORRECTION.format(name="sidak")


def test_fisher_p_value_lower_equals_scipy_fisher_exact():
    cases = [(3, 20, 40, 50), (18, 20, 40, 50), (0, 5, 5, 5), (30, 31, 900, 1000)]
    ours = fisher_p_value_lower(*np.array(cases).T)
    for (x1, n1, x2, n2), p in zip(cases, ours):
        expected = stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="less").pvalue
        assert p == pytest.approx(expected, rel=1e-9)
    assert np.isnan(fisher_p_value_lower(1, 0, 3, 4))
    # The z test understates the lower tail of small groups near accuracy 1; Fisher does not.
    assert fisher_p_value_lower(24, 30, 900, 1000) > two_proportion_p_value_lower(24, 30, 900, 1000)


def _cells():
    counts = np.array([1, 1, 2, 3, 1, 40, 7, 120, 1, 2])  # mixes small (row-drawn) and large (Poisson) cells
    columns_a = np.array([0, 1, 1, 2, -1, 0, 2, 1, 2, 0])
    columns_b = np.array([1, 1, 0, 0, 0, -1, 1, 0, -1, 1])
    weights_b = np.linspace(0.1, 1.0, counts.size)
    targets = [_bootstrap.indicator(columns_a, 3), _bootstrap.indicator(columns_b, 2, weights=weights_b)]
    return counts, columns_a, columns_b, weights_b, targets


def test_poisson_sums_have_poisson_moments_for_small_and_large_cells():
    counts, columns_a, columns_b, weights_b, targets = _cells()
    chunks = list(_bootstrap.iter_poisson_sums(counts, targets, n_boot=20000, rng=np.random.default_rng(0),
                                               max_elements=50_000))
    assert len(chunks) > 1 and sum(size for size, _ in chunks) == 20000
    a = np.concatenate([sums[0] for _, sums in chunks])
    b = np.concatenate([sums[1] for _, sums in chunks])
    expected_a = np.bincount(columns_a[columns_a >= 0], weights=counts[columns_a >= 0], minlength=3)
    keep = columns_b >= 0
    expected_b = np.bincount(columns_b[keep], weights=(counts * weights_b)[keep], minlength=2)
    variance_b = np.bincount(columns_b[keep], weights=(counts * weights_b ** 2)[keep], minlength=2)
    # Poisson: mean = variance = expected count (weighted: sum of c w and of c w^2).
    assert np.allclose(a.mean(axis=0), expected_a, atol=4 * np.sqrt(expected_a / 20000) + 1e-9)
    assert np.allclose(a.var(axis=0), expected_a, rtol=0.06)
    assert np.allclose(b.mean(axis=0), expected_b, atol=4 * np.sqrt(variance_b / 20000))
    assert np.allclose(b.var(axis=0), variance_b, rtol=0.06)
    # Sums sharing cells co-vary: cov(a_j, b_k) = sum over shared cells of c w.
    shared = (columns_a == 1) & (columns_b == 0)
    expected_cov = (counts * weights_b)[shared].sum()
    assert np.cov(a[:, 1], b[:, 0])[0, 1] == pytest.approx(expected_cov, rel=0.08)


def test_poisson_sums_are_seeded():
    counts, *_, targets = _cells()
    first = [s for _, sums in _bootstrap.iter_poisson_sums(counts, targets, n_boot=50,
                                                           rng=_bootstrap.family_rng(3, "region")) for s in sums]
    second = [s for _, sums in _bootstrap.iter_poisson_sums(counts, targets, n_boot=50,
                                                            rng=_bootstrap.family_rng(3, "region")) for s in sums]
    other = [s for _, sums in _bootstrap.iter_poisson_sums(counts, targets, n_boot=50,
                                                           rng=_bootstrap.family_rng(3, "colour")) for s in sums]
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_percentile_interval_matches_numpy_and_contains_the_estimate():
    rng = np.random.default_rng(1)
    replicates = rng.normal(size=(999, 4))
    estimate = np.array([0.0, 0.1, 5.0, np.nan])
    low, high = _bootstrap.percentile_interval(replicates, estimate, confidence_level=0.9)
    q = np.quantile(replicates, [0.05, 0.95], axis=0)
    assert np.allclose(low[:2], q[0, :2]) and np.allclose(high[:2], q[1, :2])
    assert low[2] <= 5.0 == high[2]  # widened to contain the estimate
    assert np.isnan(low[3]) and np.isnan(high[3])
    # NaN replicates are ignored; an all-NaN column gives NaN bounds.
    replicates[:500, 0] = np.nan
    replicates[:, 1] = np.nan
    low, high = _bootstrap.percentile_interval(replicates, np.zeros(4), confidence_level=0.9)
    assert np.allclose([low[0], high[0]], np.quantile(replicates[500:, 0], [0.05, 0.95]))
    assert np.isnan(low[1])
    # The expanded interval (with n) is wider for small n and tends to the plain one for large n.
    plain = _bootstrap.percentile_interval(replicates[:, 2:3], np.zeros(1), confidence_level=0.95)
    small = _bootstrap.percentile_interval(replicates[:, 2:3], np.zeros(1), confidence_level=0.95, n=np.array([10]))
    large = _bootstrap.percentile_interval(replicates[:, 2:3], np.zeros(1), confidence_level=0.95, n=np.array([10**6]))
    assert small[0] < plain[0] and small[1] > plain[1]
    assert large[0] == pytest.approx(plain[0], abs=1e-3)


def test_basic_interval_reflects_bias_and_stays_in_range():
    replicates = np.random.default_rng(2).normal(0.3, 0.05, size=(2000, 1))  # bootstrap sits 0.1 above
    low, high = _bootstrap.basic_interval(replicates, np.array([0.2]), confidence_level=0.95)
    assert low[0] == pytest.approx(2 * 0.2 - np.quantile(replicates, 0.975), abs=1e-9)
    assert high[0] == pytest.approx(0.2)  # the reflected upper bound (0.1...) is widened to the estimate
    low, _ = _bootstrap.basic_interval(replicates, np.array([0.05]), confidence_level=0.95)
    assert low[0] == 0.0


def test_bootstrap_p_value_lower():
    rng = np.random.default_rng(3)
    replicates = rng.normal(0, 0.1, size=(4000, 3))
    p = _bootstrap.bootstrap_p_value_lower(np.array([-0.2, 0.0, 0.3]), replicates)
    assert p[0] == pytest.approx(stats.norm.cdf(-2.0), rel=0.1)
    assert p[1] == pytest.approx(0.5) and p[2] > 0.99
    constant = np.zeros((10, 2))
    assert list(_bootstrap.bootstrap_p_value_lower(np.array([-0.1, 0.0]), constant)) == [0.0, 1.0]
