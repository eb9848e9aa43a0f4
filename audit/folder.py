"""The audit folder (``contract.md``): the one reader and the one writer of its files.

Every view reads an audit through this module: the app (``app_pages/_state.py``), the reports
(:mod:`audit.report.render`) and the gate (:mod:`audit.gate`). :func:`load_audit_folder` returns an
:class:`AuditFolder` (``audit.json`` checked against the shipped JSON Schema, ``images.parquet``,
``group_metrics.parquet`` with cleaned text columns, the current review decisions); a missing, damaged or
off-contract file is an :class:`~audit.errors.InputError` naming the file and what to do.

:func:`write_audit_folder` writes the contract files (``run`` and ``label-noise``), each atomically, and
touches nothing else in the folder.

Folders of earlier schema versions are migrated on read (:mod:`audit.migrate`): every view sees the current
names. Nothing here computes a statistic: the review status of an image is the only thing derived (which decision
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
from audit.io.atomic import atomic_path, dumps_document, write_npy_atomic, write_parquet_atomic
from audit.migrate import migrate_audit, migrate_group_metrics
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
#: Added by issue 13 (audit-wide multiplicity); filled with empty values when reading older folders.
OPTIONAL_GROUP_METRIC_COLUMNS = ("scope", "rest_value", "p_value", "p_adjusted")
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


def _data_dir(folder: Path) -> Path:
    """Where the folder's contract files are read from: its current generation, else the folder itself
    (audits written before generations)."""
    return current_generation(folder) or folder


def load_audit_json(path: str | os.PathLike, *, validate: bool = True, _base: Path | None = None) -> dict:
    """``audit.json`` of the folder ``path``, checked against the shipped schema."""
    folder = _folder(path)
    file = folder / "audit.json"
    source = (_base or _data_dir(folder)) / "audit.json"
    if not source.is_file():
        raise InputError(ERROR_NO_AUDIT_JSON.format(path=folder), source=str(file))
    try:
        audit = json.loads(source.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(ERROR_AUDIT_JSON_CORRUPT.format(file=file, reason=error), source=str(file)) from None
    if not isinstance(audit, dict):
        raise InputError(ERROR_AUDIT_JSON_SCHEMA.format(file=file, reason="the top level is not an object"),
                         source=str(file))
    # Older versions are brought up to the current names first (audit/migrate.py), then checked as current.
    audit = migrate_audit(audit)
    if validate:
        try:
            validate_audit(audit)
        except ValueError as error:
            raise InputError(ERROR_AUDIT_JSON_SCHEMA.format(file=file, reason=error), source=str(file)) from None
    return audit


def _read_parquet(folder: Path, name: str, required, columns=None, base: Path | None = None) -> pd.DataFrame:
    file = folder / name
    source = (base or _data_dir(folder)) / name
    if not source.is_file():
        raise InputError(ERROR_NO_TABLE.format(path=folder, name=name), source=str(file))
    try:
        frame = pd.read_parquet(source, columns=columns)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise InputError(ERROR_TABLE_CORRUPT.format(file=file, reason=f"{type(error).__name__}: {' '.join(str(error).split())}"),
                         source=str(file)) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(ERROR_TABLE_COLUMNS.format(file=file, columns=", ".join(missing)), source=str(file))
    return frame


def load_group_metrics(path: str | os.PathLike, *, _base: Path | None = None) -> pd.DataFrame:
    """``group_metrics.parquet`` with the text columns as ``str`` (missing -> ``""``)."""
    frame = _read_parquet(_folder(path), "group_metrics.parquet", GROUP_METRIC_COLUMNS, base=_base)
    # Issue 13 columns (older folders lack them): no family, no p-values.
    for column in OPTIONAL_GROUP_METRIC_COLUMNS:
        if column not in frame.columns:
            frame[column] = "" if column == "scope" else float("nan")
    for column in ("attribute", "group", "class", "metric", "verdict", "scope"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["insufficient_evidence"] = frame["insufficient_evidence"].fillna(False).astype(bool)
    return migrate_group_metrics(frame)


def load_images(path: str | os.PathLike, *, columns=None, _base: Path | None = None) -> pd.DataFrame:
    """``images.parquet`` (all columns, or ``columns`` that exist)."""
    folder = _folder(path)
    base = _base or _data_dir(folder)
    if columns is not None:
        import pyarrow.parquet as pq

        try:
            available = set(pq.read_schema(base / "images.parquet").names)
        except Exception:  # noqa: BLE001 - reported by _read_parquet below
            available = set(columns)
        columns = [c for c in columns if c in available]
    return _read_parquet(folder, "images.parquet", IMAGE_COLUMNS, columns=columns, base=base)


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
    base = _data_dir(folder)  # resolved once: every file is read from the same generation
    audit = load_audit_json(folder, _base=base)
    check_one_run(folder, audit, base=base)
    group_metrics = load_group_metrics(folder, _base=base)
    images = load_images(folder, _base=base)
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
    """Write ``obj`` as ``audit.io.atomic.write_json_atomic`` does (same bytes: :func:`dumps_document`)."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(dumps_document(obj))


