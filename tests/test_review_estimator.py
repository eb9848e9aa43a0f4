"""Verified label-error rate (issue 13 item 2): allocation, estimator, and its coverage by simulation.

The coverage test draws stratified samples without replacement from fixed populations (hypergeometric
counts per stratum, exactly what reviewing a random sample gives) and checks that the interval covers the
population's true error rate at least 93 % of the time for review budgets 50-400 and rates 0.5-20 %.
"""
import numpy as np
import pytest

from audit.analysis.stratified import (GUESS_FLAGGED, GUESS_NOT_FLAGGED, allocation_sequence,
                                       estimate_stratified_rate, reviews_needed, stratified_interval)

BUDGETS = (50, 100, 200, 400)
RATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
REPLICATES = 2000


def _allocation(population, guesses, n):
    return np.bincount(allocation_sequence(population, guesses, n), minlength=len(population))


def test_allocation_is_nested_and_neyman_like():
    population = np.array([1250, 8750])
    guesses = np.array([GUESS_FLAGGED, GUESS_NOT_FLAGGED])
    long = allocation_sequence(population, guesses, 400)
    for n in (10, 50, 123, 399):
        assert np.array_equal(allocation_sequence(population, guesses, n), long[:n])
    counts = np.bincount(long, minlength=2)
    neyman = population * np.sqrt(guesses * (1 - guesses))
    assert abs(counts[0] / 400 - neyman[0] / neyman.sum()) < 0.02
    # the minimum comes first, round robin; a tiny stratum is capped at its size
    assert list(allocation_sequence([3, 100, 100], [0.5, 0.05, 0.05], 12)[:11]) == [0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2]
    assert np.bincount(allocation_sequence([3, 100], [0.5, 0.05], 500), minlength=2).tolist() == [3, 100]


def test_census_and_zero_errors():
    exact = estimate_stratified_rate([2, 3], [10, 90], [10, 90])
    assert exact.estimate == pytest.approx(0.05) and exact.ci_low == exact.ci_high == pytest.approx(0.05)
    none = estimate_stratified_rate([0, 0], [25, 75], [1250, 8750])
    assert none.estimate == 0.0 and none.ci_low == 0.0 and 0.0 < none.ci_high < 0.1
    missing = estimate_stratified_rate([0, 0], [0, 10], [1250, 8750])
    assert missing.estimate is None and missing.strata_without_reviews == (0,)


def test_known_errors_raise_the_lower_bound_only():
    plain = estimate_stratified_rate([0, 0], [25, 75], [1250, 8750])
    floored = estimate_stratified_rate([0, 0], [25, 75], [1250, 8750], known_errors=30)
    assert floored.estimate == plain.estimate and floored.ci_low == pytest.approx(0.003)
    assert floored.ci_high == plain.ci_high


def test_weights_follow_stratum_sizes():
    result = estimate_stratified_rate([5, 1], [10, 20], [100, 900])
    assert result.estimate == pytest.approx(0.1 * 0.5 + 0.9 * 0.05)
    assert result.ci_low < result.estimate < result.ci_high


def _coverage(population, errors_by_stratum, budget, rng, guesses):
    allocation = _allocation(population, guesses, budget)
    draws = np.stack([rng.hypergeometric(errors_by_stratum[h], population[h] - errors_by_stratum[h], allocation[h],
                                         size=REPLICATES) if allocation[h] else np.zeros(REPLICATES, int)
                      for h in range(len(population))], axis=1)
    truth = errors_by_stratum.sum() / population.sum()
    _, low, high, _ = stratified_interval(draws, np.broadcast_to(allocation, draws.shape), population)
    return float(np.mean((low <= truth) & (truth <= high)))


def _scenarios():
    """(name, population, error counts per stratum): flagged 12.5 % of 10,000 images; errors spread evenly
    (a useless screen), half in the flagged stratum, or 80 % in it; and six strata (screen x 3 groups)."""
    flagged, total = 1250, 10000
    for rate in RATES:
        errors = rate * total
        for share in (None, 0.5, 0.8):
            population = np.array([flagged, total - flagged])
            if share is None:
                counts = np.round(population * rate).astype(int)
            else:
                in_flagged = min(round(share * errors), flagged)
                counts = np.array([in_flagged, round(errors) - in_flagged])
            yield f"rate={rate} flagged_share={share}", population, counts, [GUESS_FLAGGED, GUESS_NOT_FLAGGED]
        population = np.array([600, 400, 250, 4000, 3000, 1750])
        counts = np.round(population * rate * np.array([3, 3, 3, 0.6, 0.6, 0.6]) / (
            (population * np.array([3, 3, 3, 0.6, 0.6, 0.6])).sum() / total)).astype(int)
        counts = np.minimum(counts, population)
        yield f"rate={rate} six strata", population, counts, [GUESS_FLAGGED] * 3 + [GUESS_NOT_FLAGGED] * 3


def test_interval_coverage_by_simulation():
    rng = np.random.default_rng(20261203)
    worst = []
    for name, population, counts, guesses in _scenarios():
        for budget in BUDGETS:
            coverage = _coverage(population, counts, budget, rng, np.asarray(guesses))
            worst.append((coverage, name, budget))
    worst.sort()
    assert worst[0][0] >= 0.93, worst[:5]


def test_reviews_needed():
    assert reviews_needed(None, None, None, 0, threshold=0.05) == pytest.approx(150, abs=5)
    assert reviews_needed(0.02, 0.01, 0.04, 100) == 300
    assert reviews_needed(0.02, 0.01, 0.04, 100, threshold=0.1) == 0
    assert reviews_needed(0.04, 0.02, 0.07, 100, threshold=0.05) > 100
