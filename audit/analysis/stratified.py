"""Verified label-error rate from a stratified random review sample (issue 13 item 2). Pure.

Only a person can tell a wrong label from a model error. When people review a *random* sample, their
verdicts estimate the whole data set's label-error rate. The sample is stratified (images the
model-label disagreement screen flagged, images it did not, optionally crossed with policy groups) so
that the few likely errors are over-sampled; each stratum is weighted back by its share of the data.

Three pieces, all pure (counts in, frozen results out):

- :func:`allocation_sequence`: which stratum the 1st, 2nd, ... draw comes from. A prefix of the sequence
  is the allocation for that sample size, so a larger request extends a smaller one (nested samples).
- :func:`estimate_stratified_rate`: the stratified estimate with an interval that keeps its nominal
  coverage at review budgets of 50-400 and rates of 0.5-20 % (checked by simulation in
  ``tests/test_review_estimator.py``).
- :func:`reviews_needed`: how many more reviews make the interval decide a threshold, or halve its width.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

#: Guessed error rate of each kind of stratum before any review, used only to allocate the sample (Neyman:
#: n_h proportional to N_h * sqrt(p_h (1 - p_h))). Flagged images are guessed at 50 % (the most uncertain
#: value: the screen mixes model errors and label errors), unflagged at 5 %. Wrong guesses cost
#: efficiency, never validity: the estimate weights every stratum by its true size.
GUESS_FLAGGED = 0.5
GUESS_NOT_FLAGGED = 0.05
#: Draws given to every stratum (round robin) before the Neyman-like allocation takes over, so that every
#: stratum is reviewed early and has a variance estimate.
MIN_PER_STRATUM = 5
CONFIDENCE = 0.95
METHOD = ("stratified estimate (each stratum's reviewed error share weighted by the stratum's share of the data); "
          "Korn-Graubard interval: Clopper-Pearson at the effective sample size, stratum variances from "
          "Jeffreys-smoothed rates with finite-population correction")

ERROR_SHAPES = "errors, reviewed and population must have the same length (one entry per stratum); got {shapes}"
ERROR_COUNTS = ("stratum {stratum}: need 0 <= errors <= reviewed <= population; got errors={errors}, "
                "reviewed={reviewed}, population={population}")


def allocation_sequence(population, guesses, n: int, *, min_per_stratum: int = MIN_PER_STRATUM) -> np.ndarray:
    """Stratum index of each of the first ``n`` draws (house-monotone Neyman-like allocation).

    Parameters
    ----------
    population : array of int
        N_h, images in each stratum.
    guesses : array of float
        Guessed error rate of each stratum (allocation only; see :data:`GUESS_FLAGGED`).
    n : int
        Sample size; capped at ``sum(population)``.
    min_per_stratum : int
        Draws given round robin to every stratum first (capped at its size).

    Returns
    -------
    ndarray of int, length ``min(n, sum(population))``
        Entry k is the stratum of draw k + 1. The allocation for any size m <= n is the count of each stratum
        in the first m entries; the sequence for a larger ``n`` starts with this one.

    Notes
    -----
    After the minimum, each draw goes to the stratum whose next unit lowers the variance of the
    stratified estimate most: ``W_h^2 S_h^2 / (n_h (n_h + 1))`` with ``W_h = N_h / N`` and
    ``S_h^2 = g_h (1 - g_h)`` (a divisor method; its allocations approach Neyman's ``n_h ∝ N_h S_h`` and,
    unlike rounding Neyman's shares, never take a unit back when ``n`` grows).
    """
    population = np.asarray(population, dtype=np.int64)
    guesses = np.clip(np.asarray(guesses, dtype=float), 1e-3, 0.5)
    total = int(population.sum())
    n = max(0, min(int(n), total))
    counts = np.zeros(population.size, dtype=np.int64)
    sequence: list[int] = []
    floor = np.minimum(population, max(0, int(min_per_stratum)))
    while len(sequence) < n and (counts < floor).any():
        for stratum in range(population.size):
            if len(sequence) < n and counts[stratum] < floor[stratum]:
                counts[stratum] += 1
                sequence.append(stratum)
    weights = (population / max(total, 1)) ** 2 * guesses * (1 - guesses)
    while len(sequence) < n:
        with np.errstate(divide="ignore"):
            gain = np.where(counts < population, weights / np.maximum(counts * (counts + 1), 1), -1.0)
        gain = np.where((counts == 0) & (counts < population), np.inf, gain)
        stratum = int(np.argmax(gain))
        counts[stratum] += 1
        sequence.append(stratum)
    return np.asarray(sequence, dtype=np.int64)


@dataclass(frozen=True)
class StratifiedRate:
    """A rate estimated from a stratified random sample.

    Attributes
    ----------
    estimate : float or None
        ``sum_h W_h x_h / n_h`` with ``W_h = N_h / N``: each stratum's reviewed error share weighted by the
        stratum's share of the data. None when a non-empty stratum has no review yet (its rate is unknown).
    ci_low, ci_high : float or None
        Korn-Graubard interval (see :func:`estimate_stratified_rate`); None with ``estimate``.
    confidence : float
    reviewed : int
        Reviews the estimate rests on (sum of n_h).
    errors : int
        Of them, confirmed label errors (sum of x_h).
    effective_sample_size : float or None
        ``p (1 - p) / var`` (smoothed rates): the size of a simple random sample as precise as this one.
    strata_without_reviews : tuple of int
        Indices of non-empty strata that have no review yet.
    method : str
    """

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    reviewed: int
    errors: int
    effective_sample_size: float | None
    strata_without_reviews: tuple
    method: str = METHOD

    def to_dict(self) -> dict:
        out = asdict(self)
        out["strata_without_reviews"] = list(self.strata_without_reviews)
        return out


def _check(errors, reviewed, population):
    errors = np.asarray(errors, dtype=float).reshape(-1)
    reviewed = np.asarray(reviewed, dtype=float).reshape(-1)
    population = np.asarray(population, dtype=float).reshape(-1)
    if not (errors.size == reviewed.size == population.size):
        raise ValueError(ERROR_SHAPES.format(shapes=(errors.size, reviewed.size, population.size)))
    bad = np.flatnonzero((errors < 0) | (errors > reviewed) | (reviewed > population))
    if bad.size:
        h = int(bad[0])
        raise ValueError(ERROR_COUNTS.format(stratum=h, errors=errors[h], reviewed=reviewed[h], population=population[h]))
    return errors, reviewed, population


def stratified_interval(errors, reviewed, population, *, confidence_level: float = CONFIDENCE):
    """Vectorised core of :func:`estimate_stratified_rate`.

    Parameters
    ----------
    errors, reviewed : array (..., H)
        x_h and n_h; leading axes are independent estimates (the simulation tests pass thousands at once).
        Every stratum with ``population > 0`` must have ``reviewed > 0``.
    population : array (H,) or (..., H)
        N_h (strata with N_h = 0 are ignored).

    Returns
    -------
    estimate, low, high, effective_n : arrays (...)

    Notes
    -----
    Korn & Graubard (1998, Survey Methodology 24:193-201): with the stratified estimate ``p`` and its
    design variance ``v``, the effective sample size is ``n* = p~ (1 - p~) / v`` and the interval is the
    Clopper-Pearson interval of ``x* = n* p`` successes in ``n*`` trials (Beta quantiles, real-valued
    counts). Here ``v = sum_h W_h^2 p~_h (1 - p~_h) (1 - n_h / N_h) / n_h`` uses Jeffreys-smoothed stratum
    rates ``p~_h = (x_h + 1/2) / (n_h + 1)`` (and ``p~ = sum_h W_h p~_h``), so a stratum with no error yet
    still carries its uncertainty (with raw rates a sample without errors would claim a zero-width
    interval). Wald intervals are far below nominal at these sizes and are not used.
    """
    x = np.asarray(errors, dtype=float)
    n = np.asarray(reviewed, dtype=float)
    N = np.broadcast_to(np.asarray(population, dtype=float), x.shape)
    alpha = 1.0 - confidence_level
    total = N.sum(axis=-1)
    W = N / np.where(total > 0, total, 1.0)[..., None]
    live = N > 0
    safe_n = np.where(n > 0, n, 1.0)
    share = np.where(live, x / safe_n, 0.0)
    estimate = (W * share).sum(axis=-1)
    smoothed = np.where(live, (x + 0.5) / (n + 1.0), 0.0)
    fpc = np.where(live, np.clip(1.0 - n / np.where(live, N, 1.0), 0.0, 1.0), 0.0)
    variance = (W ** 2 * smoothed * (1 - smoothed) * fpc / safe_n).sum(axis=-1)
    p_smooth = (W * smoothed).sum(axis=-1)
    n_reviewed = n.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        effective = np.where(variance > 0, p_smooth * (1 - p_smooth) / np.where(variance > 0, variance, 1.0), np.inf)
    # a census (every image reviewed) has no sampling error
    census = variance <= 0
    effective = np.where(census, np.maximum(n_reviewed, 1.0), effective)
    successes = effective * estimate
    with np.errstate(invalid="ignore"):
        low = np.where(successes > 0, stats.beta.ppf(alpha / 2, np.maximum(successes, 1e-12),
                                                     np.maximum(effective - successes + 1, 1e-12)), 0.0)
        high = np.where(successes < effective, stats.beta.ppf(1 - alpha / 2, successes + 1,
                                                              np.maximum(effective - successes, 1e-12)), 1.0)
    low = np.where(census, estimate, np.minimum(low, estimate))
    high = np.where(census, estimate, np.maximum(high, estimate))
    return estimate, np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0), effective


def estimate_stratified_rate(errors, reviewed, population, *, confidence_level: float = CONFIDENCE,
                             known_errors: int = 0) -> StratifiedRate:
    """Stratified estimate of an error rate with a Korn-Graubard interval (see :func:`stratified_interval`).

    Parameters
    ----------
    errors : array of int
        x_h: reviewed images of stratum h whose label was confirmed wrong.
    reviewed : array of int
        n_h: images of stratum h in the random sample with a definite decision (wrong or correct).
    population : array of int
        N_h: images in stratum h.
    confidence_level : float
    known_errors : int
        Confirmed errors anywhere in the data (random sample or not): the rate is at least
        ``known_errors / N``, so the interval is raised to that floor (reviews outside the random sample
        never enter the estimate itself).

    Returns
    -------
    StratifiedRate
    """
    x, n, N = _check(errors, reviewed, population)
    missing = tuple(int(h) for h in np.flatnonzero((N > 0) & (n == 0)))
    reviewed_total, errors_total = int(n.sum()), int(x.sum())
    if missing or N.sum() <= 0:
        return StratifiedRate(None, None, None, confidence_level, reviewed_total, errors_total, None, missing)
    estimate, low, high, effective = (float(v) for v in stratified_interval(x, n, N,
                                                                            confidence_level=confidence_level))
    floor = min(1.0, max(0, int(known_errors)) / float(N.sum()))
    low, high = max(low, floor), max(high, floor)
    return StratifiedRate(estimate, low, high, confidence_level, reviewed_total, errors_total,
                          None if not np.isfinite(effective) else effective, missing)


def domain_counts(stratum, in_domain, is_error, population_by_stratum):
    """Post-stratified counts of a domain (a group or a class) for :func:`estimate_stratified_rate`.

    Parameters
    ----------
    stratum : array of int
        Stratum of each *reviewed* sample image.
    in_domain : array of bool
        Whether each reviewed image belongs to the domain.
    is_error : array of bool
        Whether each reviewed image's label was confirmed wrong.
    population_by_stratum : dict or array
        Number of images of the *domain* in each stratum (known from ``images.parquet``).

    Returns
    -------
    errors, reviewed, population : arrays over the domain's strata (cells stratum x domain)

    Notes
    -----
    Each cell (stratum x domain) is a post-stratum whose size is known; within a stratum the reviewed images
    of the domain are a simple random sample of the cell, so the same estimator applies cell by cell.
    """
    stratum = np.asarray(stratum, dtype=np.int64)
    in_domain = np.asarray(in_domain, dtype=bool)
    is_error = np.asarray(is_error, dtype=bool)
    population = np.asarray(population_by_stratum, dtype=np.int64)
    H = population.size
    reviewed = np.bincount(stratum[in_domain], minlength=H)[:H]
    errors = np.bincount(stratum[in_domain & is_error], minlength=H)[:H]
    return errors, reviewed, population


def reviews_needed(estimate: float | None, ci_low: float | None, ci_high: float | None, reviewed: int, *,
                   threshold: float | None = None, confidence_level: float = CONFIDENCE) -> int:
    """About how many *more* reviews (of the same random sample, in its order) a decision needs.

    Without a threshold: reviews that would halve the interval's width (width ~ 1 / sqrt(n), so about three
    times the reviews made). With a threshold: reviews that would shrink the interval's half-width to the
    distance between the estimate and the threshold, if the estimate stayed where it is. Before any review
    (``estimate`` None): the size of a simple random sample whose interval would exclude ``threshold`` if
    the true rate were half of it (one-sided, normal approximation), or 100 without a threshold.
    """
    z = float(stats.norm.ppf(0.5 + confidence_level / 2))
    if estimate is None or ci_low is None or ci_high is None or reviewed <= 0:
        if threshold is None or threshold <= 0:
            return 100
        half = threshold / 2.0
        return int(np.ceil(z * z * half * (1 - half) / (threshold - half) ** 2))
    if threshold is None:
        return int(3 * reviewed)
    half_width = max((ci_high - ci_low) / 2.0, 1e-12)
    gap = max(abs(estimate - threshold), 1e-3)  # an estimate on the threshold: as if 0.1 points away
    needed = reviewed * (half_width / gap) ** 2
    return max(0, int(np.ceil(needed - reviewed - 1e-9)))
