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


def _reference_segment_sums(values, cells, target):
    """The per-segment ``np.add.reduceat`` the bootstrap used before it grouped segments by length."""
    out = np.zeros((values.shape[0], target.size))
    columns = target.columns[cells]
    contributing = np.flatnonzero(columns >= 0)
    order = contributing[np.argsort(columns[contributing], kind="stable")]
    if order.size:
        sorted_columns = columns[order]
        starts = np.flatnonzero(np.r_[True, sorted_columns[1:] != sorted_columns[:-1]])
        block = values[:, order]
        if target.weights is not None:
            block = block * target.weights[cells][order]
        out[:, sorted_columns[starts]] += np.add.reduceat(block, starts, axis=1)
    return out


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("spare_columns", [3, 400])  # most columns summed / few (written in place)
def test_segment_sums_are_bitwise_those_of_reduceat(weighted, spare_columns):
    # Segments of every length from 1 to past the pairwise-summation blocks (8, 128) and the reduceat
    # fallback, so each branch of _pairwise_sum is compared bit for bit.
    rng = np.random.default_rng(7)
    lengths = np.r_[np.arange(1, 40), [64, 127, 128, 129, 130, 137, 300]]
    columns = rng.permutation(np.r_[np.repeat(np.arange(lengths.size), lengths), np.full(25, -1)])
    n_cells = columns.size
    target = _bootstrap.indicator(columns, lengths.size + spare_columns,
                                  weights=rng.random(n_cells) if weighted else None)
    values = rng.standard_gamma(0.7, size=(23, n_cells))
    ours = _bootstrap._segment_sums(np.ascontiguousarray(values.T), _bootstrap._plan(np.arange(n_cells), target),
                                    target.size)
    assert np.array_equal(ours, _reference_segment_sums(values, np.arange(n_cells), target))


def _reference_poisson_sums(cell_counts, targets, *, n_boot, rng, max_elements):
    """iter_poisson_sums as it was before it grouped segments by length (same draws, same additions)."""
    small = np.flatnonzero(cell_counts <= _bootstrap.SMALL_CELL)
    large = np.flatnonzero(cell_counts > _bootstrap.SMALL_CELL)
    rows_of_small = np.repeat(small, cell_counts[small])
    n_rows = rows_of_small.size
    chunk = max(1, min(n_boot, max_elements // max([large.size, n_rows, 1] + [t.size for t in targets])))
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        sums = [np.zeros((size, t.size)) for t in targets]
        if large.size:
            draws = rng.poisson(cell_counts[large].astype(float), size=(size, large.size)).astype(np.float64)
            sums = [_reference_segment_sums(draws, large, t) for t in targets]
        if n_rows:
            picks = rng.integers(0, size * n_rows, size=int(rng.poisson(size * n_rows)))
            replicate, row = np.divmod(picks, n_rows)
            for t, out in zip(targets, sums):
                columns = np.where(t.columns[rows_of_small] >= 0, t.columns[rows_of_small], t.size)
                if not (columns < t.size).any():
                    continue
                weights = None if t.weights is None else t.weights[rows_of_small][row]
                counted = np.bincount(replicate * (t.size + 1) + columns[row], weights=weights,
                                      minlength=size * (t.size + 1))
                out += counted.reshape(size, t.size + 1)[:, :t.size]
        yield size, sums
        done += size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dirichlet_and_poisson_sums_equal_the_reduceat_reference(seed):
    rng = np.random.default_rng(seed)
    n_cells, n_columns = 3000, 150
    counts = rng.geometric(0.3, n_cells) * (rng.random(n_cells) < 0.8)
    targets = [_bootstrap.indicator(rng.integers(-1, n_columns, n_cells), n_columns),
               _bootstrap.indicator(np.sort(rng.integers(-1, 3, n_cells)), 3, weights=rng.random(n_cells)),
               _bootstrap.indicator(rng.integers(-1, n_columns, n_cells), n_columns,
                                    weights=(rng.random(n_cells) < 0.5).astype(float))]
    ours = list(_bootstrap.iter_poisson_sums(counts, targets, n_boot=90, rng=np.random.default_rng(seed),
                                             max_elements=50_000))
    reference = list(_reference_poisson_sums(counts, targets, n_boot=90, rng=np.random.default_rng(seed),
                                             max_elements=50_000))
    assert [size for size, _ in ours] == [size for size, _ in reference] and len(ours) > 1
    for (_, sums), (_, expected) in zip(ours, reference):
        assert all(np.array_equal(a, b) for a, b in zip(sums, expected))
    # Dirichlet (Gamma-weighted cells, half pseudo-counts included): same draws, same sums, bit for bit.
    weights = counts + 0.5 * (rng.random(n_cells) < 0.3)
    cells = np.flatnonzero(weights > 0)
    draws_rng = np.random.default_rng(seed + 10)
    for size, sums in _bootstrap.iter_dirichlet_sums(weights, targets, n_draws=90,
                                                     rng=np.random.default_rng(seed + 10), max_elements=50_000):
        draws = draws_rng.standard_gamma(weights[cells], size=(size, cells.size))
        assert all(np.array_equal(ours_t, _reference_segment_sums(draws, cells, t)) for ours_t, t in zip(sums, targets))
