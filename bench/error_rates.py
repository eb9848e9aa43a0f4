"""Benchmark: do the audit's tests and intervals have the error rates they claim? (issue 13, items 4-6)

Usage::

    .venv/bin/python bench/error_rates.py --json bench/results/error_rates.json \
        [--baseline-ref d9709dc1] [--null-replicates 100] [--replicates 400]

Runs the same measurements twice in one invocation, each in a fresh subprocess: ``before`` on the code of
``--baseline-ref`` (exported with ``git archive`` to a temporary directory; default: the commit before
issue 13's statistics work) and ``after`` on this working tree. Figures:

* ``null_audit``: the sample's 540 images and model, decoded once; then ``--null-replicates`` audits
  (every analysis: ``audit.pipeline.steps.run_steps``, or ``run_analyses`` before the step registry; ``n_bootstrap`` 200) after shuffling the rows of the
  metadata attributes (age, race, service_test) together, so that no real group effect is left.
  ``any_worse_metadata_rate`` = share of audits with any ``worse_than_rest`` row on a metadata-only
  attribute or intersection (primary or exploratory; target <= 5 %); ``headline_rate`` = share with a
  headline (non-lead) finding that a group is worse. Also the unshuffled audit: are age 0-2 and
  race = Black accuracy found?
* ``ece_fpr``: calibration error tested against the rest when every group has the same calibration curve
  (confidence ~ U(0.5, 1), P(correct) = confidence ** 1.5, groups of 40, 80 and 380 images); share of raw
  one-sided p-values below 0.05 (nominal 5 %).
* ``coverage``: 95 % interval coverage of balanced accuracy and macro-F1 for one group of n images (two
  balanced classes, recall ``acc`` in each, so both population values equal ``acc``), n = 10, 30, 100,
  acc = 0.8, 0.95 (accuracy too, for reference).
* ``power``: two attributes (5 x 200 and 4 groups), accuracy 0.85 everywhere except one group of 200 at
  0.75; share of data sets where that group's accuracy row is ``worse_than_rest``.

Each rate carries a 95 % Wilson interval over the replicates.
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
DEFAULT_BASELINE = "d9709dc1"
METADATA = ("age", "race", "service_test")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench helpers, in worker processes too
from _rates import rate as _rate  # noqa: E402


# ---------------------------------------------------------------------------------------------- worker

def _metadata_only(attribute: str) -> bool:
    return attribute != "all" and all(not p.startswith("image_") for p in attribute.split(" & "))


def _headline_worse(details) -> bool:
    for f in details:
        text = f.get("text", "")
        if text.startswith("Lead") or f.get("severity") not in ("high", "medium"):
            continue
        if f.get("analysis") in ("group_performance", "label_noise", "weak_slices") and (
                "worse" in text or "noisier" in text or "Weak slice" in text) and "No group" not in text:
            return True
    return False


def null_audits(replicates: int, seed: int) -> dict:
    from audit.config import AuditConfig
    from audit.io.manifest import load_dataset

    prepared = None
    try:  # the pipeline with input adapters (issue 14, current) ...
        from audit.pipeline.core import prepare_images
        from audit.pipeline.steps import run_steps
    except ImportError:
        prepare_images = None
    if prepare_images is None:
        try:  # ... the first step registry ...
            from audit.pipeline.core import decode_images, predict_with_model
            from audit.pipeline.steps import run_steps
        except ImportError:  # ... or the code before it (the baseline)
            from audit.analyses import run_analyses
            from audit.pipeline import _AnalysisRunner, decode_images, predict_with_model
            run_steps = None

    config = AuditConfig(data=str(ROOT / "sample_data/manifest.csv"), model=str(ROOT / "sample_data/model.onnx"),
                         n_bootstrap=200, use_cache=False)
    if prepare_images is not None:
        prepared = prepare_images(config, progress=lambda *a: None)
        dataset, kept, classes = prepared.dataset, prepared.kept, tuple(prepared.classes)
        probabilities, embeddings = prepared.probabilities, prepared.embeddings
    else:
        dataset = load_dataset(config.data, label_column="label")
        kept, _ = decode_images(dataset, config=config, progress=lambda *a: None)
        classes = tuple(dataset.classes)
        probabilities, embeddings, _ = predict_with_model(kept, classes=classes, config=config,
                                                          progress=lambda *a: None)

    def audit(table):
        if run_steps is not None:
            extra = {} if prepared is None else {"prediction_columns": prepared.prediction_columns,
                                                 "label_noise_source": prepared.label_noise_source}
            bundle = run_steps(table, classes=classes, dataset=dataset, probabilities=probabilities,
                               embeddings=embeddings, config=config, progress=lambda *a: None, **extra)
            return bundle, bundle.errors
        runner = _AnalysisRunner(lambda *a: None)
        bundle = run_analyses(table, classes=classes, dataset=dataset, probabilities=probabilities,
                              embeddings=embeddings, config=config, runner=runner, progress=lambda *a: None)
        return bundle, runner.errors

    start = time.perf_counter()
    real, errors = audit(kept)
    gm = real.group_metrics
    acc = gm[(gm["metric"] == "accuracy") & (gm["class"] == "")]
    found = {f"{a} = {g}": bool(((acc["attribute"] == a) & (acc["group"] == g)
                                 & (acc["verdict"] == "worse_than_rest")).any())
             for a, g in (("age", "0-2"), ("race", "Black"))}
    real_worse = gm[gm["verdict"] == "worse_than_rest"]
    rng = np.random.default_rng(seed)
    any_worse = headline = 0
    n_rows = []
    per_kind = {"primary_or_single_accuracy": 0}
    for _ in range(replicates):
        shuffled = kept.copy()
        order = rng.permutation(len(kept))
        for column in METADATA:
            shuffled[column] = kept[column].to_numpy()[order]
        bundle, _ = audit(shuffled)
        table = bundle.group_metrics
        worse = table[(table["verdict"] == "worse_than_rest") & table["attribute"].map(_metadata_only)]
        any_worse += bool(len(worse))
        n_rows.append(len(worse))
        single_acc = worse[(worse["metric"] == "accuracy") & (worse["class"] == "")
                           & ~worse["attribute"].str.contains(" & ", regex=False)]
        per_kind["primary_or_single_accuracy"] += bool(len(single_acc))
        headline += _headline_worse(bundle.findings)
    return {"replicates": replicates, "n_bootstrap": config.n_bootstrap, "seconds": round(time.perf_counter() - start, 1),
            "any_worse_metadata_rate": _rate(any_worse, replicates),
            "single_attribute_accuracy_worse_rate": _rate(per_kind["primary_or_single_accuracy"], replicates),
            "headline_rate": _rate(headline, replicates),
            "mean_worse_metadata_rows": round(float(np.mean(n_rows)), 3) if n_rows else None,
            "real_data": {"found": found, "n_worse_rows": int(len(real_worse)), "errors": errors,
                          "n_tests": (real.sections.get("multiplicity") or {}).get("n_tests")}}


def _p_values(result_table, labels, predictions, probabilities, groups, classes, metric):
    """Raw one-sided p-values of one metric's group rows (from the table, or the old internals)."""
    import audit.analysis.group_performance as gp

    if "p_value" in result_table.columns:
        rows = result_table[(result_table["metric"] == metric) & (result_table["attribute"] != "all")]
        return rows["p_value"].to_numpy(dtype=float), rows["n"].to_numpy()
    from audit.analysis._groups import codes_for

    codes, names = codes_for(groups.iloc[:, 0].astype(object))
    data = gp._Data(labels=labels, predictions=predictions, k=len(classes), classes=tuple(classes),
                    probabilities=probabilities, top_k=5)
    block, _ = gp._family_rows(groups.columns[0], codes, names, 1, data, classes=tuple(classes),
                               confidence_level=0.95, n_bootstrap=1000, seed=0)
    select = block["metric"] == metric
    return block["p_value"][select], block["n"][select]


