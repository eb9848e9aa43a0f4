"""``label-noise``: an audit folder from labels and predicted probabilities alone (no images, no model).

For users who already have out-of-sample probabilities (e.g. from cross-validation). The folder follows the
contract: sections that need images (pixel attributes, data quality) are absent; class distribution,
attribute distribution, associations, label noise and per-group performance of the given predictions are
computed as in a full run.
"""
from __future__ import annotations

import hashlib
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from audit import __version__
from audit.config import AuditConfig
from audit.errors import InputError
from audit.types import Dataset

ERROR_LABELS_FILE_MISSING = "labels file {path} does not exist"
ERROR_LABELS_COLUMNS = "labels file {path}: expected columns id,label; found {columns}"
ERROR_LABELS_NOT_INTEGER = ("labels file {path}: a .npy labels file must hold integer class indices (shape (N,)), "
                            "got dtype {dtype} shape {shape}")
ERROR_LABEL_OUT_OF_RANGE = ("labels file {path}, row {row}: class index {value} is outside 0..{last} "
                            "(the predictions have {k} columns)")
ERROR_UNKNOWN_LABEL = ("labels file {path}, row {row}: label {value!r} is not a known class ({known}); "
                       "fix the label or give the class list with --classes")
ERROR_EMPTY_LABEL = "labels file {path}, row {row}: empty label"
ERROR_DUPLICATE_ID = "labels file {path}: id {id!r} appears in rows {first} and {second}; ids must be unique"
ERROR_CLASSES_FILE = "classes file {path}: {problem}"
ERROR_NO_CLASSES = ("cannot tell the class names: give --classes FILE (one class a line) or a predictions "
                    "CSV/Parquet whose columns are the class names")
ERROR_ATTRIBUTES_NO_ID = "attributes file {path}: needs an id column to join with the labels; found {columns}"
ERROR_ROWS_DIFFER = ("predictions file {predictions} has {n_predictions} rows but labels file {labels} has "
                     "{n_labels}: a .npy predictions file must have one row per label, in the same order")


def _read_table(path: str) -> pd.DataFrame:
    from audit.io.tables import read_table

    return read_table(path)


def load_classes_file(path: str) -> tuple[str, ...]:
    """One class name a line; blank lines ignored; names must be unique."""
    file = Path(path)
    if not file.is_file():
        raise InputError(ERROR_CLASSES_FILE.format(path=path, problem="file does not exist"), source=path)
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise InputError(ERROR_CLASSES_FILE.format(path=path, problem="fewer than two class names"), source=path)
    seen = set()
    for name in names:
        if name in seen:
            raise InputError(ERROR_CLASSES_FILE.format(path=path, problem=f"class {name!r} is listed twice"),
                             source=path)
        seen.add(name)
    return tuple(names)


def _predictions_classes(path: str) -> tuple[str, ...] | None:
    if Path(path).suffix.lower() == ".npy":
        return None
    frame = _read_table(path)
    return tuple(str(c) for c in frame.columns if c not in ("id", "path"))


