"""Shared statistics: Wilson intervals and multiple-comparison control.

All functions are vectorised over numpy arrays and pure.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

ERROR_UNKNOWN_CORRECTION = "unknown multiple-comparison correction {name!r}: use 'holm' or 'bh'"


def z_value(confidence_level: float) -> float:
    """Two-sided standard-normal quantile for ``confidence_level`` (1.959964 for 0.95)."""
    return float(stats.norm.ppf(0.5 + confidence_level / 2.0))


def wilson_interval(successes, n, *, confidence_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    successes, n : array-like
        Number of successes and trials (broadcast together). Where ``n == 0`` the interval is [0, 1].
    confidence_level : float
        Coverage of the two-sided interval.

    Returns
    -------
    low, high : ndarray of float
        Interval bounds, always containing ``successes / n``.
    """
    successes = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = z_value(confidence_level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, successes / np.where(n > 0, n, 1), 0.0)
        denominator = 1.0 + z * z / np.where(n > 0, n, 1)
        centre = (p + z * z / (2 * np.where(n > 0, n, 1))) / denominator
        half = z * np.sqrt(p * (1 - p) / np.where(n > 0, n, 1) + z * z / (4 * np.where(n > 0, n, 1) ** 2)) / denominator
    low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    # Guard against rounding putting the point estimate a hair outside its interval.
    low = np.minimum(low, p)
    high = np.maximum(high, p)
    return low, high


