"""Benchmark: how often does a comparison of two versions with nothing changed report a change? (issue 15)

Usage::

    .venv/bin/python bench/compare_null_rates.py --json bench/results/compare_null_rates.json \
        [--baseline-ref b8110665] [--replicates 1000]

Runs the same measurements twice in one invocation, each in a fresh subprocess: ``before`` on the code of
``--baseline-ref`` (exported with ``git archive``; default: the commit before the comparison-wide families)
and ``after`` on this working tree. Each replicate is one comparison of 400 images, two classes, two metadata
attributes (site: 4 groups, age: 2), accuracy 0.8 in every group and class of both versions:

* ``paired``: the same images scored twice (each outcome kept with probability 0.6, else redrawn);
* ``unpaired``: two independent image sets (so the class and group share changes and the shift tests are
  null tests too).

Every test of the comparison is made as ``compare`` makes it (``audit.compare.model.compare_model`` with
``n_bootstrap`` 100; class/group shares and shift tests with ``audit.compare.core._share_rows``) and the
verdicts are taken as ``compare`` takes them: after (this tree) the comparison-wide families
(``decide_rows``: Holm over primary rows, BH over every other row and the data tests); before, the metric rows'
families (``assign_verdicts``) and the shift tests Holm-adjusted among themselves (the share rows carried raw
p-values only). Figures per case: ``any_primary`` = share of comparisons with any primary ``regressed`` /
``improved`` (target <= 5 %), ``any_exploratory`` = with any exploratory one or any significant data test
(target <= 5 %), and ``planted_found`` = share of comparisons with site C's accuracy dropped by 15 points in NEW
(paired) where that primary row is ``regressed``. Each rate carries a 95 % Wilson interval.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "b8110665"
N, ALPHA, N_BOOTSTRAP = 400, 0.05, 100

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench helpers, in worker processes too
from _rates import rate as _rate  # noqa: E402


def _side(rng):
    labels = rng.integers(0, 2, N)
    groups = {"site": pd.Series(np.array(["A", "B", "C", "D"])[rng.integers(0, 4, N)]),
              "age": pd.Series(np.array(["young", "old"])[rng.integers(0, 2, N)])}
    return labels, groups


def one_comparison(rng, method: str, drop: float = 0.0):
    """(rows, data p-values adjusted or None, significant data tests) of one generated comparison."""
    from audit.compare import model as cm
    from audit.compare.core import _share_rows

    labels, groups = _side(rng)
    old_correct = rng.random(N) < 0.8
    if method == "paired":
        labels_new, groups_new = labels, groups
        new_correct = np.where(rng.random(N) < 0.6, old_correct, rng.random(N) < 0.8)
        if drop:
            planted = (groups["site"] == "C").to_numpy()
            new_correct = np.where(planted, new_correct & (rng.random(N) < (0.8 - drop) / 0.8), new_correct)
    else:
        labels_new, groups_new = _side(rng)
        new_correct = rng.random(N) < 0.8
    old = cm.VersionData(labels, np.where(old_correct, labels, 1 - labels), groups, 2)
    new = cm.VersionData(labels_new, np.where(new_correct, labels_new, 1 - labels_new), groups_new, 2)
    rows = cm.compare_model(old, new, classes=["a", "b"], method=method, metadata_attributes=["site", "age"],
                            n_bootstrap=N_BOOTSTRAP, seed=int(rng.integers(1 << 30)))
    shares, shifts = [], []
    for name, a, b in (("class", pd.Series(labels).astype(str), pd.Series(labels_new).astype(str)),
                       ("site", groups["site"], groups_new["site"]), ("age", groups["age"], groups_new["age"])):
        share, shift = _share_rows(name, a, b, np.zeros(N, dtype=bool), confidence_level=0.95)
        shares += [r["p_value"] for r in share]
        shifts.append(shift["p_value"])
    if hasattr(cm, "decide_rows"):  # after: one family story for the whole comparison
        rows, adjusted, _ = cm.decide_rows(rows, shares + shifts, min_group_size=30, max_ci_width=0.3)
        data_hits = int(np.sum(np.nan_to_num(adjusted, nan=1.0) < ALPHA))
    else:  # before: metric rows' families; shift tests Holm among themselves (as its findings used them)
        from audit.analysis._stats import adjust_p_values

        rows = cm.assign_verdicts(rows, min_group_size=30, max_ci_width=0.3)
        data_hits = int(np.sum(adjust_p_values(shifts, method="holm") <= ALPHA))
    return rows, data_hits


def worker(replicates: int, seed: int) -> dict:
    cases = []
    for method in ("paired", "unpaired"):
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        primary = exploratory = 0
        n_tests = []
        for _ in range(replicates):
            rows, data_hits = one_comparison(rng, method)
            flagged = rows["verdict"].isin(["regressed", "improved"])
            primary += bool((flagged & (rows["scope"] == "primary")).any())
            exploratory += bool((flagged & (rows["scope"] == "exploratory")).any() or data_hits)
            n_tests.append(int((~rows["insufficient_evidence"]).sum()))
        cases.append({"case": method, "replicates": replicates, "n_images": N,
                      "metric_tests_per_comparison": round(float(np.mean(n_tests)), 1),
                      "any_primary": _rate(primary, replicates), "any_exploratory": _rate(exploratory, replicates),
                      "seconds": round(time.perf_counter() - start, 1)})
    rng = np.random.default_rng(seed + 1)
    found = 0
    planted_n = max(50, replicates // 4)
    for _ in range(planted_n):
        rows, _ = one_comparison(rng, "paired", drop=0.15)
        target = rows[(rows["attribute"] == "site") & (rows["group"] == "C") & (rows["metric"] == "accuracy")
                      & (rows["class"] == "")]
        found += bool((target["verdict"] == "regressed").any())
    cases.append({"case": "planted_paired", "replicates": planted_n, "n_images": N, "drop": 0.15,
                  "planted_found": _rate(found, planted_n)})
    return {"cases": cases}


def _run(tree: Path, replicates: int, seed: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--replicates", str(replicates),
                          "--seed", str(seed)], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.replicates, args.seed)))
        return 0
    sys.path.insert(0, str(ROOT / "bench"))
    from _machine import machine_info

    with tempfile.TemporaryDirectory() as temporary:
        before_tree = Path(temporary) / "before"
        before_tree.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline_ref], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before_tree)], input=archive.stdout, check=True)
        before = _run(before_tree, args.replicates, args.seed)
    after = _run(ROOT, args.replicates, args.seed)
    cases = []
    for b, a in zip(before["cases"], after["cases"]):
        cases.append({"case": a["case"], "before": b, "after": a})
    result = {"machine": machine_info("numpy", "scipy", "pandas"), "baseline_ref": args.baseline_ref,
              "alpha": ALPHA, "n_bootstrap": N_BOOTSTRAP, "cases": cases}
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