def load_labels(path: str, *, classes: tuple[str, ...] | None, n_predictions_columns: int | None) -> pd.DataFrame:
    """Read labels (NPY of indices or CSV/Parquet id,label) into a table with ``id`` and ``label`` (names)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(ERROR_LABELS_FILE_MISSING.format(path=path), source=path)
    if file.suffix.lower() == ".npy":
        try:
            values = np.load(file, allow_pickle=False)
        except ValueError as error:
            raise InputError(ERROR_LABELS_NOT_INTEGER.format(path=path, dtype="object", shape="?"), source=path) from error
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise InputError(ERROR_LABELS_NOT_INTEGER.format(path=path, dtype=values.dtype, shape=values.shape),
                             source=path)
        k = len(classes) if classes else n_predictions_columns
        bad = np.flatnonzero((values < 0) | (values >= k))
        if len(bad):
            raise InputError(ERROR_LABEL_OUT_OF_RANGE.format(path=path, row=int(bad[0]), value=int(values[bad[0]]),
                                                             last=k - 1, k=k), source=path, row=int(bad[0]))
        names = classes or tuple(str(i) for i in range(k))
        return pd.DataFrame({"id": [str(i) for i in range(len(values))],
                             "label": np.array(names, dtype=object)[values]})
    frame = _read_table(path)
    if "id" not in frame.columns or "label" not in frame.columns:
        raise InputError(ERROR_LABELS_COLUMNS.format(path=path, columns=", ".join(map(str, frame.columns))),
                         source=path)
    ids = frame["id"].astype(str)
    duplicated = ids[ids.duplicated(keep=False)]
    if len(duplicated):
        rows = list(duplicated.index[:2])
        raise InputError(ERROR_DUPLICATE_ID.format(path=path, id=duplicated.iloc[0], first=rows[0], second=rows[1]),
                         source=path, column="id")
    labels = frame["label"]
    known = set(classes or ())
    out = []
    for row, value in enumerate(labels):
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
            raise InputError(ERROR_EMPTY_LABEL.format(path=path, row=row), source=path, row=row, column="label")
        text = str(value).strip()
        if text not in known and classes and text.lstrip("-").isdigit() and 0 <= int(text) < len(classes):
            text = classes[int(text)]  # an index into the class list
        if classes and text not in known:
            preview = ", ".join(list(classes)[:10]) + (", ..." if len(classes) > 10 else "")
            raise InputError(ERROR_UNKNOWN_LABEL.format(path=path, row=row, value=text, known=preview), source=path,
                             row=row, column="label")
        out.append(text)
    return pd.DataFrame({"id": ids.to_numpy(dtype=object), "label": out})


def run_label_noise_audit(*, labels_file: str, predictions_file: str, classes_file: str | None = None,
                          attributes_file: str | None = None, predictions_kind: str = "auto",
                          min_group_size: int = 30, policy_file: str | None = None, seed: int = 0):
    """Build the audit of a labels + probabilities pair; returns an :class:`~audit.pipeline.AuditResult`."""
    from audit.analyses import run_analyses
    from audit.model.predictions import load_predictions
    from audit.pipeline import SCHEMA_VERSION, AuditResult, _AnalysisRunner, _sha256_file, package_versions

    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    classes = load_classes_file(classes_file) if classes_file else _predictions_classes(predictions_file)
    n_columns = None
    if classes is None:
        if not Path(predictions_file).is_file():
            raise InputError(f"predictions file {predictions_file} does not exist", source=predictions_file)
        array = np.load(predictions_file, mmap_mode="r", allow_pickle=False)
        n_columns = int(array.shape[1]) if array.ndim == 2 else None
        if n_columns is None:
            raise InputError(ERROR_NO_CLASSES)
    table = load_labels(labels_file, classes=classes, n_predictions_columns=n_columns)
    if classes is None:
        classes = tuple(str(i) for i in range(n_columns))
    table.insert(0, "row", np.arange(len(table)))
    table["path"] = ""
    group_attributes: list[str] = []
    metadata: list[str] = []
    if attributes_file:
        attributes = _read_table(attributes_file)
        if "id" not in attributes.columns:
            raise InputError(ERROR_ATTRIBUTES_NO_ID.format(path=attributes_file,
                                                           columns=", ".join(map(str, attributes.columns))),
                             source=attributes_file)
        attributes = attributes.astype(object).where(attributes.notna(), None)
        attributes["id"] = attributes["id"].astype(str)
        attributes = attributes.drop_duplicates("id")
        extra = [c for c in attributes.columns if c not in ("id", "label", "path", "row", "split")]
        table = table.merge(attributes[["id"] + extra], on="id", how="left")
        for column in extra:
            table[column] = table[column].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                              else str(v))
            (group_attributes if table[column].nunique() <= 50 else metadata).append(column)
    loaded = load_predictions(predictions_file, table=table, classes=classes, kind=predictions_kind, root=None)
    probabilities = np.asarray(loaded.probabilities, dtype=np.float32)
    dataset = Dataset(table=table, classes=classes, group_attributes=tuple(group_attributes),
                      metadata_columns=tuple(metadata), root=Path(labels_file).resolve().parent,
                      source=str(labels_file), kind="labels", class_order_source="classes file" if classes_file
                      else "predictions columns")
    config = AuditConfig(data=labels_file, predictions=predictions_file, predictions_kind=predictions_kind,
                         min_group_size=min_group_size, policy_file=policy_file, seed=seed,
                         attributes_file=attributes_file)
    config.check()
    runner = _AnalysisRunner(lambda *a: None)
    analyses = run_analyses(table, classes=classes, dataset=dataset, probabilities=probabilities, embeddings=None,
                            config=config, runner=runner, progress=lambda *a: None)
    finished = datetime.now(timezone.utc)
    if "label_noise" in analyses.sections:
        analyses.sections["label_noise"]["source"] = "predictions"
        analyses.sections["label_noise"]["source_description"] = "the probabilities given with --predictions"
    images = analyses.images.drop(columns=["path"]).copy()
    images.insert(1, "path", None)
    data_hash = hashlib.sha256(("\n".join(f"{i}\t{l}" for i, l in zip(table["id"], table["label"]))).encode()).hexdigest()
    model_sha = _sha256_file(predictions_file)
    audit = {
        "schema_version": SCHEMA_VERSION, "tool": {"name": "imagefair", "version": __version__},
        "kind": "label-noise", "classes": list(classes),
        "dataset": {"source": str(Path(labels_file).resolve()), "kind": "labels", "root": None,
                    "n_images": int(len(table)), "n_rows": int(len(table)), "n_skipped": 0,
                    "n_classes": len(classes), "class_order_source": dataset.class_order_source,
                    "label_column": "label", "splits": [], "group_attributes": group_attributes,
                    "pixel_attributes": [], "constant_attributes": analyses.constant_attributes,
                    "metadata_columns": metadata},
        "model": {"source": str(Path(predictions_file).resolve()), "kind": "predictions", "sha256": model_sha,
                  "predictions_kind": loaded.kind_used, "message": loaded.message, "has_embeddings": False,
                  "from_cache": False},
        "metrics": analyses.metrics, "analyses": analyses.sections, "errors": runner.errors,
        "findings": [f["text"] for f in analyses.findings], "finding_details": analyses.findings,
        "provenance": {"data_hash": data_hash, "model_sha256": model_sha, "preprocessing": None,
                       "settings": config.settings(), "seed": seed, "min_group_size": min_group_size,
                       "versions": package_versions(), "platform": platform.platform(),
                       "command": " ".join(sys.argv), "started_at": started.isoformat(timespec="seconds"),
                       "finished_at": finished.isoformat(timespec="seconds"),
                       "duration_s": round(time.perf_counter() - clock, 3)},
        "skipped": [],
    }
    if policy_file:
        from audit.policy import evaluate_policy, load_policy

        audit["verdict"] = evaluate_policy(audit, analyses.group_metrics, load_policy(policy_file)).to_dict()
    return AuditResult(audit=audit, images=images, group_metrics=analyses.group_metrics,
                       probabilities=probabilities)
