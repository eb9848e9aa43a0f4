"""Real data: CIFAR-10N (three human labels per CIFAR-10 training image, worker ids, clean labels).

Skips without ../shared/data/cifar-n. The same measurements, with more plantings, are in
``bench/annotations.py`` (bench/results/annotations.json).
"""
import numpy as np
import pytest

from bench.annotations import CLASSES, DATA, coded, evaluate, load_cifar10n, plant
from audit.analysis.annotations import compute_vote_counts, estimate_majority_vote

pytestmark = pytest.mark.skipif(not (DATA / "CIFAR-10_human.npz").is_file(),
                                reason="../shared/data/cifar-n (CIFAR-10N) is absent")


@pytest.fixture(scope="module")
def cifar10n():
    return load_cifar10n()


def test_consensus_intervals_and_verdicts_on_cifar10n(cifar10n, tmp_path):
    frame, clean = cifar10n
    annotations, _ = coded(frame, tmp_path, "cifar10n", len(clean))
    assert len(annotations.item) == 150_000
    votes = compute_vote_counts(annotations.item, annotations.label, n_items=len(clean), n_classes=len(CLASSES))
    majority, _ = estimate_majority_vote(votes, seed=0)
    majority_error = float(np.mean(majority != clean))
    assert abs(majority_error - 0.088) < 0.002  # the 8.8 % (ties at random)
    result = evaluate(annotations, clean, planted=[], seed=0)
    assert result["consensus_method"] == "dawid_skene"
    assert result["consensus_error_used_method"] <= majority_error - 0.005
    assert result["n_workers_min_labels"] == 478  # the issue counts 479 with at least 50 labels, incl. id 0
    assert result["interval_coverage"] >= 0.9
    assert result["false_alarm_rate"] <= 0.02
    assert result["annotators_indistinguishable"] is True


def test_planted_random_annotators_are_found(cifar10n, tmp_path):
    frame, clean = cifar10n
    planted_frame, names = plant(frame, seed=7, n_images=len(clean))
    annotations, _ = coded(planted_frame, tmp_path, "planted", len(clean))
    result = evaluate(annotations, clean, planted=names, seed=7)
    assert result["planted_found"] == 5
    assert result["false_alarm_rate"] <= 0.02
    assert all(accuracy < 0.3 for accuracy in result["planted_accuracy"])
