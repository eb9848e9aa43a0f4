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

    Returns NaN where either side is empty.
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
