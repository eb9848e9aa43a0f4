"""Label noise on real probabilities: CIFAR-10 test set, ResNet-20, labels flipped at known rates.

Usage::

    python bench/label_noise_real.py --json bench/results/label_noise_real.json

Probabilities: ``resnet-cifar10-akamaster/probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy`` (ResNet-20 on
the JPEG copy of the test set, 81 % top-1), canonical test order. Labels: the original CIFAR-10 test labels
(``cifar-label-errors-northcutt2021``), then flipped with a fixed seed

* ``symmetric``: each image with probability ``rate`` to a uniformly chosen other class;
* ``class_conditional``: each cat/dog/automobile/truck image with probability ``rate`` to its partner
  (cat <-> dog, automobile <-> truck); other classes untouched (overall rate = 0.4 x ``rate``).

"True" noise = the flipped images (the original labels' own ~0.5 % errors are not counted). For ours and
for cleanlab 2.9 on the same probabilities: the estimated noise rate ``1 - trace(joint)`` (cleanlab:
``count.estimate_joint``), the fraction flagged, and the precision and recall of the flags against the
flipped images (cleanlab: ``filter.find_label_issues`` default settings).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PROBABILITIES = DATA / "resnet-cifar10-akamaster" / "probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy"
LABELS = DATA / "cifar-label-errors-northcutt2021" / "cifar10_test_set_original_labels.npy"
RATES = (0.05, 0.10, 0.20, 0.40)
#: Also run on the paper's cross-validated probabilities (93 % agreement with the labels) for context:
#: how much of the over-estimate with ResNet-20 on JPEGs is the model's own error.
CROSS_VALIDATED = DATA / "cifar-label-errors-northcutt2021" / "cifar10_test_set_pyx.npy"
PAIRS = {3: 5, 5: 3, 1: 9, 9: 1}  # cat <-> dog, automobile <-> truck
SEED = 2021


def flip(labels: np.ndarray, kind: str, rate: float, *, seed: int = SEED) -> np.ndarray:
    """Flipped copy of ``labels`` (see the module docstring)."""
    rng = np.random.default_rng([seed, int(round(rate * 1000)), 0 if kind == "symmetric" else 1])
    flipped = labels.copy()
    draw = rng.random(labels.size) < rate
    if kind == "symmetric":
        flipped[draw] = (labels[draw] + rng.integers(1, 10, int(draw.sum()))) % 10
    else:
        for source, target in PAIRS.items():
            flipped[draw & (labels == source)] = target
    return flipped


def precision_recall(flags: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    precision = float(wrong[flags].mean()) if flags.any() else 0.0
    recall = float(flags[wrong].mean()) if wrong.any() else 1.0
    return precision, recall


def run(probabilities_path: Path = PROBABILITIES, labels_path: Path = LABELS) -> list[dict]:
    """One row per (kind, rate): ours vs cleanlab on the same probabilities."""
    sys.path.insert(0, str(ROOT))
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues

    from audit.analysis.label_noise import estimate_label_noise

    probabilities = np.load(probabilities_path, allow_pickle=False)
    original = np.load(labels_path, allow_pickle=False).astype(np.int64)
    rows = []
    for kind in ("symmetric", "class_conditional"):
        for rate in ((0.0,) if kind == "symmetric" else ()) + RATES:
            labels = flip(original, kind, rate)
            wrong = labels != original
            ours = estimate_label_noise(labels, probabilities, n_classes=10)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference_flags = find_label_issues(labels, probabilities, n_jobs=1)
                reference_rate = float(1.0 - np.trace(estimate_joint(labels, probabilities)))
            ours_precision, ours_recall = precision_recall(ours.is_label_issue, wrong)
            ref_precision, ref_recall = precision_recall(reference_flags, wrong)
            union = (ours.is_label_issue | reference_flags).sum()
            rows.append({
                "probabilities": probabilities_path.name, "kind": kind, "rate": rate, "n": int(labels.size), "true_noise_rate": float(wrong.mean()),
                "ours_estimated_noise_rate": ours.noise_rate, "cleanlab_estimated_noise_rate": reference_rate,
                "ours_flagged_fraction": float(ours.is_label_issue.mean()),
                "cleanlab_flagged_fraction": float(reference_flags.mean()),
                "ours_precision": ours_precision, "cleanlab_precision": ref_precision,
                "ours_recall": ours_recall, "cleanlab_recall": ref_recall,
                "jaccard": float((ours.is_label_issue & reference_flags).sum() / union) if union else 1.0,
            })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the table")
    args = parser.parse_args(argv)
    if not PROBABILITIES.exists() or not LABELS.exists():
        print(f"data not found under {DATA}", file=sys.stderr)
        return 2
    rows = run()
    if CROSS_VALIDATED.exists():
        rows += run(CROSS_VALIDATED)
    header = ("probabilities", "kind", "rate", "true", "est ours", "est cl", "prec ours", "prec cl", "rec ours", "rec cl", "jacc")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join([row["probabilities"][:18], row["kind"], f"{row['rate']:.2f}", f"{row['true_noise_rate']:.3f}",
                          f"{row['ours_estimated_noise_rate']:.3f}", f"{row['cleanlab_estimated_noise_rate']:.3f}",
                          f"{row['ours_precision']:.3f}", f"{row['cleanlab_precision']:.3f}",
                          f"{row['ours_recall']:.3f}", f"{row['cleanlab_recall']:.3f}", f"{row['jaccard']:.3f}"]))
    output = {"probabilities": [str(PROBABILITIES.relative_to(DATA)), str(CROSS_VALIDATED.relative_to(DATA))],
              "labels": str(LABELS.relative_to(DATA)),
              "seed": SEED, "cases": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