def ece_fpr(replicates: int, seed: int) -> dict:
    """Per data set 80 groups of 40 images with one calibration curve; every group tested against the rest."""
    from audit.analysis.group_performance import compute_group_performance

    rng = np.random.default_rng(seed)
    n_groups, size = 80, 40
    n = n_groups * size
    rejected = tested = 0
    start = time.perf_counter()
    for _ in range(max(1, replicates // n_groups)):
        confidence = rng.uniform(0.5, 1.0, n)
        labels = rng.integers(0, 2, n)
        correct = rng.random(n) < confidence ** 1.5
        predictions = np.where(correct, labels, 1 - labels)
        probabilities = np.zeros((n, 2))
        probabilities[np.arange(n), predictions] = confidence
        probabilities[np.arange(n), 1 - predictions] = 1 - confidence
        groups = pd.DataFrame({"g": np.repeat([f"g{i:02d}" for i in range(n_groups)], size)})
        result = compute_group_performance(labels, predictions, classes=["x", "y"], groups=groups,
                                           probabilities=probabilities, max_depth=1, n_bootstrap=1000,
                                           seed=int(rng.integers(1 << 30)), min_group_size=1, max_ci_width=1.0)
        p, _ = _p_values(result.table, labels, predictions, probabilities, groups, ["x", "y"],
                         "expected_calibration_error")
        p = p[np.isfinite(p)]
        rejected += int((p < 0.05).sum())
        tested += int(p.size)
    return {"design": f"{n_groups} groups x {size} images per data set, P(correct) = confidence ** 1.5 everywhere",
            "seconds": round(time.perf_counter() - start, 1), "fpr": _rate(rejected, tested)}


def coverage(replicates: int, seed: int) -> dict:
    """``replicates`` independent groups per case, all in one call (each group's interval uses its own images)."""
    from audit.analysis.group_performance import compute_group_performance

    rng = np.random.default_rng(seed)
    cases = []
    start = time.perf_counter()
    for n in (10, 30, 100):
        for acc in (0.8, 0.95):
            labels = np.tile(np.repeat([0, 1], [n // 2, n - n // 2]), replicates)
            correct = rng.random(labels.size) < acc
            predictions = np.where(correct, labels, 1 - labels)
            groups = pd.DataFrame({"replicate": np.repeat([f"r{i:05d}" for i in range(replicates)], n)})
            table = compute_group_performance(labels, predictions, classes=["x", "y"], groups=groups, max_depth=1,
                                              n_bootstrap=1000, seed=int(rng.integers(1 << 30)),
                                              min_group_size=1, max_ci_width=1.0).table
            rows = table[table["attribute"] == "replicate"]
            case = {"n": n, "accuracy": acc, "replicates": replicates, "coverage": {}, "zero_width_intervals": {}}
            for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
                selected = rows[rows["metric"] == metric]
                hits = int(((selected["ci_low"] <= acc) & (acc <= selected["ci_high"])).sum())
                case["coverage"][metric] = _rate(hits, len(selected))
                case["zero_width_intervals"][metric] = int(((selected["ci_high"] - selected["ci_low"]) < 1e-12).sum())
            cases.append(case)
    return {"seconds": round(time.perf_counter() - start, 1), "cases": cases,
            "truth": "two balanced classes with recall = accuracy in each: population accuracy, balanced "
                     "accuracy and macro-F1 all equal the accuracy"}


def power(replicates: int, seed: int) -> dict:
    from audit.analysis.group_performance import compute_group_performance

    rng = np.random.default_rng(seed)
    site = np.repeat(["s0", "s1", "s2", "s3", "s4"], 200)
    n = site.size
    found = 0
    start = time.perf_counter()
    for _ in range(replicates):
        device = rng.choice(["d0", "d1", "d2", "d3"], size=n)
        labels = rng.integers(0, 2, n)
        accuracy = np.where(site == "s0", 0.75, 0.85)
        correct = rng.random(n) < accuracy
        predictions = np.where(correct, labels, 1 - labels)
        result = compute_group_performance(labels, predictions, classes=["x", "y"],
                                           groups=pd.DataFrame({"site": site, "device": device}), max_depth=2,
                                           n_bootstrap=200, seed=int(rng.integers(1 << 30)))
        table = result.table
        row = table[(table["attribute"] == "site") & (table["group"] == "s0") & (table["metric"] == "accuracy")]
        found += bool((row["verdict"] == "worse_than_rest").any())
    return {"replicates": replicates, "design": "site: 5 groups x 200 images (s0 at accuracy 0.75, others 0.85); "
                                                "device: 4 random groups; pairs intersected",
            "seconds": round(time.perf_counter() - start, 1), "power": _rate(found, replicates)}


def worker(args) -> dict:
    import audit

    out = {"audit_package": str(Path(audit.__file__).resolve().parent)}
    sections = (("coverage", lambda: coverage(args.replicates, args.seed)),
                ("ece_fpr", lambda: ece_fpr(args.replicates, args.seed + 1)),
                ("power", lambda: power(args.power_replicates, args.seed + 2)),
                ("null_audit", lambda: null_audits(args.null_replicates, args.seed + 3)))
    wanted = set(args.sections.split(","))
    for name, run in sections:
        if name not in wanted:
            continue
        out[name] = run()
        Path(args.json).write_text(json.dumps(out, indent=1))  # partial results survive an interruption
    return out


# ---------------------------------------------------------------------------------------------- driver

def _run_version(label: str, tree: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{label}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--json", str(out),
                   "--replicates", str(args.replicates), "--null-replicates", str(args.null_replicates),
                   "--power-replicates", str(args.power_replicates),
                   "--seed", str(args.seed), "--sections", args.sections]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=str(ROOT))
        result = json.loads(out.read_text())
        result["wall_s"] = round(time.perf_counter() - start, 1)
        return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, metavar="PATH")
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE)
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--null-replicates", type=int, default=100)
    parser.add_argument("--power-replicates", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--only", choices=("before", "after"), default=None)
    parser.add_argument("--sections", default="coverage,ece_fpr,power,null_audit",
                        help="comma-separated sections to measure; with --only, the version's other sections are "
                             "kept from the file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--assemble", nargs=2, metavar=("BEFORE_JSON", "AFTER_JSON"), default=None,
                        help="write --json from two worker outputs (each made with --worker --json FILE, run with "
                             "PYTHONPATH at the baseline's and at this tree's code)")
    args = parser.parse_args(argv)
    if args.assemble:
        sys.path.insert(0, str(ROOT))
        from bench._machine import machine_info

        cases = []
        for label, file in zip(("before", "after"), args.assemble):
            case = {"version": label, "code": args.baseline_ref if label == "before" else "working tree"}
            case.update(json.loads(Path(file).read_text()))
            case.pop("audit_package", None)
            cases.append(case)
        result = {"machine": machine_info("numpy", "scipy", "pandas"),
                  "command": " ".join(["python", "bench/error_rates.py"] + list(argv or sys.argv[1:])),
                  "baseline_ref": args.baseline_ref, "cases": cases}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    if args.worker:
        Path(args.json).write_text(json.dumps(worker(args), indent=1))
        return 0
    sys.path.insert(0, str(ROOT))
    from bench._machine import machine_info

    result = {"machine": machine_info("numpy", "scipy", "pandas"),
              "command": " ".join(["python", "bench/error_rates.py"] + list(argv or sys.argv[1:])),
              "baseline_ref": args.baseline_ref, "cases": []}
    previous = []
    kept_sections: dict = {}
    if args.only and Path(args.json).is_file():
        # --only re-measures one version and keeps the other's figures (and its command) from the file;
        # --sections re-measures some sections of that version and keeps the others (each with its command)
        old_cases = json.loads(Path(args.json).read_text()).get("cases", [])
        previous = [c for c in old_cases if c.get("version") != args.only]
        same = [c for c in old_cases if c.get("version") == args.only]
        if same:
            kept_sections = {k: v for k, v in same[0].items()
                             if k in ("coverage", "ece_fpr", "power", "null_audit")
                             and k not in args.sections.split(",")}
            for value in kept_sections.values():
                if isinstance(value, dict):
                    value.setdefault("command", same[0].get("command", ""))
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        baseline.mkdir()
        if args.only != "after":
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        for label, tree in (("before", baseline), ("after", ROOT)):
            if args.only and label != args.only:
                continue
            case = {"version": label, "code": args.baseline_ref if label == "before" else "working tree"}
            case.update(kept_sections if args.only == label else {})
            measured = _run_version(label, tree, args)
            for name in args.sections.split(","):
                if isinstance(measured.get(name), dict):
                    measured[name]["command"] = result["command"]
            case.update(measured)
            case.pop("audit_package", None)
            case["command"] = result["command"]
            case["machine_load_average_1m"] = round(os.getloadavg()[0], 2)
            result["cases"].append(case)
            print(f"{label}: done in {case['wall_s']} s", file=sys.stderr)
    result["cases"] = sorted(previous + result["cases"], key=lambda c: c["version"] != "before")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