def write_audit_folder(out: str | Path, *, audit: dict, images: pd.DataFrame, group_metrics: pd.DataFrame,
                       probabilities, annotators: pd.DataFrame | None = None, extra_files: dict | None = None,
                       run_id: str | None = None) -> Path:
    """Write the contract files into ``out`` as one generation (all or nothing); return the folder.

    ``audit.json`` is validated against the shipped JSON Schema before anything is written. The files go to
    a new generation folder and become visible together by one atomic switch (:func:`write_generation`), so
    a reader sees either the previous run or this one, whatever is killed when. The run id is recorded in
    every file (``audit.json`` ``run_id``, Parquet metadata). A ``probabilities.npy`` of an earlier run
    disappears when this audit has none (it would contradict the new tables); every other file of the folder
    (``reviews.sqlite``, reports, caches) is kept. A second run into a folder being written is refused
    (:data:`ERROR_FOLDER_LOCKED`).

    ``probabilities``: an ``(N, K)`` array, None, or for matrices too large for memory a chunk stream (an
    object with ``shape`` ``(N, K)`` that, called, returns an iterator of ``(rows, K)`` chunks, e.g.
    :class:`audit.pipeline.labels_input.PredictionsStream`), written with :func:`write_npy_chunks_atomic`.
    ``annotators``: the ``annotators.parquet`` table of an audit with ``--annotations``; one left from an
    earlier run disappears when this audit has none (like ``probabilities.npy``).
    ``extra_files``: more files of the same generation, name -> payload (DataFrame, dict, ndarray, bytes...;
    see :func:`write_generation`).
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(ERROR_OUT_IS_FILE.format(path=folder))
    audit = json_safe(audit)
    run_id = run_id or new_run_id()
    audit = {**audit, "run_id": run_id}
    validate_audit(audit)
    audit_text = dumps_document(audit)  # encoded before any file is written: a value JSON refuses stops here
    files: dict = {}
    if probabilities is not None and not isinstance(probabilities, np.ndarray) and callable(probabilities):
        files["probabilities.npy"] = probabilities
    elif probabilities is not None:
        files["probabilities.npy"] = np.ascontiguousarray(probabilities, dtype=np.float32)
    files["images.parquet"] = images
    files["group_metrics.parquet"] = group_metrics
    if annotators is not None:
        files["annotators.parquet"] = annotators
    files.update(extra_files or {})
    files["audit.json"] = audit_text
    try:
        remove = (("probabilities.npy",) if probabilities is None else ()) + (
            ("annotators.parquet",) if annotators is None else ())
        write_generation(folder, files, run_id=run_id, remove=remove)
    except OSError as error:
        # a folder that cannot be created or written (permissions, read-only file system, a file in the way,
        # disk full): one line naming --out; the unfinished generation is removed, the previous one kept
        reason = error.strerror or type(error).__name__
        raise InputError(ERROR_OUT_NOT_WRITABLE.format(path=folder, reason=reason), source=str(folder)) from error
    return folder


# ============================================================================ generations (all-or-nothing)
#
# A run writes its files into a fresh generation folder ``DIR/.generations/<run_id>/`` and then switches one
# symbolic link, ``DIR/.current -> .generations/<run_id>``, with an atomic rename. The contract names at the
# top of the folder (``DIR/audit.json``...) are symbolic links ``-> .current/<name>``, so a reader sees one
# whole generation: the previous one or the new one, whatever is killed when and whatever disk fills up.
# Every file records the generation's run id (``audit.json`` ``run_id``, Parquet metadata
# ``imagefair.run_id``, ``generation.json`` for the rest); the reader refuses a folder whose files disagree.

GENERATIONS_DIR = ".generations"
CURRENT_LINK = ".current"
GENERATION_FILE = "generation.json"
LOCK_FILE = ".imagefair.lock"
PARQUET_RUN_ID_KEY = b"imagefair.run_id"
#: Generations kept besides the current one (a reader that resolved ``.current`` just before a switch can
#: still read the previous generation).
KEEP_PREVIOUS_GENERATIONS = 1

ERROR_FOLDER_LOCKED = ("{path} is being written by another imagefair run (process {pid}): wait for it to finish, "
                       "or give another --out folder")
ERROR_MIXED_FOLDER = ("{path} mixes files of different runs ({file} is from run {found}, audit.json from run "
                      "{expected}): the folder was written by something other than imagefair; re-run the audit")
ERROR_NOT_A_LINK = ("{path} is not a regular file or a link written by imagefair; move it away before writing "
                    "the audit here")

_HELD_LOCKS: dict[str, int] = {}


def new_run_id() -> str:
    """A fresh run id: UTC time (sortable) + 8 random hex digits."""
    import secrets
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)


class folder_lock:
    """Exclusive lock of an audit folder for one run (``DIR/.imagefair.lock``, ``fcntl.flock``).

    Re-entrant within a process. A second process asking for the lock gets :data:`ERROR_FOLDER_LOCKED` at
    once (never waits). The lock dies with its process (``kill -9`` included), so a stale lock never
    blocks. When the folder did not exist and the locked work fails, the folder is removed again (a failed
    ``run`` leaves no empty folder behind).
    """

    def __init__(self, path: str | os.PathLike):
        self.folder = Path(path)
        self._key = None
        self._created = False

    def __enter__(self) -> "folder_lock":
        import fcntl

        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(ERROR_OUT_IS_FILE.format(path=self.folder))
        key = os.path.realpath(self.folder)
        if key in _HELD_LOCKS:
            return self
        self._created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InputError(ERROR_OUT_NOT_WRITABLE.format(path=self.folder, reason=error.strerror or
                                                           type(error).__name__), source=str(self.folder)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise InputError(ERROR_FOLDER_LOCKED.format(path=self.folder, pid=pid), source=str(self.folder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        _HELD_LOCKS[key] = fd
        self._key = key
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._key is None:
            return
        fd = _HELD_LOCKS.pop(self._key)
        failed_new = kind is not None and self._created
        if failed_new:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)
        if failed_new:
            try:
                self.folder.rmdir()  # only when nothing else was written
            except OSError:
                pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_parquet_with_run_id(path: Path, frame: pd.DataFrame, run_id: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[PARQUET_RUN_ID_KEY] = run_id.encode("ascii")
    pq.write_table(table.replace_schema_metadata(metadata), path)


def _write_payload(path: Path, payload, run_id: str) -> None:
    """One file of a generation: DataFrame -> Parquet (run id in its metadata), dict -> JSON (``run_id``
    key added), ndarray -> ``.npy``, chunk stream -> ``.npy``, bytes/str -> as is, callable(path) -> its own
    writer."""
    if isinstance(payload, pd.DataFrame):
        _write_parquet_with_run_id(path, payload, run_id)
    elif isinstance(payload, dict):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(dumps_document({**payload, "run_id": run_id}))
    elif isinstance(payload, np.ndarray):
        with open(path, "wb") as handle:
            np.save(handle, payload, allow_pickle=False)
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        path.write_bytes(bytes(payload))
    elif isinstance(payload, str):
        path.write_text(payload, encoding="utf-8")
    elif hasattr(payload, "shape") and callable(payload):
        write_npy_chunks_atomic(path, payload)
    elif callable(payload):
        payload(path)
    else:
        raise TypeError(f"cannot write {type(payload).__name__} to {path.name}")
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    _write_hook(path.name)


def _write_hook(name: str) -> None:
    """Test hook (``IMAGEFAIR_TEST_PAUSE_AFTER_WRITE=seconds``): announce each file written and pause, so a
    test can ``kill -9`` the writer between two files."""
    pause = os.environ.get("IMAGEFAIR_TEST_PAUSE_AFTER_WRITE")
    if pause:
        import sys
        import time

        print(f"imagefair-test: wrote {name}", file=sys.stderr, flush=True)
        time.sleep(float(pause))


def current_generation(folder: str | os.PathLike) -> Path | None:
    """The folder's current generation (resolved ``.current``), or None for a folder without generations."""
    link = Path(folder) / CURRENT_LINK
    if not link.is_symlink():
        return None
    target = Path(os.path.realpath(link))
    return target if target.is_dir() else None


