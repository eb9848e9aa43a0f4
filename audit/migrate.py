"""Bring audit folders written by earlier versions up to the current ``schema_version`` on read.

Called by the one folder reader (:mod:`audit.folder`), so the app, the reports, the gate and ``compare`` all
see the current names; the files themselves are never rewritten. Each step is a pure function of what the
old folder holds: it renames, and derives a value only where the old files hold it exactly (a flagged
fraction from its counts, an error rate as one minus an accuracy on the same images).

1.x -> 2.0 (issue 13, "two names for two things"):

* ``group_metrics.parquet``: metric ``estimated_noise_rate`` (the flagged fraction) is renamed
  ``label_disagreement_rate``; ``model_error_rate`` rows are added beside it where the old table has the
  model's accuracy on the same images (``1 - accuracy`` for group rows, ``1 - recall`` for per-class rows,
  interval flipped, no test).
* ``audit.json``: ``metrics`` renamed the same way; ``analyses.label_noise`` gets
  ``label_disagreement_rate`` (``n_label_issues / n_images`` with its Wilson interval, per class too) in
  place of ``noise_rate`` (which was ``1 - trace(joint)``, another number under the same name), and
  ``model_error_rate`` from the overall accuracy when the probabilities were the model's; ``probe_cross_check``
  becomes ``alternatives.probe``; the label-noise finding is re-said in the current words. ``migrated_from`` records the version read.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from audit.analysis._stats import wilson_interval
from audit.analysis.label_noise import (ERROR_METRIC_NAME, METRIC_DESCRIPTIONS, METRIC_NAME, NOISE_RATE_CI_METHOD,
                                        OLD_METRIC_NAME)
from audit.schema import SCHEMA_VERSION

#: Findings of 1.x audits about label noise, recognised by these starts and replaced on read.
OLD_FINDING_STARTS = ("An estimated ", "The model behind the label-noise estimate")
OLD_FINDING_MARKERS = ("of labels are wrong", "label-noise estimate")
#: Sources whose probabilities are the audited model's (its accuracy is then the scorer's error).
MODEL_SOURCES = ("model", "predictions")


def _major(version) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def needs_migration(audit: dict) -> bool:
    """True for an ``audit.json`` of an older major version than :data:`audit.schema.SCHEMA_VERSION`."""
    return _major(audit.get("schema_version", "1.0")) < _major(SCHEMA_VERSION)


def _old_label_finding(text) -> bool:
    text = str(text)
    return text.startswith(OLD_FINDING_STARTS) and any(marker in text for marker in OLD_FINDING_MARKERS)


def _rate_and_interval(count, n, confidence_level):
    if not n:
        return None, [None, None]
    low, high = wilson_interval(int(count), int(n), confidence_level=confidence_level)
    return float(count) / float(n), [float(low), float(high)]


def _overall_accuracy(audit: dict):
    overall = ((audit.get("analyses") or {}).get("group_performance") or {}).get("overall") or {}
    accuracy = overall.get("accuracy")
    if isinstance(accuracy, dict) and accuracy.get("value") is not None:
        low, high = accuracy.get("ci_low"), accuracy.get("ci_high")
        interval = [None if high is None else 1 - high, None if low is None else 1 - low]
        return 1 - float(accuracy["value"]), interval
    return None, [None, None]


def migrate_audit(audit: dict) -> dict:
    """``audit.json`` of any supported version, as the current version (a new dict; the input is untouched)."""
    if not isinstance(audit, dict) or not needs_migration(audit):
        return audit
    from audit.findings import disagreement_sentence

    audit = copy.deepcopy(audit)
    old_version = str(audit.get("schema_version", "1.0"))
    metrics = audit.get("metrics")
    if isinstance(metrics, dict) and OLD_METRIC_NAME in metrics:
        metrics.pop(OLD_METRIC_NAME)
        metrics[METRIC_NAME] = dict(METRIC_DESCRIPTIONS[METRIC_NAME])
        metrics[ERROR_METRIC_NAME] = dict(METRIC_DESCRIPTIONS[ERROR_METRIC_NAME])
    section = (audit.get("analyses") or {}).get("label_noise")
    if isinstance(section, dict) and "label_disagreement_rate" not in section:
        level = float(section.get("confidence_level") or 0.95)
        n = section.get("n_images") or (audit.get("dataset") or {}).get("n_images")
        flagged = int(section.get("n_label_issues") or 0)
        rate, interval = _rate_and_interval(flagged, n, level)
        section["label_disagreement_rate"] = rate
        section["label_disagreement_rate_ci"] = interval
        section["label_disagreement_rate_ci_method"] = NOISE_RATE_CI_METHOD
        for key in ("noise_rate", "noise_rate_ci", "noise_rate_ci_method"):
            section.pop(key, None)
        if str(section.get("source") or "model") in MODEL_SOURCES:
            section["model_error_rate"], section["model_error_rate_ci"] = _overall_accuracy(audit)
        else:
            section["model_error_rate"], section["model_error_rate_ci"] = None, [None, None]
        for row in section.get("per_class") or []:
            if not isinstance(row, dict):
                continue
            rate, (low, high) = _rate_and_interval(row.get("n_label_issues") or 0, row.get("n"), level)
            row["label_disagreement_rate"], row["ci_low"], row["ci_high"] = rate, low, high
            if "n_mislabelled" in row:
                row["confident_joint_off_diagonal"] = row.pop("n_mislabelled")
            row.pop("noise_rate", None)
            row.setdefault("model_error_rate", None)
        cross = section.pop("probe_cross_check", None)
        if isinstance(cross, dict):
            n_probe = cross.get("n_label_issues")
            section["alternatives"] = {"probe": {
                "label_disagreement_rate": float(n_probe) / float(n) if n and n_probe is not None else None,
                "model_error_rate": None, "n_label_issues": n_probe,
                "description": cross.get("description", "")}}
        sentence = disagreement_sentence(section)
        for key in ("findings", "finding_details"):
            entries = audit.get(key)
            if not isinstance(entries, list):
                continue
            kept = []
            replaced = False
            for entry in entries:
                text = entry.get("text") if isinstance(entry, dict) else entry
                if not _old_label_finding(text):
                    kept.append(entry)
                elif not replaced and sentence:
                    replaced = True
                    kept.append({**entry, "text": sentence} if isinstance(entry, dict) else sentence)
            audit[key] = kept
    audit["migrated_from"] = old_version
    audit["schema_version"] = SCHEMA_VERSION
    return audit


def migrate_group_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """``group_metrics.parquet`` of any supported version with the current metric names (a new frame).

    Works from the table alone (the gate reads it on its own): a 1.x table is recognised by its
    ``estimated_noise_rate`` rows.
    """
    if frame.empty or OLD_METRIC_NAME not in set(frame["metric"].astype(str)):
        return frame
    frame = frame.copy()
    frame.loc[frame["metric"] == OLD_METRIC_NAME, "metric"] = METRIC_NAME
    if (frame["metric"] == ERROR_METRIC_NAME).any():
        return frame
    key = ["attribute", "group", "class"]
    rates = frame[frame["metric"] == METRIC_NAME]
    # The model's accuracy on the same images: accuracy rows for groups, recall rows for (all, class) rows.
    accuracy = frame[((frame["metric"] == "accuracy") & (frame["class"] == ""))
                     | ((frame["metric"] == "recall") & (frame["class"] != ""))]
    accuracy = accuracy.drop_duplicates(key)[key + ["n", "value", "ci_low", "ci_high"]]
    paired = rates[key + ["n", "insufficient_evidence"]].merge(accuracy, on=key, how="inner", suffixes=("", "_acc"))
    paired = paired[paired["n"] == paired["n_acc"]]
    if paired.empty:
        return frame
    errors = pd.DataFrame({
        "attribute": paired["attribute"], "group": paired["group"], "class": paired["class"], "n": paired["n"],
        "metric": ERROR_METRIC_NAME, "value": 1 - paired["value"].astype(float),
        "ci_low": 1 - paired["ci_high"].astype(float), "ci_high": 1 - paired["ci_low"].astype(float),
        "insufficient_evidence": paired["insufficient_evidence"].astype(bool)})
    errors["verdict"] = np.where(errors["insufficient_evidence"], "insufficient_data", "")
    for column in frame.columns:
        if column not in errors.columns:
            errors[column] = "" if column == "scope" else np.nan
    return pd.concat([frame, errors[frame.columns]], ignore_index=True)
