"""Differences between two versions: intervals and tests, paired and unpaired. Pure, vectorised.

Proportions (accuracy, recall, shares, rates) get closed-form score intervals for the difference
``new - old`` (Newcombe 1998, method 10, built from Wilson intervals) and exact tests:

- paired (the same images scored by both versions): Newcombe's interval for paired proportions, which
  uses the correlation of the two outcomes, and the exact McNemar test (binomial test on the discordant
  images);
- unpaired (different image sets): Newcombe's hybrid score interval for independent proportions and a
  two-sided Fisher exact test (doubled one-sided hypergeometric tail).

Metrics that are not single proportions (balanced accuracy, macro-F1, precision with a changing
denominator) get a Poisson bootstrap: paired resampling applies the same weight to an image in both
versions, unpaired resampling draws the versions independently. Coverage of every interval was checked
by simulation (tests/compare/test_stats.py).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from audit.analysis._stats import wilson_interval


def _wilson(x, n, confidence_level):
    low, high = wilson_interval(x, n, confidence_level=confidence_level)
    return np.asarray(low, dtype=float), np.asarray(high, dtype=float)


def paired_difference_interval(both, old_only, new_only, neither, *, confidence_level: float = 0.95):
    """Interval for ``p_new - p_old`` of a proportion measured twice on the same items.

    Parameters
    ----------
    both, old_only, new_only, neither : array-like of int
        The 2x2 table of outcomes: items that are successes in both versions, only in the old one, only in
        the new one, in neither.
    confidence_level : float

    Returns
    -------
    difference, low, high : ndarray
        ``(new_only - old_only) / n`` and Newcombe's (1998) method-10 interval (Wilson intervals of each
        margin combined with the phi correlation of the table). Where ``n == 0`` everything is NaN.
    """
    a, b, c, d = (np.asarray(v, dtype=float) for v in (both, old_only, new_only, neither))
    n = a + b + c + d
    safe_n = np.where(n > 0, n, 1.0)
    p_old = (a + b) / safe_n
    p_new = (a + c) / safe_n
    l_old, u_old = _wilson(a + b, n, confidence_level)
    l_new, u_new = _wilson(a + c, n, confidence_level)
    denominator = np.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(denominator > 0, (a * d - b * c) / np.where(denominator > 0, denominator, 1.0), 0.0)
    difference = p_new - p_old
    low = difference - np.sqrt(np.maximum((p_new - l_new) ** 2 - 2 * phi * (p_new - l_new) * (u_old - p_old)
                                          + (u_old - p_old) ** 2, 0.0))
    high = difference + np.sqrt(np.maximum((u_new - p_new) ** 2 - 2 * phi * (u_new - p_new) * (p_old - l_old)
                                           + (p_old - l_old) ** 2, 0.0))
    nan = np.where(n > 0, 1.0, np.nan)
    return difference * nan, np.clip(low, -1, 1) * nan, np.clip(high, -1, 1) * nan


def unpaired_difference_interval(x_old, n_old, x_new, n_new, *, confidence_level: float = 0.95):
    """Interval for ``x_new / n_new - x_old / n_old`` from two independent samples.

    Newcombe's (1998) method 10: the square-and-add combination of the two Wilson intervals. NaN where
    either sample is empty.
    """
    x_old, n_old, x_new, n_new = (np.asarray(v, dtype=float) for v in (x_old, n_old, x_new, n_new))
    valid = (n_old > 0) & (n_new > 0)
    p_old = x_old / np.where(n_old > 0, n_old, 1.0)
    p_new = x_new / np.where(n_new > 0, n_new, 1.0)
    l_old, u_old = _wilson(x_old, n_old, confidence_level)
    l_new, u_new = _wilson(x_new, n_new, confidence_level)
    difference = p_new - p_old
    low = difference - np.sqrt((p_new - l_new) ** 2 + (u_old - p_old) ** 2)
    high = difference + np.sqrt((u_new - p_new) ** 2 + (p_old - l_old) ** 2)
    nan = np.where(valid, 1.0, np.nan)
    return difference * nan, np.clip(low, -1, 1) * nan, np.clip(high, -1, 1) * nan


def mcnemar_exact_p_value(old_only, new_only) -> np.ndarray:
    """Two-sided exact McNemar p-value: binomial(old_only + new_only, 1/2) test on the discordant items.

    1.0 where there is no discordant item (nothing changed).
    """
    b = np.asarray(old_only, dtype=float)
    c = np.asarray(new_only, dtype=float)
    m = b + c
    p = 2.0 * stats.binom.cdf(np.minimum(b, c), np.where(m > 0, m, 1), 0.5)
    return np.where(m > 0, np.clip(p, 0.0, 1.0), 1.0)


def fisher_two_sided_p_value(x_old, n_old, x_new, n_new) -> np.ndarray:
    """Two-sided Fisher exact p-value for a change of proportion between independent samples.

    Conditional on the margins, the new sample's successes are hypergeometric; the p-value doubles the
    smaller tail (capped at 1), which never understates the evidence. NaN where either sample is empty.
    """
    x_old, n_old, x_new, n_new = (np.asarray(v, dtype=float) for v in (x_old, n_old, x_new, n_new))
    valid = (n_old > 0) & (n_new > 0)
    total = np.where(valid, n_old + n_new, 1)
    successes = np.where(valid, x_old + x_new, 0)
    draws = np.where(valid, n_new, 1)
    x = np.where(valid, x_new, 0)
    lower = stats.hypergeom.cdf(x, total, successes, draws)
    upper = stats.hypergeom.sf(x - 1, total, successes, draws)
    p = np.minimum(1.0, 2.0 * np.minimum(lower, upper))
    return np.where(valid, p, np.nan)


def bootstrap_difference(replicates_old: np.ndarray, replicates_new: np.ndarray, estimate: float, *,
                         confidence_level: float = 0.95) -> tuple[float, float, float]:
    """Percentile interval and two-sided p-value of ``new - old`` from bootstrap replicates.

    Parameters
    ----------
    replicates_old, replicates_new : ndarray of shape (B,)
        The metric in each replicate (paired: computed with the same resampling weights; unpaired: drawn
        independently). NaN replicates (e.g. a class absent from a resample) are dropped.
    estimate : float
        The difference on the data as observed.

    Returns
    -------
    low, high, p_value : float
        Percentile interval of the replicated differences, and ``2 * min(share <= 0, share >= 0)`` of them
        (with the usual +1 correction), the bootstrap test of no change.
    """
    differences = np.asarray(replicates_new, dtype=float) - np.asarray(replicates_old, dtype=float)
    differences = differences[np.isfinite(differences)]
    if differences.size < 10 or not np.isfinite(estimate):
        return float("nan"), float("nan"), float("nan")
    alpha = 1.0 - confidence_level
    low, high = np.quantile(differences, [alpha / 2, 1 - alpha / 2])
    below = (np.sum(differences <= 0) + 1) / (differences.size + 1)
    above = (np.sum(differences >= 0) + 1) / (differences.size + 1)
    return float(min(low, estimate)), float(max(high, estimate)), float(min(1.0, 2 * min(below, above)))


def chi_square_shift(counts_old, counts_new) -> tuple[float, int, float]:
    """Chi-square test that the groups' shares are the same in both versions (2 x G table).

    Groups empty in both versions are left out. Returns ``(statistic, degrees_of_freedom, p_value)``;
    NaN p-value when fewer than two groups remain. The test treats the versions as independent samples;
    images shared by both make the versions alike, so on overlapping data the test is conservative.
    """
    old = np.asarray(counts_old, dtype=float)
    new = np.asarray(counts_new, dtype=float)
    keep = (old + new) > 0
    old, new = old[keep], new[keep]
    if old.size < 2 or old.sum() == 0 or new.sum() == 0:
        return float("nan"), 0, float("nan")
    table = np.vstack([old, new])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = old.size - 1
    return statistic, dof, float(stats.chi2.sf(statistic, dof))