def _clean_stale(folder: Path, names) -> None:
    """Remove what a killed run left: generation folders other than the current one and the previous
    ``KEEP_PREVIOUS_GENERATIONS``, temporary links, and ``.NAME.*.tmp`` files of the contract names (from
    the per-file atomic writes of earlier versions). Called with the folder lock held."""
    import shutil

    generations = folder / GENERATIONS_DIR
    current = current_generation(folder)
    if generations.is_dir():
        others = sorted((p for p in generations.iterdir() if p.is_dir() and p != current),
                        key=lambda p: p.stat().st_mtime)
        # keep the newest previous ones that were complete (they hold generation.json)
        complete = [p for p in others if (p / GENERATION_FILE).is_file()]
        keep = set(complete[-KEEP_PREVIOUS_GENERATIONS:]) if KEEP_PREVIOUS_GENERATIONS else set()
        for path in others:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
    for path in folder.iterdir():
        name = path.name
        if name.startswith(CURRENT_LINK + ".tmp") or (name.startswith(".") and name.endswith(".tmp") and any(
                name.startswith(f".{contract}.") for contract in names)):
            try:
                path.unlink()
            except OSError:
                pass


def write_generation(out: str | os.PathLike, files: dict, *, run_id: str | None = None,
                     remove: tuple = ()) -> str:
    """Write ``files`` into ``out`` as one generation, all or nothing; return the run id.

    Parameters
    ----------
    out : path
        The folder (created when missing).
    files : dict
        File name -> payload (see :func:`_write_payload`: DataFrame, dict, ndarray, chunk stream, bytes,
        str or a callable writing the path it is given). Any file name works (other helpers' contract files
        such as ``annotators.parquet`` go through here too).
    run_id : str, optional
        Default :func:`new_run_id`.
    remove : tuple of str
        Names that must not be visible after the switch (e.g. ``probabilities.npy`` of an earlier run with a
        model when this one has none). Names of the previous generation not in ``files`` disappear anyway.

    Notes
    -----
    Order: lock; clean what killed runs left; write every file to ``.generations/<run_id>/`` (fsynced), then
    ``generation.json``; switch ``.current`` (atomic rename of a new link); make each top-level name a link
    ``-> .current/NAME`` (a legacy regular file is replaced, atomically one by one); remove top-level links of
    names no longer in the generation; drop older generations. A reader (:func:`load_audit_folder`) reads
    through ``.current`` and so sees all files of one generation.
    """
    import shutil

    folder = Path(out)
    run_id = run_id or new_run_id()
    names = tuple(files)
    for name in names:
        if not name or "/" in name or name.startswith(".") or name in (GENERATIONS_DIR, CURRENT_LINK, LOCK_FILE):
            raise ValueError(f"invalid audit folder file name {name!r}")
    with folder_lock(folder):
        _clean_stale(folder, names + tuple(remove))
        generation = folder / GENERATIONS_DIR / run_id
        generation.mkdir(parents=True, exist_ok=False)
        try:
            for name, payload in files.items():
                _write_payload(generation / name, payload, run_id)
            sizes = {name: (generation / name).stat().st_size for name in names}
            with open(generation / GENERATION_FILE, "w", encoding="utf-8") as handle:
                json.dump({"run_id": run_id, "files": sizes}, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            _fsync_dir(generation)
            _fsync_dir(generation.parent)
        except BaseException:
            shutil.rmtree(generation, ignore_errors=True)
            try:
                generation.parent.rmdir()  # only when empty (a first write failed): no leftover in a new folder
            except OSError:
                pass
            raise
        previous = current_generation(folder)
        previous_names = set()
        if previous is not None and (previous / GENERATION_FILE).is_file():
            try:
                previous_names = set(json.loads((previous / GENERATION_FILE).read_text("utf-8"))["files"])
            except (OSError, ValueError, KeyError, TypeError):
                previous_names = set()
        # the switch: one atomic rename
        temporary = folder / f"{CURRENT_LINK}.tmp-{os.getpid()}"
        temporary.unlink(missing_ok=True)
        os.symlink(f"{GENERATIONS_DIR}/{run_id}", temporary)
        os.replace(temporary, folder / CURRENT_LINK)
        _fsync_dir(folder)
        _write_hook(CURRENT_LINK)
        for name in names:
            _link_top_level(folder, name)
        for name in (previous_names | set(remove)) - set(names):
            target = folder / name
            if target.is_symlink() or (target.is_file() and name in remove):
                target.unlink(missing_ok=True)
        _fsync_dir(folder)
        _clean_stale(folder, names)
    return run_id


def _link_top_level(folder: Path, name: str) -> None:
    import stat

    target = folder / name
    wanted = f"{CURRENT_LINK}/{name}"
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_ISLNK(info.st_mode) and os.readlink(target) == wanted:
            return
        if not (stat.S_ISLNK(info.st_mode) or stat.S_ISREG(info.st_mode)):
            raise InputError(ERROR_NOT_A_LINK.format(path=target), source=str(target))
    temporary = folder / f".{name}.link.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(wanted, temporary)
    os.replace(temporary, target)


def parquet_run_id(path: str | os.PathLike) -> str | None:
    """The run id recorded in a Parquet file's metadata (None for files of earlier versions)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - damaged files are reported by the table reader
        return None
    value = metadata.get(PARQUET_RUN_ID_KEY)
    return value.decode("ascii", "replace") if value else None


def check_one_run(folder: str | os.PathLike, audit: dict, names=None, base: Path | None = None, *,
                  message: str = ERROR_MIXED_FOLDER) -> None:
    """Refuse a folder whose files come from different runs (:data:`ERROR_MIXED_FOLDER`).

    ``audit.json`` ``run_id`` is compared with the Parquet files' recorded run id and, inside a generation,
    with ``generation.json`` (whose sizes are checked too, covering ``.npy`` files). Folders of earlier
    versions (no run id anywhere) pass. ``audit`` is the folder's main JSON document (``audit.json``, or
    ``comparison.json`` of a comparison folder, which passes its own ``message`` with the same fields
    ``path, file, found, expected``).
    """
    root = Path(folder)
    expected = audit.get("run_id")
    base = base or current_generation(root) or root
    if names is None:
        names = [p.name for p in base.iterdir() if p.suffix == ".parquet"] if base != root else list(CONTRACT_FILES)
    for name in names:
        path = base / name
        if path.suffix != ".parquet" or not path.is_file():
            continue
        found = parquet_run_id(path)
        if found != expected and (found is not None or expected is not None):
            raise InputError(message.format(path=root, file=name, found=found or "unknown",
                                                       expected=expected or "unknown"), source=str(path))
    record = base / GENERATION_FILE
    if base != root and record.is_file():
        try:
            generation = json.loads(record.read_text("utf-8"))
        except (OSError, ValueError):
            generation = {}
        if generation.get("run_id") != expected:
            raise InputError(message.format(path=root, file=GENERATION_FILE,
                                                       found=generation.get("run_id") or "unknown",
                                                       expected=expected or "unknown"), source=str(record))
        for name, size in (generation.get("files") or {}).items():
            path = base / name
            if path.is_file() and path.stat().st_size != size:
                raise InputError(message.format(path=root, file=name, found="another",
                                                           expected=expected or "unknown"), source=str(path))