def adjust_p_values(p_values, *, method: str = "holm") -> np.ndarray:
    """Adjust a family of p-values for multiple comparisons.

    Parameters
    ----------
    p_values : array-like
        Raw p-values of one family (NaN entries are ignored and stay NaN).
    method : {"holm", "bh"}
        Holm's step-down (controls the family-wise error rate) or Benjamini-Hochberg (controls the false
        discovery rate).

    Returns
    -------
    ndarray
        Adjusted p-values, monotone in the raw ones, capped at 1.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    m = int(valid.sum())
    if m == 0:
        return adjusted
    values = p[valid]
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    if method == "holm":
        factors = m - np.arange(m)
        stepped = np.maximum.accumulate(np.minimum(ranked * factors, 1.0))
    elif method == "bh":
        factors = m / np.arange(1, m + 1)
        stepped = np.minimum.accumulate((ranked * factors)[::-1])[::-1]
        stepped = np.minimum(stepped, 1.0)
    else:
        raise ValueError(ERROR_UNKNOWN_CORRECTION.format(name=method))
    result = np.empty(m)
    result[order] = stepped
    adjusted[valid] = result
    return adjusted


def two_proportion_p_value_lower(successes_group, n_group, successes_rest, n_rest) -> np.ndarray:
    """One-sided p-value that the group's proportion is *lower* than the rest's (pooled z test).

    Kept for comparison only (bench/error_rates.py): its normal approximation rejects a true null far more
    often than its nominal level in groups of a few dozen images; every test of the audit uses
    :func:`fisher_p_value_lower` / :func:`fisher_p_value_higher`. Returns NaN where either side is empty.
    """
    x1 = np.asarray(successes_group, dtype=float)
    n1 = np.asarray(n_group, dtype=float)
    x2 = np.asarray(successes_rest, dtype=float)
    n2 = np.asarray(n_rest, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (x1 / n1 - x2 / n2) / se
        p = stats.norm.cdf(z)
    # No variance at all (everything right or everything wrong): no evidence of a gap.
    p = np.where((se == 0) & (n1 > 0) & (n2 > 0), 1.0, p)
    return np.where((n1 > 0) & (n2 > 0), p, np.nan)


def fisher_p_value_higher(successes_group, n_group, successes_rest, n_rest) -> np.ndarray:
    """One-sided Fisher exact p-value that the group's proportion is *higher* than the rest's.

    ``P(X >= successes_group)`` with ``X`` hypergeometric given the margins (used for harmful rates: label
    disagreement, data-quality issue rates). Exact: never anti-conservative. NaN where either side is empty.
    """
    x1 = np.asarray(successes_group, dtype=float)
    n1 = np.asarray(n_group, dtype=float)
    x2 = np.asarray(successes_rest, dtype=float)
    n2 = np.asarray(n_rest, dtype=float)
    valid = (n1 > 0) & (n2 > 0)
    total = np.where(valid, n1 + n2, 1)
    p = stats.hypergeom.sf(np.where(valid, x1, 0) - 1, total, np.where(valid, x1 + x2, 0), np.where(valid, n1, 1))
    return np.where(valid, np.clip(p, 0.0, 1.0), np.nan)


def wilson_max_width(n, *, confidence_level: float = 0.95) -> np.ndarray:
    """Width of the Wilson interval at the least favourable proportion (0.5) for ``n`` trials.

    Depends on ``n`` only, so a rule "too uncertain when this exceeds a width" never looks at the observed
    value (a rule on the observed interval's width would keep good groups and hide bad ones: at n = 35 the
    interval is narrow at accuracy 0.9 and wide at 0.5). ``inf`` where ``n == 0``.
    """
    n = np.asarray(n, dtype=float)
    z = z_value(confidence_level)
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(n > 0, n, 1.0)
        width = 2 * z * np.sqrt(0.25 / safe + z * z / (4 * safe ** 2)) / (1 + z * z / safe)
    return np.where(n > 0, np.minimum(width, 1.0), np.inf)


def newcombe_difference_interval(x1, n1, x2, n2, *, confidence_level: float = 0.95):
    """Newcombe's hybrid score interval (method 10) for ``p1 - p2`` from two Wilson intervals.

    Returns ``(difference, low, high)``; NaN where a side is empty. Coverage close to nominal for small
    samples and proportions near 0 or 1, unlike the Wald interval.
    """
    x1, n1, x2, n2 = (np.asarray(a, dtype=float) for a in (x1, n1, x2, n2))
    l1, u1 = wilson_interval(x1, n1, confidence_level=confidence_level)
    l2, u2 = wilson_interval(x2, n2, confidence_level=confidence_level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1 = np.where(n1 > 0, x1 / np.where(n1 > 0, n1, 1), np.nan)
        p2 = np.where(n2 > 0, x2 / np.where(n2 > 0, n2, 1), np.nan)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high


def fisher_p_value_lower(successes_group, n_group, successes_rest, n_rest) -> np.ndarray:
    """One-sided Fisher exact p-value that the group's proportion is *lower* than the rest's.

    Conditional on the margins the group's successes are hypergeometric; the p-value is
    ``P(X <= successes_group)``. Exact (never anti-conservative), unlike the z test whose normal
    approximation understates the lower tail of proportions near 1 in small groups. Returns NaN where
    either side is empty.
    """
    x1 = np.asarray(successes_group, dtype=float)
    n1 = np.asarray(n_group, dtype=float)
    x2 = np.asarray(successes_rest, dtype=float)
    n2 = np.asarray(n_rest, dtype=float)
    valid = (n1 > 0) & (n2 > 0)
    total = np.where(valid, n1 + n2, 1)
    p = stats.hypergeom.cdf(np.where(valid, x1, 0), total, np.where(valid, x1 + x2, 0), np.where(valid, n1, 1))
    return np.where(valid, np.clip(p, 0.0, 1.0), np.nan)


#: Largest ``(n_group + 1) x (n_rest + 1)`` table grid for which the exact unconditional test is computed;
#: beyond it Fisher's test is used (its conservativeness fades as groups grow).
BOSCHLOO_MAX_CELLS = 400_000
_NUISANCE_GRID = np.concatenate([np.linspace(1e-4, 1 - 1e-4, 199), [0.5]])


def boschloo_p_value_lower(successes_group, n_group, successes_rest, n_rest, *,
                           max_cells: int = BOSCHLOO_MAX_CELLS) -> np.ndarray:
    """One-sided Boschloo exact unconditional p-value that the group's proportion is *lower* than the rest's.

    The statistic of a table is Fisher's one-sided p-value; the p-value is the largest, over the common
    success probability ``pi`` of the null, probability of a table at least as extreme:
    ``sup_pi sum_{T(a, b) <= T(x1, x2)} Bin(a; n1, pi) Bin(b; n2, pi)`` (maximised on a 200-point grid,
    refined around its best point). Exact (size never above the level) and uniformly more powerful than
    Fisher's test, which conditions on the margins and is conservative for discrete data (Boschloo 1970;
    ``scipy.stats.boschloo_exact`` gives the same value, much more slowly). Where the table grid exceeds
    ``max_cells`` Fisher's p-value is returned. NaN where either side is empty.
    """
    x1 = np.atleast_1d(np.asarray(successes_group, dtype=float))
    n1 = np.atleast_1d(np.asarray(n_group, dtype=float))
    x2 = np.atleast_1d(np.asarray(successes_rest, dtype=float))
    n2 = np.atleast_1d(np.asarray(n_rest, dtype=float))
    x1, n1, x2, n2 = np.broadcast_arrays(x1, n1, x2, n2)
    fisher = fisher_p_value_lower(x1, n1, x2, n2)
    out = fisher.astype(float).copy()
    for i in range(out.size):
        a_n, b_n = int(n1.flat[i]), int(n2.flat[i])
        if not np.isfinite(fisher.flat[i]) or (a_n + 1) * (b_n + 1) > max_cells:
            continue
        out.flat[i] = _boschloo_one(int(x1.flat[i]), a_n, int(x2.flat[i]), b_n)
    return out.reshape(np.shape(fisher))


def _boschloo_one(x1: int, n1: int, x2: int, n2: int) -> float:
    from scipy.special import gammaln

    total = n1 + n2
    a = np.arange(n1 + 1)[:, None]
    column = np.arange(total + 1)[None, :]  # the number of successes in both samples
    # Fisher's statistic P(A <= a | A + B = s): hypergeometric log-pmf over (a, s), then cumulative sums.
    with np.errstate(invalid="ignore"):
        log_pmf = (gammaln(column + 1) - gammaln(a + 1) - gammaln(column - a + 1)
                   + gammaln(total - column + 1) - gammaln(n1 - a + 1) - gammaln(total - column - n1 + a + 1)
                   - gammaln(total + 1) + gammaln(n1 + 1) + gammaln(n2 + 1))
    valid = (column - a >= 0) & (column - a <= n2)
    cdf = np.cumsum(np.where(valid, np.exp(np.where(valid, log_pmf, 0.0)), 0.0), axis=0)
    b = np.arange(n2 + 1)[None, :]
    statistic = cdf[np.arange(n1 + 1)[:, None], a + b]
    observed = statistic[x1, x2]
    extreme = (statistic <= observed * (1 + 1e-7)).astype(float)

    def binomial(n, pis):
        k = np.arange(n + 1)[:, None]
        log_c = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
        return np.exp(log_c + k * np.log(pis)[None, :] + (n - k) * np.log1p(-pis)[None, :])

    # The extreme tables of each row a are the b at or above a threshold (the statistic falls as b grows), so
    # the probability of a row's extreme part is a binomial survival function.
    count = extreme.sum(axis=1).astype(np.int64)
    start = n2 + 1 - count
    suffix = bool(all(extreme[i, start[i]:].all() for i in range(n1 + 1)))

    def tail(pis):
        pb = binomial(n2, pis)
        if not suffix:
            return ((extreme @ pb) * binomial(n1, pis)).sum(axis=0)
        survival = np.vstack([np.cumsum(pb[::-1], axis=0)[::-1], np.zeros((1, pis.size))])
        return (survival[start] * binomial(n1, pis)).sum(axis=0)

    values = tail(_NUISANCE_GRID)
    best = _NUISANCE_GRID[int(np.argmax(values))]
    fine = np.clip(np.linspace(best - 0.006, best + 0.006, 61), 1e-6, 1 - 1e-6)
    p = max(float(values.max()), float(tail(fine).max()))
    return float(min(max(p, 0.0), 1.0))
