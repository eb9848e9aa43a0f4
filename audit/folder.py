"""The audit folder (``contract.md``): the one reader and the one writer of its files.

Every view reads an audit through this module: the app (``app_pages/_state.py``), the reports
(:mod:`audit.report.render`) and the gate (:mod:`audit.gate`). :func:`load_audit_folder` returns an
:class:`AuditFolder` (``audit.json`` checked against the shipped JSON Schema, ``images.parquet``,
``group_metrics.parquet`` with cleaned text columns, the current review decisions); a missing, damaged or
off-contract file is an :class:`~audit.errors.InputError` naming the file and what to do.

:func:`write_audit_folder` writes the contract files (``run`` and ``label-noise``), each atomically, and
touches nothing else in the folder.

Nothing here computes a statistic: the review status of an image is the only thing derived (which decision
applies to it, contract rules).
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.io.atomic import atomic_path, write_npy_atomic, write_parquet_atomic
from audit.reviews import list_decisions, resolve_decisions
from audit.schema import validate_audit
from audit.types import json_safe

# ============================================================================ reading

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

    @property
    def analyses(self) -> dict:
        """``audit.json`` ``analyses`` (empty dict when absent)."""
        return self.audit.get("analyses") or {}

    @property
    def classes(self) -> list[str]:
        """The class order used everywhere (``audit.json`` ``classes``)."""
        return [str(c) for c in self.audit.get("classes") or []]

    @property
    def name(self) -> str:
        """The folder's name (how the app lists the audit)."""
        return self.path.name

    @property
    def folder(self) -> Path:
        """Alias of :attr:`path`."""
        return self.path


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


