"""Label screening against human votes: CIFAR-10 test JPEGs, ResNet-20, CIFAR-10H (issue 13, item 3).

Usage::

    python bench/label_errors_cifar10h.py --json bench/results/label_errors_cifar10h.json

Data (``../shared/data``): the 10,000 CIFAR-10 test JPEGs (``cifar10-test-jpeg``, ``index.csv`` gives each
file's canonical index), the ResNet-20 checkpoint (``resnet-cifar10-akamaster``; 81 % top-1 on these JPEGs)
and CIFAR-10H (``cifar-10h/cifar10h-counts.npy``: about 51 human votes per image, canonical order).

The model's probabilities and 64-d embeddings come from the audit's own inference (``audit.model.inference``;
cached in ``bench/.cache``). For each screening source the audit can use (``audit.analysis.screening``:
``model``, ``probe``, ``combined``, and ``auto``, the default, which picks one of them by a fixed rule) the
script runs the audit's own code: the probe as the label-noise step fits it, the source choice, then
confident learning (``estimate_label_noise``). Against CIFAR-10H it measures

* ``top100_precision``: of the 100 most suspect images (flagged, lowest label score first, as the app and the
  report list them), the fraction whose CIFAR-10H majority differs from the given label (the reference: the
  majority differs on 79 of 10,000 images, 0.79 %, so a random pick scores about 0.0079);
* ``top100_soft_precision``: the mean share of human votes against the given label among those 100;
* per-class correlation (Spearman and Pearson, over the 10 classes) of the class's label disagreement rate
  with the class's human disagreement, two ways: ``majority`` (share of the class's images whose human
  majority differs from the label; only 79 such images in all, so noisy) and ``soft`` (mean share of votes
  against the label);
* the overall disagreement rate, the source's error rate on the same images, and the flagged count.

"Before" is ``model`` (what the audit used until issue 13), "after" is ``auto``. Nothing here is tuned to
CIFAR: the sources and the ``auto`` rule are fixed in ``audit/analysis/screening.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
IMAGES = DATA / "cifar10-test-jpeg"
WEIGHTS = DATA / "resnet-cifar10-akamaster" / "resnet20-12fca82f.th"
SHIPPED_PROBABILITIES = DATA / "resnet-cifar10-akamaster" / "probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy"
HUMANS = DATA / "cifar-10h" / "cifar10h-counts.npy"
CACHE = ROOT / "bench" / ".cache"
TOP = 100
SEED = 0
SOURCES = ("model", "probe", "combined", "auto")


def model_outputs() -> tuple[np.ndarray, np.ndarray, float | None]:
    """ResNet-20 probabilities and embeddings on the 10,000 JPEGs in canonical order (cached), and the
    inference seconds (None when read from the cache)."""
    import pandas as pd
    from PIL import Image

    from audit.model.inference import iter_predictions, load_model

    CACHE.mkdir(parents=True, exist_ok=True)
    probs_file, emb_file = CACHE / "cifar10h_resnet20_probabilities.npy", CACHE / "cifar10h_resnet20_embeddings.npy"
    if probs_file.is_file() and emb_file.is_file():
        return np.load(probs_file), np.load(emb_file), None
    start = time.perf_counter()
    index = pd.read_csv(IMAGES / "index.csv").sort_values("original_index")
    images = []
    for name in index["file"]:
        with Image.open(IMAGES / name) as image:
            images.append(np.asarray(image.convert("RGB")))
    model = load_model(WEIGHTS, arch="cifar_resnet20")
    chunks = [(np.arange(s, min(s + 2500, len(images))), images[s:s + 2500]) for s in range(0, len(images), 2500)]
    out = list(iter_predictions(chunks, model, batch_size=500))
    probabilities = np.concatenate([o[1] for o in out]).astype(np.float32)
    embeddings = np.concatenate([o[2] for o in out]).astype(np.float32)
    np.save(probs_file, probabilities)
    np.save(emb_file, embeddings)
    return probabilities, embeddings, time.perf_counter() - start


def correlations(x: np.ndarray, y: np.ndarray) -> dict:
    from scipy.stats import pearsonr, spearmanr

    return {"spearman": float(spearmanr(x, y).statistic), "pearson": float(pearsonr(x, y).statistic)}


def evaluate(labels, probabilities, humans, *, n_classes: int, score_method: str = "self_confidence") -> dict:
    """Confident learning on ``probabilities`` (the audit's engine) scored against the human votes."""
    from audit.analysis.label_noise import estimate_label_noise

    result = estimate_label_noise(labels, probabilities, n_classes=n_classes, score_method=score_method)
    votes = humans.sum(axis=1)
    against = 1.0 - humans[np.arange(labels.size), labels] / votes  # share of votes against the given label
    majority_differs = humans.argmax(axis=1) != labels
    top = np.asarray(result.ranking[:TOP], dtype=np.int64)
    per_class = np.array([result.is_label_issue[labels == c].mean() for c in range(n_classes)])
    human_majority = np.array([majority_differs[labels == c].mean() for c in range(n_classes)])
    human_soft = np.array([against[labels == c].mean() for c in range(n_classes)])
    return {
        "n_flagged": int(result.n_label_issues),
        "label_disagreement_rate": float(result.label_disagreement_rate),
        "error_rate_of_source": float(result.model_error_rate),
        "n_top": int(top.size),
        "top100_precision": float(majority_differs[top].mean()) if top.size else None,
        "top100_soft_precision": float(against[top].mean()) if top.size else None,
        "flagged_precision": float(majority_differs[result.is_label_issue].mean()) if result.n_label_issues else None,
        "flagged_recall": float(result.is_label_issue[majority_differs].mean()),
        "per_class_vs_human_majority": correlations(per_class, human_majority),
        "per_class_vs_human_soft": correlations(per_class, human_soft),
        "per_class_disagreement_rate": [round(float(v), 5) for v in per_class],
    }


def run() -> dict:
    import pandas as pd

    from audit.analysis.screening import choose_screening_probabilities, compute_probe_probabilities
    from audit.model.architectures import CIFAR10_CLASSES

    index = pd.read_csv(IMAGES / "index.csv").sort_values("original_index")
    labels = index["class"].map({name: i for i, name in enumerate(CIFAR10_CLASSES)}).to_numpy(dtype=np.int64)
    humans = np.load(HUMANS, allow_pickle=False).astype(np.float64)
    probabilities, embeddings, inference_s = model_outputs()
    shipped = np.load(SHIPPED_PROBABILITIES, allow_pickle=False)
    max_difference = float(np.abs(probabilities - shipped).max())
    start = time.perf_counter()
    probe = compute_probe_probabilities(embeddings, labels, n_classes=10, seed=SEED)
    probe_s = time.perf_counter() - start
    majority_differs = humans.argmax(axis=1) != labels
    cases = []
    for source in SOURCES:
        start = time.perf_counter()
        choice = choose_screening_probabilities(probabilities, labels, source=source, probe_probabilities=probe)
        figures = evaluate(labels, choice.probabilities, humans, n_classes=10)
        cases.append({"name": f"source={source}", "label_score": "self_confidence", "source_requested": source,
                      "source_used": choice.source,
                      "reason": choice.reason, "n_images": int(labels.size), "n_classes": 10,
                      "accuracy_vs_given_labels": choice.candidates[choice.source]["accuracy"],
                      "log_loss_vs_given_labels": choice.candidates[choice.source]["log_loss"],
                      **figures, "ours_s": round(time.perf_counter() - start + (probe_s if source != "model" else 0), 3)})
    # Diagnostic only (the audit's default ranking is self_confidence; nothing is chosen from this): the same
    # flagged sets ranked by `--label-score normalized_margin`.
    for source in ("model", "auto"):
        choice = choose_screening_probabilities(probabilities, labels, source=source, probe_probabilities=probe)
        figures = evaluate(labels, choice.probabilities, humans, n_classes=10, score_method="normalized_margin")
        cases.append({"name": f"source={source},label_score=normalized_margin", "source_requested": source,
                      "source_used": choice.source, "reason": choice.reason, "label_score": "normalized_margin",
                      "n_images": int(labels.size), "n_classes": 10, **figures})
    before = next(c for c in cases if c["source_requested"] == "model")
    after = next(c for c in cases if c["source_requested"] == "auto")
    return {
        "reference": {"human_majority_differs": int(majority_differs.sum()),
                      "human_majority_differs_rate": float(majority_differs.mean()),
                      "random_top100_precision": float(majority_differs.mean()),
                      "model_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
                      "probabilities_vs_shipped_max_abs_difference": max_difference,
                      "inference_s": None if inference_s is None else round(inference_s, 2),
                      "inference_from_cache": inference_s is None, "probe_s": round(probe_s, 2)},
        "summary": {key: {"before": before[key], "after": after[key]}
                    for key in ("source_used", "top100_precision", "top100_soft_precision", "label_disagreement_rate",
                                "error_rate_of_source", "n_flagged")}
                   | {"per_class_spearman_majority": {"before": before["per_class_vs_human_majority"]["spearman"],
                                                      "after": after["per_class_vs_human_majority"]["spearman"]},
                      "per_class_spearman_soft": {"before": before["per_class_vs_human_soft"]["spearman"],
                                                  "after": after["per_class_vs_human_soft"]["spearman"]},
                      "per_class_pearson_majority": {"before": before["per_class_vs_human_majority"]["pearson"],
                                                     "after": after["per_class_vs_human_majority"]["pearson"]},
                      "per_class_pearson_soft": {"before": before["per_class_vs_human_soft"]["pearson"],
                                                 "after": after["per_class_vs_human_soft"]["pearson"]},
                      "flagged_precision": {"before": before["flagged_precision"], "after": after["flagged_precision"]},
                      "flagged_recall": {"before": before["flagged_recall"], "after": after["flagged_recall"]}},
        "cases": cases,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    args = parser.parse_args(argv)
    missing = [p for p in (IMAGES / "index.csv", WEIGHTS, HUMANS, SHIPPED_PROBABILITIES) if not p.exists()]
    if missing:
        print(f"data not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    from _machine import machine_info

    results = run()
    for case in results["cases"]:
        print(f"{case['name']:<45} used {case['source_used']:<8} flagged {case['n_flagged']:>5} "
              f"disagreement {case['label_disagreement_rate']:.3f} error {case['error_rate_of_source']:.3f} "
              f"top100 {case['top100_precision']:.2f} soft {case['top100_soft_precision']:.2f} "
              f"spearman maj {case['per_class_vs_human_majority']['spearman']:.2f} "
              f"soft {case['per_class_vs_human_soft']['spearman']:.2f}")
    output = {"machine": machine_info("numpy", "sklearn", "torch"),
              "command": "python bench/label_errors_cifar10h.py --json " + str(args.json),
              "data": {"images": str(IMAGES.relative_to(DATA)), "model": str(WEIGHTS.relative_to(DATA)),
                       "humans": str(HUMANS.relative_to(DATA))},
              "seed": SEED, **results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
