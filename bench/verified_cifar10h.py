"""Verified label-error rate with CIFAR-10H playing the reviewer (issue 13 item 2).

Usage::

    python bench/verified_cifar10h.py --json bench/results/verified_cifar10h.json [--seeds 500]

The audit: ``python -m audit label-noise`` on the CIFAR-10 test labels (``cifar-label-errors-northcutt2021``)
and the shipped ResNet-20 probabilities on the JPEG test set (``resnet-cifar10-akamaster``), written to a
temporary folder. Its model-label disagreement screen flags about 12.6 % of the images.

The reviewer: CIFAR-10H (``cifar-10h/cifar10h-counts.npy``, about 51 human votes per image). A sampled
image's decision is ``label_wrong`` (new label = the human majority) when the majority differs from the given
label, else ``label_correct``. The reference rate is the human-disagreement rate over all 10,000 images
(79 images, 0.79 %).

For each budget 50 / 100 / 200 / 400 and seeds 0..S-1: draw the stratified review sample
(:func:`audit.review_sample.draw_review_sample`), give it CIFAR-10H's decisions, and estimate with
:func:`audit.review_sample.compute_review_status` (the function ``review --status`` uses). ``coverage`` is
the share of seeds whose interval holds 0.79 %. Once, the CLI path end to end (``review --sample 400``,
``--import`` of the decisions CSV, ``--status --json``) in subprocesses, timed.
Output format: ``contract.md`` "Benchmark JSON".
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
PROBABILITIES = DATA / "resnet-cifar10-akamaster" / "probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy"
LABELS = DATA / "cifar-label-errors-northcutt2021" / "cifar10_test_set_original_labels.npy"
HUMANS = DATA / "cifar-10h" / "cifar10h-counts.npy"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BUDGETS = (50, 100, 200, 400)


def _cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "audit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    return done, time.perf_counter() - start


def build_audit(work: Path) -> Path:
    labels = np.load(LABELS, allow_pickle=False).astype(np.int64)
    np.save(work / "labels.npy", labels)
    (work / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    out = work / "audit"
    done, _ = _cli("label-noise", "--labels", str(work / "labels.npy"), "--predictions", str(PROBABILITIES),
                   "--classes", str(work / "classes.txt"), "--out", str(out))
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return out


def decisions_for(ids, labels: np.ndarray, majority: np.ndarray) -> pd.DataFrame:
    """CIFAR-10H's decisions on the images ``ids`` (the audit's ids are the canonical test indices)."""
    index = np.asarray([int(i) for i in ids])
    wrong = majority[index] != labels[index]
    return pd.DataFrame({"id": [str(i) for i in index], "decision": np.where(wrong, "label_wrong", "label_correct"),
                         "new_label": [CLASSES[majority[i]] if w else "" for i, w in zip(index, wrong)]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=500, help="repeated samples per budget (default 500)")
    args = parser.parse_args(argv)
    for needed in (PROBABILITIES, LABELS, HUMANS):
        if not needed.exists():
            print(f"data not found: {needed}", file=sys.stderr)
            return 2
    from bench._machine import machine_info
    from audit.folder import load_audit_json, load_images
    from audit.review_sample import compute_review_status, draw_review_sample, ReviewSample
    from audit.reviews import DECISION_COLUMNS, with_review_keys

    labels = np.load(LABELS, allow_pickle=False).astype(np.int64)
    majority = np.load(HUMANS, allow_pickle=False).argmax(axis=1)
    reference = float((majority != labels).mean())
    cases = []
    with tempfile.TemporaryDirectory(prefix="verified-cifar10h-") as temporary:
        work = Path(temporary)
        start = time.perf_counter()
        folder = build_audit(work)
        audit_s = time.perf_counter() - start
        audit = load_audit_json(folder)
        images = with_review_keys(load_images(folder))
        hash_of = dict(zip(images["id"].astype(str), images["content_hash"].astype(str)))
        flagged = images["is_label_issue"].astype(bool).to_numpy()
        order = images["id"].astype(int).to_numpy()
        human_wrong = (majority[order] != labels[order])
        section = (audit.get("analyses") or {}).get("label_noise") or {}
        screen = {"disagreement_rate": section.get("noise_rate", section.get("label_disagreement_rate")),
                  "flagged_fraction": float(flagged.mean()),
                  "human_rate_in_flagged": float(human_wrong[flagged].mean()),
                  "human_rate_in_not_flagged": float(human_wrong[~flagged].mean())}
        for budget in BUDGETS:
            covered, estimates, widths, lows, highs = 0, [], [], [], []
            start = time.perf_counter()
            for seed in range(args.seeds):
                sample = draw_review_sample(images, budget, seed=seed)
                frame = decisions_for(sample.frame["id"], labels, majority)
                decisions = frame.assign(content_hash=frame["id"].map(hash_of), reviewer="cifar10h", note=None,
                                         decided_at="2026-12-03T00:00:00+00:00")[list(DECISION_COLUMNS)]
                status = compute_review_status(images, decisions, sample, classes=CLASSES)
                rate = status["label_error_rate"]
                estimates.append(rate["estimate"])
                lows.append(rate["ci_low"])
                highs.append(rate["ci_high"])
                widths.append(rate["ci_high"] - rate["ci_low"])
                covered += rate["ci_low"] <= reference <= rate["ci_high"]
            cases.append({"budget": budget, "seeds": args.seeds, "reference_rate": reference,
                          "coverage": covered / args.seeds, "mean_estimate": float(np.mean(estimates)),
                          "median_ci_low": float(np.median(lows)), "median_ci_high": float(np.median(highs)),
                          "mean_ci_width": float(np.mean(widths)),
                          "flagged_in_sample": int((sample.frame["stratum"] == "flagged").sum()),
                          "ours_s_per_seed": (time.perf_counter() - start) / args.seeds})
            print(f"budget {budget}: coverage {cases[-1]['coverage']:.3f}, mean estimate "
                  f"{cases[-1]['mean_estimate']:.4f}, mean width {cases[-1]['mean_ci_width']:.4f}", flush=True)
        # the CLI path once: sample 400, import CIFAR-10H's decisions, status
        timings = {"label_noise_audit_s": audit_s}
        done, timings["sample_s"] = _cli("review", str(folder), "--sample", "400", "--seed", "0",
                                         "--out", str(work / "sample.csv"))
        assert done.returncode == 0, done.stderr
        sampled = pd.read_csv(work / "sample.csv", dtype=str, keep_default_na=False)
        decisions_for(sampled["id"], labels, majority).to_csv(work / "decisions.csv", index=False)
        done, timings["import_s"] = _cli("review", str(folder), "--import", str(work / "decisions.csv"),
                                         "--reviewer", "cifar10h")
        assert done.returncode == 0, done.stderr
        done, timings["status_s"] = _cli("review", str(folder), "--status", "--json", str(work / "status.json"))
        assert done.returncode == 0, done.stderr
        cli_status = json.loads((work / "status.json").read_text())
        rate = cli_status["label_error_rate"]
        cli_case = {"budget": 400, "seed": 0, **timings, "label_error_rate": rate,
                    "covers_reference": rate["ci_low"] <= reference <= rate["ci_high"],
                    "printed": done.stdout.splitlines()[:4]}
        print(f"CLI: {rate['estimate']:.4f} ({rate['ci_low']:.4f} - {rate['ci_high']:.4f}); "
              f"sample {timings['sample_s']:.1f} s, import {timings['import_s']:.1f} s, status {timings['status_s']:.1f} s")
    output = {"machine": machine_info("numpy", "scipy", "pandas"),
              "command": "python bench/verified_cifar10h.py --json bench/results/verified_cifar10h.json"
                         + ("" if args.seeds == 500 else f" --seeds {args.seeds}"),
              "data": {"probabilities": str(PROBABILITIES.relative_to(DATA)), "labels": str(LABELS.relative_to(DATA)),
                       "reviewer": str(HUMANS.relative_to(DATA)) + " (majority vote)"},
              "reference_rate": reference, "screen": screen, "cases": cases, "cli": cli_case}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