def load_audit_folder(path: str | os.PathLike, *, reviews: bool = True) -> AuditFolder:
    """Read and check a whole audit folder.

    Parameters
    ----------
    path : path
        The audit folder (``--out`` of ``run`` or ``label-noise``).
    reviews : bool
        Read ``reviews.sqlite`` too. The app passes False: it keeps the folder in memory and reads the
        decisions fresh on every page (they change while the audit does not).

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
    decisions = None
    if reviews:
        try:
            decisions = load_reviews(folder, images)
        except (sqlite3.Error, pd.errors.DatabaseError) as error:
            notes.append(NOTE_REVIEWS_UNREADABLE.format(reason=error))
    return AuditFolder(path=folder, audit=audit, group_metrics=group_metrics, images=images, reviews=decisions,
                       notes=tuple(notes))


# ============================================================================ writing

ERROR_OUT_IS_FILE = "--out {path} is a file; give a folder (it is created if missing)"
ERROR_OUT_NOT_WRITABLE = ("--out {path}: cannot write the audit folder ({reason}); give a folder you can write to "
                          "(it is created if missing)")
ERROR_STREAM_SHAPE = ("probabilities stream: shape must be (N, K) with N >= 0 and K >= 1, got {shape!r}; give an "
                      "object with .shape and a call returning (rows, K) chunks, or an array")
ERROR_STREAM_CHUNK = ("probabilities stream: chunk {chunk} has shape {found}; expected 2-D chunks with {k} columns "
                      "(the stream's declared shape is {shape})")
ERROR_STREAM_ROWS = ("probabilities stream gave {found} rows but declared {expected}; probabilities.npy was not "
                     "written (the previous one, if any, is kept)")

CONTRACT_FILES = ("audit.json", "images.parquet", "group_metrics.parquet", "probabilities.npy", "annotators.parquet")


def write_npy_chunks_atomic(path: str | Path, probabilities) -> None:
    """Write a float32 ``.npy`` from a chunk stream, atomically, holding one chunk at a time.

    ``probabilities`` has ``shape`` ``(N, K)`` and, called with no arguments, returns an iterator over
    consecutive ``(rows, K)`` chunks (any real dtype; cast to float32). The header is the one ``numpy.save``
    writes for a C-ordered float32 ``(N, K)`` array, so the file is byte-identical to
    ``numpy.save(path, array.astype(numpy.float32))``. The data go to a temporary file in the same folder that
    is renamed into place only when exactly ``N`` rows were written; otherwise it is deleted and a
    ``ValueError`` raised.
    """
    try:
        n_rows, n_columns = (int(v) for v in probabilities.shape)
    except (TypeError, ValueError):
        raise ValueError(ERROR_STREAM_SHAPE.format(shape=getattr(probabilities, "shape", None))) from None
    if n_rows < 0 or n_columns < 1:
        raise ValueError(ERROR_STREAM_SHAPE.format(shape=(n_rows, n_columns)))
    dtype = np.dtype(np.float32)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n_rows, n_columns)}
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            written = 0
            for index, chunk in enumerate(probabilities()):
                chunk = np.asarray(chunk)
                if chunk.ndim != 2 or chunk.shape[1] != n_columns:
                    raise ValueError(ERROR_STREAM_CHUNK.format(chunk=index, found=chunk.shape, k=n_columns,
                                                               shape=(n_rows, n_columns)))
                written += chunk.shape[0]
                if written > n_rows:
                    raise ValueError(ERROR_STREAM_ROWS.format(found=f"more than {n_rows}", expected=n_rows))
                handle.write(np.ascontiguousarray(chunk, dtype=dtype).data)
            if written != n_rows:
                raise ValueError(ERROR_STREAM_ROWS.format(found=written, expected=n_rows))


def write_json_streamed_atomic(path: str | Path, obj) -> None:
    """Write ``obj`` as ``audit.io.atomic.write_json_atomic`` does (same bytes), without building the text.

    ``json.dumps(..., indent=2)`` joins millions of small pieces for the K x K matrices of a 1000-class audit
    (a 60 MB file, some 300 MB of pieces at once); ``json.dump`` hands them to the file as they come.
    """
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            json.dump(obj, handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")


def write_audit_folder(out: str | Path, *, audit: dict, images: pd.DataFrame, group_metrics: pd.DataFrame,
                       probabilities, annotators: pd.DataFrame | None = None) -> Path:
    """Write the contract files into ``out``; return the folder.

    ``audit.json`` is validated against the shipped JSON Schema before anything is written and is written
    last, so a reader that sees a new ``audit.json`` also sees the matching tables. A ``probabilities.npy``
    left from an earlier run is removed when this audit has none (it would contradict the new tables);
    every other file in the folder is kept.

    ``probabilities``: an ``(N, K)`` array, None, or for matrices too large for memory a chunk stream (an
    object with ``shape`` ``(N, K)`` that, called, returns an iterator of ``(rows, K)`` chunks, e.g.
    :class:`audit.pipeline.labels_input.PredictionsStream`), written with :func:`write_npy_chunks_atomic`.
    ``annotators``: the ``annotators.parquet`` table of an audit with ``--annotations``; one left from an
    earlier run is removed when this audit has none (like ``probabilities.npy``).
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(ERROR_OUT_IS_FILE.format(path=folder))
    audit = json_safe(audit)
    validate_audit(audit)
    json.dumps(audit, allow_nan=False)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_contract_files(folder, audit=audit, images=images, group_metrics=group_metrics,
                              probabilities=probabilities, annotators=annotators)
    except OSError as error:
        # a folder that cannot be created or written (permissions, read-only file system, a file in the way,
        # disk full): one line naming --out; atomic writes leave no temporary file behind
        reason = error.strerror or type(error).__name__
        raise InputError(ERROR_OUT_NOT_WRITABLE.format(path=folder, reason=reason), source=str(folder)) from error
    return folder


def _write_contract_files(folder: Path, *, audit: dict, images: pd.DataFrame, group_metrics: pd.DataFrame,
                          probabilities, annotators: pd.DataFrame | None = None) -> None:
    if annotators is not None:
        write_parquet_atomic(folder / "annotators.parquet", annotators)
    else:
        (folder / "annotators.parquet").unlink(missing_ok=True)
    if probabilities is not None and not isinstance(probabilities, np.ndarray) and callable(probabilities):
        write_npy_chunks_atomic(folder / "probabilities.npy", probabilities)
    elif probabilities is not None:
        write_npy_atomic(folder / "probabilities.npy", np.ascontiguousarray(probabilities, dtype=np.float32))
    else:
        (folder / "probabilities.npy").unlink(missing_ok=True)
    write_parquet_atomic(folder / "images.parquet", images)
    write_parquet_atomic(folder / "group_metrics.parquet", group_metrics)
    write_json_streamed_atomic(folder / "audit.json", audit)
