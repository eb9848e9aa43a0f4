"""Read an audit folder (``audit.json``, the Parquet tables, optional ``reviews.sqlite``) for the views.

The gate, the reports and the app read audits through these functions; a missing or corrupt folder is an
:class:`~audit.errors.InputError` naming the file and what to do. Nothing here computes a statistic: the review
status of an image is the only thing derived (which decision applies to it, contract rules).
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from audit.errors import InputError

ERROR_NOT_A_FOLDER = ("audit folder {path} does not exist or is not a folder: give the --out folder of "
                      "`python -m audit run` (or `label-noise`)")
ERROR_NO_AUDIT_JSON = ("{path} has no audit.json, so it is not an audit folder (or the audit did not finish): run "
                       "`python -m audit run ... --out {path}` first")
ERROR_AUDIT_JSON_CORRUPT = "{file} cannot be read as JSON ({reason}): the file is damaged; re-run the audit"
ERROR_AUDIT_JSON_SCHEMA = "{file} is not a valid audit ({reason}): re-run the audit with this version of imagefair"
ERROR_NO_TABLE = "{path} has no {name}: the audit folder is incomplete; re-run the audit"
ERROR_TABLE_CORRUPT = "{file} cannot be read as Parquet ({reason}): the file is damaged; re-run the audit"
ERROR_TABLE_COLUMNS = "{file} lacks the columns {columns}: it does not follow the contract; re-run the audit"
ERROR_TABLE_ROWS = ("{file} has {found} rows but audit.json counts {expected} images: the folder mixes files of "
                    "different runs or was edited; re-run the audit")
NOTE_REVIEWS_UNREADABLE = "reviews.sqlite exists but cannot be read ({reason}); review status is not shown"

GROUP_METRIC_COLUMNS = ("attribute", "group", "class", "n", "metric", "value", "ci_low", "ci_high",
                        "insufficient_evidence", "verdict")
IMAGE_COLUMNS = ("id", "path", "label")
REVIEW_DECISIONS = ("label_wrong", "label_correct", "unsure")


@dataclass(frozen=True)
class AuditFolder:
    """Everything a report shows, as read from the folder.

    Attributes
    ----------
    path : Path
    audit : dict
        ``audit.json``.
    group_metrics : DataFrame
        ``group_metrics.parquet`` (string columns with ``""`` for missing).
    images : DataFrame
        ``images.parquet``.
    reviews : DataFrame or None
        Per reviewed image: ``id, decision`` (``label_wrong | label_correct | unsure | conflict``),
        ``new_label, reviewers, decided_at``; only decisions whose ``content_hash`` matches the image's.
        None when there is no ``reviews.sqlite``.
    notes : tuple of str
        Problems with optional files (e.g. an unreadable ``reviews.sqlite``).
    """

    path: Path
    audit: dict
    group_metrics: pd.DataFrame
    images: pd.DataFrame
    reviews: pd.DataFrame | None = None
    notes: tuple = field(default_factory=tuple)


def _folder(path) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(ERROR_NOT_A_FOLDER.format(path=folder), source=str(folder))
    return folder


def load_audit_json(path: str | os.PathLike, *, validate: bool = True) -> dict:
    """``audit.json`` of the folder ``path``, checked against the shipped schema."""
    folder = _folder(path)
    file = folder / "audit.json"
    if not file.is_file():
        raise InputError(ERROR_NO_AUDIT_JSON.format(path=folder), source=str(file))
    try:
        audit = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(ERROR_AUDIT_JSON_CORRUPT.format(file=file, reason=error), source=str(file)) from None
    if not isinstance(audit, dict):
        raise InputError(ERROR_AUDIT_JSON_SCHEMA.format(file=file, reason="the top level is not an object"),
                         source=str(file))
    if validate:
        from audit.schema import validate_audit

        try:
            validate_audit(audit)
        except ValueError as error:
            raise InputError(ERROR_AUDIT_JSON_SCHEMA.format(file=file, reason=error), source=str(file)) from None
    return audit


def _read_parquet(folder: Path, name: str, required, columns=None) -> pd.DataFrame:
    file = folder / name
    if not file.is_file():
        raise InputError(ERROR_NO_TABLE.format(path=folder, name=name), source=str(file))
    try:
        frame = pd.read_parquet(file, columns=columns)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise InputError(ERROR_TABLE_CORRUPT.format(file=file, reason=f"{type(error).__name__}: {' '.join(str(error).split())}"),
                         source=str(file)) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(ERROR_TABLE_COLUMNS.format(file=file, columns=", ".join(missing)), source=str(file))
    return frame


def load_group_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """``group_metrics.parquet`` with the text columns as ``str`` (missing -> ``""``)."""
    frame = _read_parquet(_folder(path), "group_metrics.parquet", GROUP_METRIC_COLUMNS)
    for column in ("attribute", "group", "class", "metric", "verdict"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["insufficient_evidence"] = frame["insufficient_evidence"].fillna(False).astype(bool)
    return frame


def load_images(path: str | os.PathLike, *, columns=None) -> pd.DataFrame:
    """``images.parquet`` (all columns, or ``columns`` that exist)."""
    folder = _folder(path)
    if columns is not None:
        import pyarrow.parquet as pq

        try:
            available = set(pq.read_schema(folder / "images.parquet").names)
        except Exception:  # noqa: BLE001 - reported by _read_parquet below
            available = set(columns)
        columns = [c for c in columns if c in available]
    return _read_parquet(folder, "images.parquet", IMAGE_COLUMNS, columns=columns)


def load_reviews(path: str | os.PathLike, images: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Current review decision of each reviewed image, or None without ``reviews.sqlite``.

    A decision applies to an image while its ``content_hash`` matches (contract). Per image the latest
    decision of each reviewer counts; reviewers who disagree give ``decision = "conflict"``.

    Raises
    ------
    sqlite3.Error
        The file exists but cannot be read (:func:`load_audit_folder` turns this into a note).
    """
    file = Path(path) / "reviews.sqlite"
    if not file.is_file():
        return None
    # One rule for the app, the CSV export and the reports: audit.reviews decides what counts and what
    # is a conflict (different decisions, or different new labels, from different reviewers).
    from audit.reviews import list_decisions, resolve_decisions

    columns = ["id", "decision", "new_label", "reviewers", "decided_at"]
    decisions = list_decisions(path, current_only=True)
    if decisions.empty:
        return pd.DataFrame(columns=columns)
    decisions["id"] = decisions["id"].astype(str)
    if images is not None and "content_hash" in images.columns:
        current = dict(zip(images["id"].astype(str), images["content_hash"].astype(str)))
        decisions = decisions[[current.get(i) == str(h) for i, h in zip(decisions["id"], decisions["content_hash"])]]
    resolved = resolve_decisions(decisions)
    resolved["reviewers"] = resolved["reviewers"].str.replace("; ", ", ", regex=False)
    return resolved[columns].reset_index(drop=True)


def load_audit_folder(path: str | os.PathLike) -> AuditFolder:
    """Read and check a whole audit folder.

    Raises
    ------
    InputError
        The folder, ``audit.json`` or a Parquet table is missing, damaged or off-contract.
    """
    folder = _folder(path)
    audit = load_audit_json(folder)
    group_metrics = load_group_metrics(folder)
    images = load_images(folder)
    expected = (audit.get("dataset") or {}).get("n_images")
    if isinstance(expected, int) and not isinstance(expected, bool) and len(images) != expected:
        file = folder / "images.parquet"
        raise InputError(ERROR_TABLE_ROWS.format(file=file, found=len(images), expected=expected), source=str(file))
    notes = []
    try:
        reviews = load_reviews(folder, images)
    except (sqlite3.Error, pd.errors.DatabaseError) as error:
        reviews = None
        notes.append(NOTE_REVIEWS_UNREADABLE.format(reason=error))
    return AuditFolder(path=folder, audit=audit, group_metrics=group_metrics, images=images, reviews=reviews,
                       notes=tuple(notes))
