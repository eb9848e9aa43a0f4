"""Real data: CIFAR-10 test JPEG labels scored by ResNet-20 and by ResNet-56 (probability files of
../shared/data/resnet-cifar10-akamaster). The paired comparison's overall and per-class differences, and
the exact McNemar p-values, equal a direct computation from the two probability files.

Skipped when ../shared/data is absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.compare.core import compare_audits
from audit.compare.folder import load_pair

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
INDEX = SHARED / "cifar10-test-jpeg" / "index.csv"
MODELS = SHARED / "resnet-cifar10-akamaster"
PROBS = {"resnet20": MODELS / "probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy",
         "resnet56": MODELS / "probs_resnet56-4bfd9763_on_cifar10-test-jpeg.npy"}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
pytestmark = pytest.mark.skipif(not (INDEX.is_file() and all(p.is_file() for p in PROBS.values())),
                                reason="../shared/data CIFAR-10 JPEGs or ResNet probabilities are absent")


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    from audit.cli import main

    root = tmp_path_factory.mktemp("cifar_compare")
    index = pd.read_csv(INDEX).sort_values("original_index")
    labels = root / "labels.csv"
    pd.DataFrame({"id": index["file"], "label": index["class"]}).to_csv(labels, index=False)
    attributes = root / "attributes.csv"
    kind = np.where(index["class"].isin(["airplane", "automobile", "ship", "truck"]), "vehicle", "animal")
    pd.DataFrame({"id": index["file"], "kind": kind}).to_csv(attributes, index=False)
    classes = root / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    folders = {}
    for name, probs in PROBS.items():
        folders[name] = root / name
        assert main(["label-noise", "--labels", str(labels), "--predictions", str(probs), "--classes", str(classes),
                     "--attributes", str(attributes), "--out", str(folders[name])]) == 0
    truth = index["label"].to_numpy()
    correct = {name: np.load(p).argmax(axis=1) == truth for name, p in PROBS.items()}
    return folders, truth, correct, kind


@pytest.fixture(scope="module")
def comparison(audits):
    folders, *_ = audits
    return compare_audits(*load_pair(folders["resnet20"], folders["resnet56"]), n_bootstrap=200).comparison


def _row(comparison, attribute="all", group="all", class_="", metric="accuracy"):
    rows = [r for r in comparison["model"]["rows"] if (r["attribute"], r["group"], r["class"], r["metric"])
            == (attribute, group, class_, metric)]
    assert len(rows) == 1
    return rows[0]


def _direct(old, new):
    b, c = int(np.sum(old & ~new)), int(np.sum(~old & new))
    return new.mean() - old.mean(), stats.binomtest(min(b, c), b + c, 0.5).pvalue


def test_paired_overall_difference_equals_direct_computation(audits, comparison):
    _, _, correct, _ = audits
    assert comparison["model"]["method"] == "paired" and comparison["model"]["n_paired"] == 10_000
    assert comparison["matching"]["method"] == "id" and comparison["matching"]["counts"]["unchanged"] == 10_000
    row = _row(comparison)
    difference, p = _direct(correct["resnet20"], correct["resnet56"])
    assert row["old"] == pytest.approx(correct["resnet20"].mean(), abs=1e-12)
    assert row["new"] == pytest.approx(correct["resnet56"].mean(), abs=1e-12)
    assert row["difference"] == pytest.approx(difference, abs=1e-12)
    assert row["p_value"] == pytest.approx(p, rel=1e-9)
    assert row["ci_low"] < difference < row["ci_high"]
    assert row["verdict"] == "improved"  # ResNet-56 is better on these JPEGs (81.0 % -> 83.2 %)


def test_paired_per_class_differences_equal_direct_computation(audits, comparison):
    _, truth, correct, _ = audits
    for code, name in enumerate(CLASSES):
        mask = truth == code
        row = _row(comparison, class_=name, metric="recall")
        difference, p = _direct(correct["resnet20"][mask], correct["resnet56"][mask])
        assert row["n_new"] == 1000
        assert row["difference"] == pytest.approx(difference, abs=1e-12)
        assert row["p_value"] == pytest.approx(p, rel=1e-9)


def test_paired_group_difference_equals_direct_computation(audits, comparison):
    _, _, correct, kind = audits
    for group in ("animal", "vehicle"):
        mask = kind == group
        row = _row(comparison, attribute="kind", group=group)
        difference, _ = _direct(correct["resnet20"][mask], correct["resnet56"][mask])
        assert row["difference"] == pytest.approx(difference, abs=1e-12) and row["scope"] == "primary"


def _ece(confidence, correct, bins=15):
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = np.bincount(index, weights=correct - confidence, minlength=bins)
    return np.abs(gap).sum() / confidence.size


def test_top_k_accuracy_and_calibration_error_equal_direct_computation(audits):
    """compare_folders reads both probability files: top-5 accuracy (paired McNemar, as accuracy) and the
    15-bin expected calibration error (paired bootstrap) equal a direct computation."""
    from audit.compare.folder import compare_folders

    folders, truth, _, _ = audits
    comparison = compare_folders(folders["resnet20"], folders["resnet56"], n_bootstrap=200).comparison
    probs = {name: np.load(path).astype(np.float32) for name, path in PROBS.items()}
    hits = {name: (p > p[np.arange(truth.size), truth][:, None]).sum(axis=1) < 5 for name, p in probs.items()}
    row = _row(comparison, metric="top_k_accuracy")
    difference, p_value = _direct(hits["resnet20"], hits["resnet56"])
    assert row["old"] == pytest.approx(hits["resnet20"].mean(), abs=1e-12)
    assert row["difference"] == pytest.approx(difference, abs=1e-12)
    assert row["p_value"] == pytest.approx(p_value, rel=1e-9) and row["scope"] == "exploratory"
    ece = {name: _ece(p.max(axis=1).astype(float), (p.argmax(axis=1) == truth).astype(float))
           for name, p in probs.items()}
    row = _row(comparison, metric="expected_calibration_error")
    assert row["old"] == pytest.approx(ece["resnet20"], abs=1e-5)
    assert row["new"] == pytest.approx(ece["resnet56"], abs=1e-5)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["ci_high"] - row["ci_low"] < 0.05
    assert _row(comparison, attribute="kind", group="animal", metric="expected_calibration_error")["n_new"] == 6000
