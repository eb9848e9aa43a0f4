"""Benchmark: per-group metrics with bootstrap intervals, ours vs fairlearn ``MetricFrame(n_boot=...)``.

Usage::

    .venv/bin/python bench/group_metrics.py --json bench/results/group_metrics.json [--fairlearn-n-boot 100]

Cases (issue 4): 50,000 samples x 20 groups x {10, 100} classes x 1,000 bootstrap replicates, the same
data for both tools. fairlearn resamples the whole data set and re-runs every metric per replicate, so it
is timed at ``--fairlearn-n-boot`` replicates (default 100) and scaled linearly:
``fairlearn_s = point_s + (timed_s - point_s) * n_boot / fairlearn_n_boot_timed``, where ``point_s`` is
fairlearn without bootstrap.

fairlearn computes accuracy, balanced accuracy and macro-F1 per group with percentile intervals. Ours
(``compute_group_performance``, one attribute, ``max_depth=1``) computes strictly more: the same three
metrics with intervals plus per-class recall and precision, Wilson intervals, a test of every group
against the rest with Holm correction, verdicts and summaries. ``ours_s`` is the median of
``--repeats`` runs; ``ours_peak_mb`` is the peak of memory allocated during one call (tracemalloc, which
sees numpy's buffers) in a fresh subprocess, ``ours_process_peak_mb`` that process's peak resident set
(interpreter, libraries and data included).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CASES = ({"n": 50_000, "groups": 20, "classes": 10, "n_boot": 1000},
         {"n": 50_000, "groups": 20, "classes": 100, "n_boot": 1000})


def make_data(n: int, groups: int, classes: int, seed: int = 0):
    """Labels, predictions (accuracy varying from 0.6 to 0.8 across groups) and a 20-valued attribute."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, n)
    labels = rng.integers(0, classes, n)
    accuracy = 0.6 + 0.2 * group / max(groups - 1, 1)
    wrong = (labels + rng.integers(1, classes, n)) % classes
    predictions = np.where(rng.random(n) < accuracy, labels, wrong)
    names = np.array([f"g{i:02d}" for i in range(groups)], dtype=object)
    return labels, predictions, pd.DataFrame({"group": names[group]}), tuple(f"c{i}" for i in range(classes))


def run_ours(labels, predictions, frame, classes, n_boot):
    from audit.analysis.group_performance import compute_group_performance

    return compute_group_performance(labels, predictions, classes=classes, groups=frame, max_depth=1,
                                     n_bootstrap=n_boot, seed=0)


def run_fairlearn(labels, predictions, frame, n_boot):
    import warnings

    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    metrics = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score,
               "macro_f1": partial(f1_score, average="macro")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {} if n_boot is None else {"n_boot": n_boot, "ci_quantiles": [0.025, 0.975], "random_state": 0}
        return MetricFrame(metrics=metrics, y_true=labels, y_pred=predictions,
                           sensitive_features=frame["group"], **kwargs)


def _timed(function, *args):
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _peak_child(case: dict) -> None:
    """Entry point of the fresh subprocess measuring our peak memory for one case."""
    import tracemalloc

    labels, predictions, frame, classes = make_data(case["n"], case["groups"], case["classes"])
    run_ours(labels[:1000], predictions[:1000], frame[:1000], classes, 10)  # imports and warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    run_ours(labels, predictions, frame, classes, case["n_boot"])
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": traced_peak / 2**20, "rss_growth_mb": (after - before) / 1024.0,
                      "total_peak_mb": after / 1024.0}))


def peak_memory(case: dict) -> dict:
    output = subprocess.run([sys.executable, __file__, "--peak-child", json.dumps(case)], check=True,
                            capture_output=True, text=True, cwd=str(ROOT)).stdout
    return json.loads(output.strip().splitlines()[-1])


def machine() -> dict:
    import fairlearn
    import scipy
    import sklearn

    return {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
            "numpy": np.__version__, "pandas": pd.__version__, "scipy": scipy.__version__,
            "scikit_learn": sklearn.__version__, "fairlearn": fairlearn.__version__}


def run_case(case: dict, *, fairlearn_n_boot: int, repeats: int) -> dict:
    labels, predictions, frame, classes = make_data(case["n"], case["groups"], case["classes"])
    run_ours(labels[:2000], predictions[:2000], frame[:2000], classes, 20)  # warm-up (imports, caches)
    ours = [_timed(run_ours, labels, predictions, frame, classes, case["n_boot"]) for _ in range(repeats)]
    ours_s = statistics.median(ours)
    fairlearn_point_s = _timed(run_fairlearn, labels, predictions, frame, None)
    fairlearn_timed_s = _timed(run_fairlearn, labels, predictions, frame, fairlearn_n_boot)
    per_replicate = max(fairlearn_timed_s - fairlearn_point_s, 0.0) / fairlearn_n_boot
    fairlearn_s = fairlearn_point_s + per_replicate * case["n_boot"]
    ours_per_replicate = ours_s / case["n_boot"]  # upper bound: includes everything besides the bootstrap
    memory = peak_memory(case)
    return dict(case, ours_s=ours_s, ours_runs_s=ours, fairlearn_s=fairlearn_s,
                fairlearn_n_boot_timed=fairlearn_n_boot, fairlearn_timed_s=fairlearn_timed_s,
                fairlearn_point_s=fairlearn_point_s, ours_per_replicate_s=ours_per_replicate,
                fairlearn_per_replicate_s=per_replicate,
                speedup_per_replicate=per_replicate / ours_per_replicate if ours_per_replicate > 0 else None,
                speedup_total=fairlearn_s / ours_s if ours_s > 0 else None,
                ours_peak_mb=memory["peak_mb"], ours_process_peak_mb=memory["total_peak_mb"],
                ours_metrics="accuracy, balanced_accuracy, macro_f1 (+ per-class recall/precision, tests, verdicts)",
                fairlearn_metrics="accuracy_score, balanced_accuracy_score, f1_score(average='macro')")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--fairlearn-n-boot", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_child:
        _peak_child(json.loads(args.peak_child))
        return 0
    result = {"machine": machine(), "cases": []}
    for case in CASES:
        row = run_case(case, fairlearn_n_boot=args.fairlearn_n_boot, repeats=args.repeats)
        result["cases"].append(row)
        print(f"n={row['n']} groups={row['groups']} classes={row['classes']} n_boot={row['n_boot']}: "
              f"ours {row['ours_s']:.3f} s, fairlearn {row['fairlearn_s']:.1f} s "
              f"(timed {row['fairlearn_timed_s']:.1f} s "
              f"at {row['fairlearn_n_boot_timed']} replicates), per-replicate speed-up "
              f"{row['speedup_per_replicate']:.0f}x, ours peak +{row['ours_peak_mb']:.0f} MB", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
