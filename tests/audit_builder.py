"""Builder of small (or large, for bench/report.py) synthetic audit folders that follow the contract.

Numbers are generated with known structure (one attribute group with lower accuracy, a few flagged labels)
and every table is consistent with ``images.parquet`` so ``../shared/tools/check_audit_folder.py`` accepts
the folder. Used by tests/test_policy.py, tests/test_gate.py, tests/test_report.py and bench/report.py.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from audit.analysis._stats import wilson_interval

MIN_GROUP_SIZE = 30


def _write_jpeg(path: Path, colour) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, format="JPEG")


def build_audit_folder(folder, *, n_images: int = 600, n_classes: int = 3, class_names=None, with_model: bool = True,
                       errors=(), seed: int = 0, n_image_files: int = 40, verdict: dict | None = None,
                       with_data_quality: bool = True, gender_values=("Female", "Male"),
                       schema: str = "2.0") -> Path:
    """Write a synthetic audit folder and return its path.

    Attributes: ``gender`` (``gender_values``, default Female/Male; the first has lower accuracy), ``age``
    (young/adult/old; ``old`` is small, 20 images, and the model is worse on it), ``image_brightness_group`` (pixel attribute). ``errors`` (analysis names) are written as
    failed analyses and their sections left out. The first ``n_image_files`` images exist on disk as small
    JPEGs; the others point to files that do not exist (the report must show placeholders).
    ``schema="1.0"`` writes the folder as imagefair 1.x did (metric ``estimated_noise_rate``, ``noise_rate`` in
    ``audit.json``, the old label finding): the reader must migrate it.
    """
    legacy = schema.startswith("1.")
    rate_metric = "estimated_noise_rate" if legacy else "label_disagreement_rate"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = list(class_names) if class_names is not None else [f"class_{i:03d}" for i in range(n_classes)]
    k = len(classes)
    weights = np.linspace(2.0, 1.0, k)
    weights /= weights.sum()
    label_codes = rng.choice(k, size=n_images, p=weights)
    label_codes[:k] = np.arange(k)  # every class present
    gender = rng.choice(list(gender_values), size=n_images)
    age = np.where(np.arange(n_images) % max(n_images // 20, 1) == 0, "old",
                   rng.choice(["young", "adult"], size=n_images))
    age = age.astype(object)
    age[1] = None  # one missing value
    brightness = rng.uniform(0, 1, n_images)
    brightness_group = np.where(brightness < 0.33, "dark", np.where(brightness < 0.66, "mid", "bright"))
    accuracy = np.where(age == "old", 0.45, np.where(gender == gender_values[0], 0.80, 0.90))
    correct = rng.uniform(size=n_images) < accuracy
    other = (label_codes + rng.integers(1, k, size=n_images)) % k
    predicted = np.where(correct, label_codes, other)
    confidence = rng.uniform(0.5, 0.95, n_images)
    probabilities = np.full((n_images, k), 0.0, dtype=np.float64)
    probabilities[:] = ((1 - confidence) / (k - 1))[:, None]
    probabilities[np.arange(n_images), predicted] = confidence
    probabilities = probabilities.astype(np.float32)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    label_probability = probabilities[np.arange(n_images), label_codes].astype(float)
    is_issue = (~correct) & (confidence > 0.7)
    image_dir = folder.parent / f"{folder.name}_images"
    paths = []
    for i in range(n_images):
        path = image_dir / f"img_{i:06d}.jpg"
        if i < n_image_files:
            _write_jpeg(path, (int(40 + 200 * brightness[i]), 90, 140))
        paths.append(str(path))
    ids = [f"img_{i:06d}" for i in range(n_images)]
    images = pd.DataFrame({
        "id": ids, "path": paths, "content_hash": [f"{i:064x}" for i in range(n_images)],
        "label": np.array(classes, dtype=object)[label_codes], "split": "test",
        "gender": gender.astype(object), "age": age,
        "image_brightness": brightness, "image_brightness_group": brightness_group.astype(object),
    })
    if with_model:
        images["prediction"] = np.array(classes, dtype=object)[predicted]
        images["confidence"] = probabilities.max(axis=1).astype(float)
        images["label_probability"] = label_probability
        images["label_score"] = label_probability
        images["is_label_issue"] = is_issue
        images["suggested_label"] = images["prediction"]
    group_frame = pd.DataFrame({"gender": images["gender"], "age": images["age"].fillna("<missing>"),
                                "image_brightness_group": images["image_brightness_group"]})
    group_attributes = ["gender", "age"]
    all_attributes = group_attributes + ["image_brightness_group"]
    rows = []

    def proportion_rows(attribute, keys, successes, metric, klass="", higher_is_better=True):
        out = []
        n_total = len(keys)
        for group in sorted(pd.unique(keys)):
            mask = keys == group
            n = int(mask.sum())
            s = float(successes[mask].sum())
            low, high = wilson_interval(s, n)
            value = s / n
            insufficient = n < MIN_GROUP_SIZE or (high - low) > 0.3
            rest = successes[~mask]
            verdict_word = ""
            if attribute != "all":
                if insufficient:
                    verdict_word = "insufficient_data"
                else:
                    rest_value = rest.mean() if len(rest) else value
                    worse = (high < rest_value) if higher_is_better else (low > rest_value)
                    verdict_word = "worse_than_rest" if worse else "no_evidence_of_gap"
            out.append({"attribute": attribute, "group": str(group), "class": klass, "n": n, "metric": metric,
                        "value": value, "ci_low": float(low), "ci_high": float(high),
                        "insufficient_evidence": bool(insufficient), "verdict": verdict_word})
        return out

    everyone = np.array(["all"] * n_images, dtype=object)
    # share rows
    distribution_attributes = {}
    for attribute in all_attributes:
        keys = group_frame[attribute].to_numpy(dtype=object)
        groups = []
        for group in sorted(pd.unique(keys)):
            n = int((keys == group).sum())
            low, high = wilson_interval(n, n_images)
            is_small = n < MIN_GROUP_SIZE
            groups.append({"group": str(group), "n": n, "share": n / n_images, "ci_low": float(low),
                           "ci_high": float(high), "is_small": bool(is_small)})
            rows.append({"attribute": attribute, "group": str(group), "class": "", "n": n, "metric": "share",
                         "value": n / n_images, "ci_low": float(low), "ci_high": float(high),
                         "insufficient_evidence": bool(is_small),
                         "verdict": "insufficient_data" if is_small else ""})
        n_missing = int((keys == "<missing>").sum())
        distribution_attributes[attribute] = {"groups": groups, "n_groups": len(groups), "n_missing": n_missing,
                                              "missing_rate": n_missing / n_images,
                                              "n_small_groups": sum(g["is_small"] for g in groups),
                                              "reference": None}
    inter_keys = (group_frame["gender"] + " & " + group_frame["age"]).to_numpy(dtype=object)
    inter_groups = []
    for group in sorted(pd.unique(inter_keys)):
        n = int((inter_keys == group).sum())
        low, high = wilson_interval(n, n_images)
        inter_groups.append({"group": group, "n": n, "share": n / n_images, "ci_low": float(low),
                             "ci_high": float(high), "is_small": n < MIN_GROUP_SIZE})
        rows.append({"attribute": "gender & age", "group": group, "class": "", "n": n, "metric": "share",
                     "value": n / n_images, "ci_low": float(low), "ci_high": float(high),
                     "insufficient_evidence": n < MIN_GROUP_SIZE,
                     "verdict": "insufficient_data" if n < MIN_GROUP_SIZE else ""})
    counts = {c: int((label_codes == i).sum()) for i, c in enumerate(classes)}
    order = sorted(counts, key=counts.get)
    sections = {
        "class_distribution": {
            "n_images": n_images, "n_classes": k, "counts": counts,
            "shares": {c: v / n_images for c, v in counts.items()},
            "imbalance_ratio": counts[order[-1]] / counts[order[0]], "normalised_entropy": 0.98,
            "smallest_class": order[0], "largest_class": order[-1], "empty_classes": [],
            "by_split": {"test": counts}, "split_shift": None},
        "attribute_distribution": {
            "min_group_size": MIN_GROUP_SIZE, "attributes": distribution_attributes,
            "intersections": {"gender & age": {"attributes": ["gender", "age"], "groups": inter_groups,
                                               "n_cells_possible": 6, "n_cells_empty": 0,
                                               "n_small_groups": sum(g["is_small"] for g in inter_groups)}}},
        "associations": {"alpha": 0.05, "attributes": [
            {"attribute": a, "n": n_images, "n_groups": int(group_frame[a].nunique()), "cramers_v": 0.05 + 0.1 * j,
             "chi2": 3.2, "dof": 2, "p_value": 0.2, "p_value_adjusted": 0.4, "significant": False,
             "low_expected_counts": False,
             "cells": [{"class": classes[0], "group": str(group_frame[a].iloc[0]), "observed": 10, "expected": 8.0,
                        "ratio": 1.25, "adjusted_residual": 0.7, "direction": "over", "significant": False}]}
            for j, a in enumerate(all_attributes)],
            "contingency": {}},
    }
    metrics = {"share": {"higher_is_better": None, "description": "fraction of images in the group"}}
    findings = [f"Classes are imbalanced: {order[-1]} has {counts[order[-1]]} images."]
    if with_model:
        correct_f = correct.astype(float)
        issue_f = is_issue.astype(float)
        rows += proportion_rows("all", everyone, correct_f, "accuracy")
        error_f = 1.0 - correct_f
        rows += proportion_rows("all", everyone, issue_f, rate_metric, higher_is_better=False)
        if not legacy:
            rows += proportion_rows("all", everyone, error_f, "model_error_rate", higher_is_better=False)
        for attribute in all_attributes:
            keys = group_frame[attribute].to_numpy(dtype=object)
            rows += proportion_rows(attribute, keys, correct_f, "accuracy")
            rows += proportion_rows(attribute, keys, issue_f, rate_metric, higher_is_better=False)
            if not legacy:
                rows += [dict(r, verdict="insufficient_data" if r["insufficient_evidence"] else "")
                         for r in proportion_rows(attribute, keys, error_f, "model_error_rate", higher_is_better=False)]
        rows += proportion_rows("gender & age", inter_keys, correct_f, "accuracy")
        for i, c in enumerate(classes):
            mask = label_codes == i
            rows += proportion_rows("all", everyone[mask], correct_f[mask], "recall", klass=c)
            rows += proportion_rows("all", everyone[mask], issue_f[mask], rate_metric, klass=c,
                                    higher_is_better=False)
            if not legacy:
                rows += proportion_rows("all", everyone[mask], error_f[mask], "model_error_rate", klass=c,
                                        higher_is_better=False)
        n_issues = int(is_issue.sum())
        low, high = wilson_interval(n_issues, n_images)
        noise_matrix = np.full((k, k), 0.02 / max(k - 1, 1))
        np.fill_diagonal(noise_matrix, 0.98)
        if legacy:
            sections["label_noise"] = {
                "noise_rate": n_issues / n_images, "noise_rate_ci": [float(low), float(high)],
                "n_label_issues": n_issues,
                "per_class": [{"class": c, "n": counts[c], "n_label_issues": int(is_issue[label_codes == i].sum()),
                               "noise_rate": float(is_issue[label_codes == i].mean())} for i, c in enumerate(classes)],
                "noise_matrix": noise_matrix.tolist(), "source": "model",
                "source_description": "the model's own probabilities"}
        else:
            n_errors = int((~correct).sum())
            e_low, e_high = wilson_interval(n_errors, n_images)
            sections["label_noise"] = {
                "label_disagreement_rate": n_issues / n_images, "label_disagreement_rate_ci": [float(low), float(high)],
                "n_label_issues": n_issues, "model_error_rate": n_errors / n_images,
                "model_error_rate_ci": [float(e_low), float(e_high)], "n_model_errors": n_errors,
                "per_class": [{"class": c, "n": counts[c], "n_label_issues": int(is_issue[label_codes == i].sum()),
                               "label_disagreement_rate": float(is_issue[label_codes == i].mean()),
                               "model_error_rate": float((~correct)[label_codes == i].mean())}
                              for i, c in enumerate(classes)],
                "noise_matrix": noise_matrix.tolist(), "source": "model",
                "source_description": "the model's own probabilities"}
        overall_acc = float(correct.mean())
        lo, hi = wilson_interval(correct.sum(), n_images)
        sections["group_performance"] = {
            "settings": {"min_group_size": MIN_GROUP_SIZE}, "overall": {
                "accuracy": {"value": overall_acc, "ci_low": float(lo), "ci_high": float(hi), "n": n_images}},
            "attributes": [], "worse_than_rest": []}
        old = age == "old"
        sections["weak_slices"] = {"slices": [
            {"attributes": ["age"], "group": "age = old", "n": int(old.sum()), "accuracy": float(correct[old].mean()),
             "rest_accuracy": float(correct[~old].mean()),
             "effect": float(correct[old].mean() - correct[~old].mean()), "p_value": 0.001,
             "p_value_adjusted": 0.004}], "n_tried": 12}
        metrics.update({
            "accuracy": {"higher_is_better": True, "description": "share of images predicted correctly"},
            "recall": {"higher_is_better": True, "description": "per class recall"},
            rate_metric: {"higher_is_better": False, "description": "share flagged as label issues"}})
        if legacy:
            findings.insert(0, f"An estimated {100 * n_issues / n_images:.1f} % of labels are wrong.")
        else:
            metrics["model_error_rate"] = {"higher_is_better": False, "description": "share predicted wrongly"}
            findings.insert(0, f"The model confidently disagrees with the given label on {100 * n_issues / n_images:.1f} "
                               f"% of images (a screening figure, not a label-error rate).")
    if with_data_quality:
        sections["data_quality"] = {"issues": ["near_duplicate", "dark", "blurry"],
                                    "summary": {"n_images": n_images, "issues": {"near_duplicate": 4, "dark": 12,
                                                                                  "blurry": 0},
                                                "n_duplicate_sets": 2},
                                    "leakage": {"n_pairs": 0, "pairs": []}, "settings": {"dark_threshold": 0.1},
                                    "findings": ["4 images are near duplicates (2 sets)."]}
    error_entries = []
    for name in errors:
        sections.pop(name, None)
        error_entries.append({"analysis": name, "message": f"RuntimeError: synthetic failure of {name}"})
    if "label_noise" in errors:
        rows = [r for r in rows if r["metric"] not in ("estimated_noise_rate", "label_disagreement_rate",
                                                       "model_error_rate")]
    if "group_performance" in errors:
        # the checker wants the overall accuracy row whenever there are predictions; keep only that one
        rows = [r for r in rows if r["metric"] not in ("accuracy", "recall") or
                (r["metric"] == "accuracy" and r["attribute"] == "all")]
    audit = {
        "schema_version": schema, "tool": {"name": "imagefair", "version": "0.1.0"}, "kind": "run",
        "classes": classes,
        "dataset": {"source": str(image_dir), "kind": "manifest", "root": str(image_dir), "n_images": n_images,
                    "n_rows": n_images + 2, "n_skipped": 2, "n_classes": k, "class_order_source": "sorted",
                    "label_column": "label", "splits": ["test"], "group_attributes": group_attributes,
                    "pixel_attributes": ["image_brightness_group"], "metadata_columns": []},
        "model": ({"source": "/models/m.onnx", "kind": "onnx", "sha256": "ab" * 32, "arch": None,
                   "classes": classes} if with_model else None),
        "metrics": metrics, "analyses": sections, "errors": error_entries, "findings": findings,
        "finding_details": [{"analysis": "x", "severity": "medium", "text": t, "weight": 1.0} for t in findings],
        "provenance": {"data_hash": "cd" * 32, "model_sha256": "ab" * 32 if with_model else None,
                       "preprocessing": None, "settings": {"min_group_size": MIN_GROUP_SIZE, "seed": seed},
                       "seed": seed, "min_group_size": MIN_GROUP_SIZE,
                       "versions": {"python": "3.12", "imagefair": "0.1.0"}, "platform": "linux",
                       "command": "python -m audit run", "started_at": "2026-11-24T06:00:00+00:00",
                       "finished_at": "2026-11-24T06:01:00+00:00", "duration_s": 60.0},
        "skipped": [{"row": 7, "path": "broken.jpg", "reason": "truncated or corrupt image"},
                    {"row": 9, "path": "missing.png", "reason": "file not found"}],
    }
    if verdict is not None:
        audit["verdict"] = verdict
    table = pd.DataFrame(rows, columns=["attribute", "group", "class", "n", "metric", "value", "ci_low", "ci_high",
                                        "insufficient_evidence", "verdict"])
    table["n"] = table["n"].astype("int64")
    images.to_parquet(folder / "images.parquet", index=False)
    table.to_parquet(folder / "group_metrics.parquet", index=False)
    if with_model:
        np.save(folder / "probabilities.npy", probabilities, allow_pickle=False)
    (folder / "audit.json").write_text(json.dumps(audit, indent=1, allow_nan=False))
    return folder


def write_reviews(folder, decisions) -> Path:
    """Write ``reviews.sqlite`` with the contract's ``decisions`` table; ``decisions`` = list of row dicts."""
    path = Path(folder) / "reviews.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE IF NOT EXISTS decisions (id TEXT, content_hash TEXT, reviewer TEXT, "
                       "decision TEXT, new_label TEXT, note TEXT, decided_at TEXT)")
    connection.executemany("INSERT INTO decisions VALUES (:id, :content_hash, :reviewer, :decision, :new_label, "
                           ":note, :decided_at)", decisions)
    connection.commit()
    connection.close()
    return path


