"""Annotation quality on CIFAR-10N (issue 16): consensus error by method, coverage of the annotator-accuracy
intervals, false alarms and power on planted careless annotators, run time for 150,000 annotations.

    python bench/annotations.py --json bench/results/annotations.json [--seeds 3]

Data: ``../shared/data/cifar-n`` (CIFAR-10N: three human labels for each of the 50,000 CIFAR-10 training
images, worker ids per batch of 10 images, the clean label). Batches without a worker id (id 0) get one
pseudo-annotator per batch and slot (10 labels each, so ``insufficient_data``). The long-form CSV that
``--annotations`` reads is written to a temporary folder and read with the package's reader, so the timing
covers reading too. The bare baseline (majority vote alone) runs in the same invocation.

Planted annotators: for each seed, five extra annotators each take 200 distinct images and replace one of
the three labels there (chosen at random) with a uniformly random class.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audit.analysis.annotations import (Annotations, compute_annotation_audit, compute_vote_counts,  # noqa: E402
                                        estimate_consensus, estimate_majority_vote)
from audit.io.annotations import load_annotations  # noqa: E402
from bench._machine import machine_info  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cifar-n"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
N_PLANTED = 5
PLANTED_IMAGES = 200
MIN_LABELS_COVERAGE = 50


def load_cifar10n(data: Path = DATA) -> tuple[pd.DataFrame, np.ndarray]:
    """Long-form annotations (id, annotator, label, seconds) and the clean labels (class indices)."""
    arrays = np.load(data / "CIFAR-10_human.npz")
    side = pd.read_csv(data / "side_info_cifar10N.csv")
    clean = arrays["clean_label"]
    n = len(clean)
    frames = []
    for slot in range(3):
        worker = np.repeat(side[f"Worker{slot + 1}-id"].to_numpy(), 10)
        seconds = np.repeat(side[f"Work-time-in-seconds-{slot + 1}"].to_numpy() / 10.0, 10)
        batch = np.arange(n) // 10
        annotator = np.where(worker == 0, [f"unknown-{b}-{slot + 1}" for b in batch],
                             [f"w{w}" for w in worker])
        frames.append(pd.DataFrame({"id": np.arange(n).astype(str), "annotator": annotator,
                                    "label": np.array(CLASSES)[arrays[f"random_label{slot + 1}"]],
                                    "seconds": seconds}))
    return pd.concat(frames, ignore_index=True), clean


def plant(frame: pd.DataFrame, *, seed: int, n_images: int) -> tuple[pd.DataFrame, list[str]]:
    """Five random annotators, each replacing one of the three labels on ``PLANTED_IMAGES`` distinct images."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    images = rng.choice(n_images, size=N_PLANTED * PLANTED_IMAGES, replace=False)
    names = [f"planted-{i}" for i in range(N_PLANTED)]
    slots = rng.integers(0, 3, size=len(images))
    rows = slots * n_images + images  # frame is slot-major
    frame.loc[rows, "annotator"] = np.repeat(names, PLANTED_IMAGES)
    frame.loc[rows, "label"] = np.array(CLASSES)[rng.integers(0, len(CLASSES), size=len(images))]
    frame.loc[rows, "seconds"] = np.nan
    return frame, names


def coded(frame: pd.DataFrame, folder: Path, name: str, n_images: int):
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    start = time.perf_counter()
    loaded = load_annotations(str(path), ids=[str(i) for i in range(n_images)], classes=CLASSES)
    return Annotations(**loaded.arrays()), time.perf_counter() - start


def true_accuracy(annotations: Annotations, clean: np.ndarray) -> np.ndarray:
    n = np.bincount(annotations.annotator, minlength=annotations.n_annotators)
    right = np.bincount(annotations.annotator, weights=annotations.label == clean[annotations.item],
                        minlength=annotations.n_annotators)
    return right / np.maximum(n, 1)


def evaluate(annotations: Annotations, clean: np.ndarray, *, planted: list[str], seed: int) -> dict:
    start = time.perf_counter()
    audit = compute_annotation_audit(annotations, classes=CLASSES, seed=seed, compare_methods=False)
    analysis_s = time.perf_counter() - start
    table = audit.annotators
    truth = true_accuracy(annotations, clean)
    real = ~table["annotator"].isin(planted).to_numpy()
    big = real & (table["n"].to_numpy() >= MIN_LABELS_COVERAGE)
    covered = (table["ci_low"].to_numpy() <= truth) & (truth <= table["ci_high"].to_numpy())
    tested_real = real & (table["verdict"] != "insufficient_data").to_numpy()
    flagged_real = real & (table["verdict"] == "worse_than_rest").to_numpy()
    consensus = np.array([CLASSES.index(c) for c in audit.per_image["consensus_label"]])
    planted_rows = table[table["annotator"].isin(planted)]
    return {
        "analysis_s": round(analysis_s, 2),
        "consensus_method": audit.section["method"],
        "consensus_error_used_method": float(np.mean(consensus != clean)),
        "coverage_workers_min_labels": MIN_LABELS_COVERAGE,
        "n_workers_min_labels": int(big.sum()),
        "interval_coverage": float(covered[big].mean()),
        "median_interval_width": float(np.median((table["ci_high"] - table["ci_low"]).to_numpy()[big])),
        "mean_accuracy_error": float(np.mean(table["accuracy"].to_numpy()[big] - truth[big])),
        "real_workers_tested": int(tested_real.sum()),
        "real_workers_flagged": int(flagged_real.sum()),
        "false_alarm_rate": float(flagged_real.sum() / max(tested_real.sum(), 1)),
        "planted_found": int((planted_rows["verdict"] == "worse_than_rest").sum()),
        "planted_accuracy": [round(float(v), 3) for v in planted_rows["accuracy"]],
        "planted_true_accuracy": [round(float(v), 3) for v in truth[table["annotator"].isin(planted).to_numpy()]],
        "krippendorff_alpha": audit.section["krippendorff_alpha"],
        "annotators_indistinguishable": audit.section["annotators_indistinguishable"],
    }


