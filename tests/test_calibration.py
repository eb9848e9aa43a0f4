import numpy as np
import pandas as pd
import pytest

from audit.analysis.calibration import ERROR_LENGTHS, compute_reliability_by_group
from audit.analysis.group_performance import compute_group_performance
from audit.errors import InputError


def _data(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    group = rng.choice(["calibrated", "overconfident"], n)
    confidence = rng.uniform(0.34, 1.0, n)
    # calibrated: right with probability = confidence; over-confident: 20 points less often right
    p_right = np.where(group == "calibrated", confidence, np.clip(confidence - 0.2, 0, 1))
    right = rng.random(n) < p_right
    predictions = np.where(right, labels, (labels + 1) % 3)
    probabilities = np.full((n, 3), 0.0)
    probabilities[np.arange(n), predictions] = confidence
    for other in (1, 2):
        probabilities[np.arange(n), (predictions + other) % 3] = (1 - confidence) / 2
    return labels, predictions, probabilities, pd.DataFrame({"g": group})


def test_curves_reproduce_the_group_calibration_error():
    labels, predictions, probabilities, groups = _data()
    confidence = probabilities.max(axis=1)
    result = compute_reliability_by_group(labels == predictions, confidence, groups=groups)
    performance = compute_group_performance(labels, predictions, classes=("a", "b", "c"), groups=groups,
                                            probabilities=probabilities, max_depth=1, n_bootstrap=20)
    table = performance.table
    for group, bins in result.attributes["g"].items():
        n = sum(b["n"] for b in bins)
        ece = sum(b["n"] / n * abs(b["accuracy"] - b["mean_confidence"]) for b in bins)
        row = table[(table.metric == "expected_calibration_error") & (table.group == group)].iloc[0]
        assert ece == pytest.approx(row.value, abs=1e-12)
    over = result.attributes["g"]["overconfident"]
    gaps = [b["mean_confidence"] - b["accuracy"] for b in over if b["n"] >= 50]
    assert np.mean(gaps) == pytest.approx(0.2, abs=0.05)


def test_mismatched_lengths_are_named():
    with pytest.raises(InputError) as caught:
        compute_reliability_by_group([True], [0.5, 0.6], groups=pd.DataFrame({"g": ["x"]}))
    assert str(caught.value) == ERROR_LENGTHS.format(n_correct=1, n_confidence=2, n_groups=1)