def rewrite_audit_files(folder, **tables) -> Path:
    """Replace tables of an audit folder written by imagefair (e.g. ``images=frame``) as a new generation.

    Tests that edit a real audit go through the writer, as a run would: every file of the current generation
    is carried over, the named ones (``images`` -> ``images.parquet``, ``group_metrics`` ->
    ``group_metrics.parquet``) replaced, and all recorded under one new run id (a file edited in place would
    be refused by the reader as a mixed folder, which it would be).
    """
    from audit.folder import GENERATION_FILE, current_generation, write_generation

    folder = Path(folder)
    generation = current_generation(folder)
    assert generation is not None, f"{folder} is not a folder written by imagefair"
    files: dict = {}
    for path in sorted(generation.iterdir()):
        if path.name == GENERATION_FILE or not path.is_file():
            continue
        if path.suffix == ".parquet":
            files[path.name] = pd.read_parquet(path)
        elif path.name == "audit.json":
            audit = json.loads(path.read_text("utf-8"))
            audit.pop("run_id", None)
            files[path.name] = audit
        else:
            files[path.name] = path.read_bytes()
    for name, frame in tables.items():
        files[f"{name}.parquet"] = frame
    files["audit.json"] = files.pop("audit.json")  # written last, as the writer does
    write_generation(folder, files)
    return folder
