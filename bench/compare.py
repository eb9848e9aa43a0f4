"""Time to compare two 10,000-image audits (issue 15), writing JSON (``--json PATH``).

Cases, on real audits of the 10,000 CIFAR-10 test JPEGs (``../shared/data``), built once into ``--work``:

- ``resnet20_vs_resnet56``: the same images scored by ResNet-20 (OLD) and ResNet-56 (NEW), full ``run`` audits
  (pixel attributes, hashes) with ``--predictions``: a paired model comparison, nothing added.
- ``release_v2``: OLD = the ResNet-20 audit; NEW = the ResNet-56 audit with 500 images removed, 300 relabelled
  and 500 added that are re-encoded copies of OLD images (same perceptual hashes, new content hash, new id):
  exercises matching, the review cross-check and the cross-version near-duplicate search.

Each comparison runs in a fresh subprocess (``python -m audit compare``), so the time includes imports, reading
both folders, every section and writing; peak memory is that subprocess's maximum RSS. The bare baseline, in the
same invocation on the same folders: read both ``images.parquet`` and compute the overall paired accuracy
difference with pandas (what a user would script by hand, without intervals, groups or verdicts).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PROBS = {"resnet20": "probs_resnet20-12fca82f_on_cifar10-test-jpeg.npy",
         "resnet56": "probs_resnet56-4bfd9763_on_cifar10-test-jpeg.npy"}


def build_audits(work: Path) -> dict:
    """The two full CIFAR audits (``run`` on the JPEG folder with each model's probabilities), built once."""
    index = pd.read_csv(SHARED / "cifar10-test-jpeg" / "index.csv").sort_values("original_index")
    ids = [f[len("test/"):] for f in index["file"]]
    folders = {}
    for name, file in PROBS.items():
        folder = work / name
        folders[name] = folder
        if (folder / "audit.json").is_file():
            continue
        probs = np.load(SHARED / "resnet-cifar10-akamaster" / file)
        predictions = work / f"{name}.csv"
        frame = pd.DataFrame(probs, columns=CLASSES)
        frame.insert(0, "id", ids)
        frame.to_csv(predictions, index=False)
        subprocess.run([sys.executable, "-m", "audit", "run", "--data", str(SHARED / "cifar10-test-jpeg" / "test"),
                        "--predictions", str(predictions), "--out", str(folder), "--quiet", "--no-cache"],
                       check=True, cwd=REPO)
    return folders


def build_release_v2(work: Path, new: Path) -> Path:
    """NEW' = NEW with 500 removed, 300 relabelled and 500 near-copies of other images added."""
    from audit.folder import load_audit_folder
    from audit.folder import write_audit_folder

    target = work / "release_v2"
    if (target / "audit.json").is_file():
        return target
    folder = load_audit_folder(new)
    rng = np.random.default_rng(15)
    images = folder.images.copy()
    keep = np.ones(len(images), dtype=bool)
    keep[rng.choice(len(images), 500, replace=False)] = False
    kept = images[keep].reset_index(drop=True)
    relabel = rng.choice(len(kept), 300, replace=False)
    kept.loc[relabel, "label"] = [CLASSES[(CLASSES.index(c) + 1) % 10] for c in kept.loc[relabel, "label"]]
    copies = kept.iloc[rng.choice(len(kept), 500, replace=False)].copy()
    copies["id"] = [f"new/{i:04d}.jpg" for i in range(len(copies))]
    copies["content_hash"] = [f"{i:064x}" for i in range(len(copies))]
    images = pd.concat([kept, copies], ignore_index=True)
    audit = dict(folder.audit)
    audit["dataset"] = dict(audit["dataset"], n_images=len(images), n_rows=len(images))
    write_audit_folder(target, audit=audit, images=images, group_metrics=folder.group_metrics, probabilities=None)
    return target


def compare_in_subprocess(old: Path, new: Path, out: Path) -> tuple[float, float]:
    code = ("import resource, sys, time; from audit.cli import main; t = time.perf_counter(); "
            f"rc = main(['compare', {str(old)!r}, {str(new)!r}, '--out', {str(out)!r}]); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    _, peak = done.stdout.strip().splitlines()[-1].split()
    return wall, float(peak)


def bare_baseline(old: Path, new: Path) -> tuple[float, float]:
    started = time.perf_counter()
    a = pd.read_parquet(old / "images.parquet", columns=["id", "label", "prediction"])
    b = pd.read_parquet(new / "images.parquet", columns=["id", "label", "prediction"])
    merged = a.merge(b, on="id", suffixes=("_old", "_new"))
    difference = float(((merged["prediction_new"] == merged["label_new"]).mean()
                        - (merged["prediction_old"] == merged["label_new"]).mean()))
    return time.perf_counter() - started, difference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, metavar="PATH")
    parser.add_argument("--work", default=str(REPO / "bench" / ".cache" / "compare"), metavar="DIR")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from bench._machine import machine_info

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folders = build_audits(work)
    release = build_release_v2(work, folders["resnet56"])
    cases = []
    for name, old, new in (("resnet20_vs_resnet56", folders["resnet20"], folders["resnet56"]),
                           ("release_v2", folders["resnet20"], release)):
        timings, peaks = [], []
        for _ in range(args.repeat):
            wall, peak = compare_in_subprocess(old, new, work / f"cmp_{name}")
            timings.append(wall)
            peaks.append(peak)
        baseline_s, baseline_difference = bare_baseline(old, new)
        comparison = json.loads((work / f"cmp_{name}" / "comparison.json").read_text())
        overall = [r for r in comparison["model"]["rows"] if r["attribute"] == "all" and r["class"] == ""
                   and r["metric"] == "accuracy"][0]
        cases.append({"case": name, "n_old": comparison["old"]["n_images"], "n_new": comparison["new"]["n_images"],
                      "changes": comparison["matching"]["counts"], "method": comparison["model"]["method"],
                      "n_rows": len(comparison["model"]["rows"]) + len(comparison["labels"]["rows"]),
                      "cross_version_copies": comparison["quality"]["cross_version_duplicates"]["n_near"]
                      + comparison["quality"]["cross_version_duplicates"]["n_exact"],
                      "ours_s": round(min(timings), 2), "ours_s_all": [round(t, 2) for t in timings],
                      "ours_peak_mb": round(max(peaks), 1), "bare_baseline_s": round(baseline_s, 3),
                      "overall_accuracy_difference": overall["difference"],
                      "bare_baseline_difference": baseline_difference})
        print(json.dumps(cases[-1]))
    result = {"machine": machine_info("numpy", "pandas", "scipy"), "cases": cases,
              "command": "python bench/compare.py --json " + args.json}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