def consensus_errors(annotations: Annotations, clean: np.ndarray, *, seed: int) -> dict:
    out = {}
    votes = compute_vote_counts(annotations.item, annotations.label, n_items=annotations.n_items,
                                n_classes=annotations.n_classes)
    start = time.perf_counter()
    majority, tie = estimate_majority_vote(votes, seed=seed)
    out["majority_vote_s"] = round(time.perf_counter() - start, 3)
    out["majority"] = float(np.mean(majority != clean))
    out["majority_ties"] = float(np.mean(tie))
    for method in ("dawid_skene",):
        start = time.perf_counter()
        result = estimate_consensus(annotations, method=method, seed=seed)
        out[f"{method}_s"] = round(time.perf_counter() - start, 2)
        out[method] = float(np.mean(result.label != clean))
        out[f"{method}_shrinkage"] = result.fit.shrinkage
    plain = estimate_consensus(annotations, method="dawid_skene", seed=seed, shrinkage=1.0)
    out["dawid_skene_weak_prior"] = float(np.mean(plain.label != clean))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--seeds", type=int, default=3, help="plantings to average over (3)")
    args = parser.parse_args(argv)
    if not (DATA / "CIFAR-10_human.npz").is_file():
        print(f"CIFAR-10N not found at {DATA}; nothing to measure", file=sys.stderr)
        return 2
    frame, clean = load_cifar10n()
    n = len(clean)
    cases = []
    with tempfile.TemporaryDirectory() as folder:
        annotations, read_s = coded(frame, Path(folder), "cifar10n", n)
        start = time.perf_counter()
        audit_total = compute_annotation_audit(annotations, classes=CLASSES, seed=0)
        ours_s = time.perf_counter() - start
        errors = consensus_errors(annotations, clean, seed=0)
        case = {"name": "cifar10n", "n_images": n, "n_annotations": int(len(annotations.item)),
                "n_annotators": annotations.n_annotators, "read_s": round(read_s, 2),
                "ours_s": round(ours_s + read_s, 2), "analysis_s": round(ours_s, 2),
                "baseline_majority_vote_s": errors.pop("majority_vote_s"),
                "consensus_error": errors,
                "section": {k: audit_total.section[k] for k in ("method", "n_ties", "krippendorff_alpha",
                                                                 "annotator_verdicts", "annotators_indistinguishable",
                                                                 "annotator_accuracy_spread", "methods",
                                                                 "n_disagreement_issues")}}
        case.update(evaluate(annotations, clean, planted=[], seed=0))
        cases.append(case)
        print(json.dumps(case, indent=1, default=float))
        planted_cases = []
        for seed in range(args.seeds):
            planted_frame, names = plant(frame, seed=seed, n_images=n)
            planted_annotations, _ = coded(planted_frame, Path(folder), f"planted{seed}", n)
            result = {"name": f"cifar10n_planted_seed{seed}", "seed": seed, "n_planted": N_PLANTED,
                      "planted_images_each": PLANTED_IMAGES}
            result.update(evaluate(planted_annotations, clean, planted=names, seed=seed))
            errors = consensus_errors(planted_annotations, clean, seed=seed)
            result["consensus_error_by_method"] = {k: v for k, v in errors.items() if not k.endswith("_s")}
            planted_cases.append(result)
            print(json.dumps(result, indent=1, default=float))
        cases.extend(planted_cases)
    summary = {"name": "summary",
               "consensus_error_majority": cases[0]["consensus_error"]["majority"],
               "consensus_error_dawid_skene": cases[0]["consensus_error"]["dawid_skene"],
               "interval_coverage": cases[0]["interval_coverage"],
               "false_alarm_rate_max": max(c["false_alarm_rate"] for c in cases),
               "planted_found": [c["planted_found"] for c in planted_cases],
               "ours_s_150k": cases[0]["ours_s"]}
    cases.append(summary)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine_info("numpy", "scipy", "pandas"), "cases": cases},
                                              indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
