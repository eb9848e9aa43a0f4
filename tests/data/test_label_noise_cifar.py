"""Real data: CIFAR-10 test set, ResNet-20 probabilities, labels flipped at known rates.

Skipped when ../shared/data is absent. Ours and cleanlab (the reference) run on the same probabilities;
the flags must match, so every figure may differ from the reference's by at most 0.01.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from audit.analysis.label_noise import estimate_label_noise
from audit.io.arrays import npy_chunk_source

# tests/data/ sits one level below tests/, hence parents[2] (the repository) -> ../shared/data.
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PROBABILITIES = DATA / "resnet-cifar10-akamaster" / "probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy"
LABELS = DATA / "cifar-label-errors-northcutt2021" / "cifar10_test_set_original_labels.npy"

pytestmark = pytest.mark.skipif(not (PROBABILITIES.exists() and LABELS.exists()),
                                reason="../shared/data (CIFAR-10 ResNet-20 probabilities) not available")

PAIRS = {3: 5, 5: 3, 1: 9, 9: 1}  # cat <-> dog, automobile <-> truck


def flip(labels, kind, rate, seed=2021):
    rng = np.random.default_rng([seed, int(round(rate * 1000)), 0 if kind == "symmetric" else 1])
    flipped = labels.copy()
    draw = rng.random(labels.size) < rate
    if kind == "symmetric":
        flipped[draw] = (labels[draw] + rng.integers(1, 10, int(draw.sum()))) % 10
    else:
        for source, target in PAIRS.items():
            flipped[draw & (labels == source)] = target
    return flipped


@pytest.fixture(scope="module")
def data():
    probabilities = np.load(PROBABILITIES, allow_pickle=False)
    labels = np.load(LABELS, allow_pickle=False).astype(np.int64)
    return probabilities, labels


@pytest.mark.parametrize("kind", ["symmetric", "class_conditional"])
@pytest.mark.parametrize("rate", [0.05, 0.10, 0.20, 0.40])
def test_at_least_as_good_as_cleanlab(data, kind, rate):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    cleanlab_count = pytest.importorskip("cleanlab.count")
    probabilities, original = data
    labels = flip(original, kind, rate)
    wrong = labels != original
    ours = estimate_label_noise(labels, npy_chunk_source(PROBABILITIES, chunk_rows=1536), n_classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = cleanlab_filter.find_label_issues(labels, probabilities, n_jobs=1)
        reference_rate = 1.0 - np.trace(cleanlab_count.estimate_joint(labels, probabilities))
    flags = ours.is_label_issue
    assert abs(ours.noise_rate - wrong.mean()) <= abs(reference_rate - wrong.mean()) + 0.01
    assert wrong[flags].mean() >= wrong[reference].mean() - 0.01  # precision
    assert flags[wrong].mean() >= reference[wrong].mean() - 0.01  # recall
    assert (flags & reference).sum() / (flags | reference).sum() >= 0.99
    # The estimate follows the injected noise (ResNet-20 on JPEGs is 81 % accurate, so its own errors add
    # a floor of about 12 points).
    assert wrong.mean() <= ours.noise_rate <= wrong.mean() + 0.15


def test_estimate_increases_with_injected_noise(data):
    probabilities, original = data
    rates = [estimate_label_noise(flip(original, "symmetric", r), probabilities, n_classes=10).noise_rate
             for r in (0.05, 0.10, 0.20, 0.40)]
    assert rates == sorted(rates)
    # Cat and dog carry the class-conditional noise.
    result = estimate_label_noise(flip(original, "class_conditional", 0.4), probabilities, n_classes=10)
    per_class = [row.noise_rate for row in result.per_class]
    assert min(per_class[3], per_class[5]) > max(per_class[c] for c in (0, 2, 4, 6, 7, 8))
