"""Review decisions on flagged images: ``reviews.sqlite`` in the audit folder and the corrected-labels CSV.

The store follows ``contract.md``: table ``decisions(id, content_hash, reviewer, decision, new_label, note,
decided_at)`` in a SQLite file in WAL mode, where ``id`` is the image's ``id`` in ``images.parquet`` and
``content_hash`` the sha256 of its bytes when it was reviewed. It is an append-only log (row order = SQLite
``rowid``):

- every call of :func:`record_decision` adds one row, so nothing a reviewer said is ever lost;
- a reviewer's *current* decision on an image is their latest row for its ``id`` and ``content_hash`` (a
  reviewer may change their mind; their earlier rows stay in the log);
- when the current decisions of different reviewers differ (``decision`` or ``new_label``), the image is
  in *conflict*: both decisions are kept and shown, neither wins;
- a decision applies to an image while the image's ``content_hash`` matches (an edited file is a new
  image and needs a new review). Decisions survive re-runs of the audit because ``run`` never deletes
  ``reviews.sqlite``.

Concurrency: each write is one ``BEGIN IMMEDIATE`` transaction with a generous busy timeout, so several
processes (app sessions, scripts) can write at once without losing a decision.
"""
from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from audit.analysis._stats import wilson_interval
from audit.errors import InputError
from audit.io.csv_export import to_safe_csv as _to_safe_csv

#: File name of the store inside the audit folder.
REVIEWS_FILE = "reviews.sqlite"
#: Allowed decisions (contract words).
DECISIONS = ("label_wrong", "label_correct", "unsure")
#: The ``decision`` of an image whose reviewers disagree (corrected-labels CSV).
CONFLICT = "conflict"
#: Columns of the ``decisions`` table, in order.
DECISION_COLUMNS = ("id", "content_hash", "reviewer", "decision", "new_label", "note", "decided_at")
#: Columns of the corrected-labels CSV, in order.
CORRECTED_LABEL_COLUMNS = ("id", "path", "label", "corrected_label", "decision", "reviewers", "decided_at", "notes")
#: Seconds a writer waits for another writer's lock before giving up.
BUSY_TIMEOUT_S = 30.0

ERROR_NO_DECISION = "choose a decision (label wrong, label correct or unsure) before saving: nothing is pre-selected"
ERROR_DECISION = "decision must be one of label_wrong, label_correct, unsure; got {value!r}"
ERROR_REVIEWER = "give a reviewer name (it is recorded with the decision); got an empty name"
ERROR_NEW_LABEL_MISSING = "decision label_wrong needs the new label: choose the class the image really shows"
ERROR_NEW_LABEL_UNKNOWN = "new label {value!r} is not a class of this audit; choose one of: {classes}"
ERROR_NEW_LABEL_UNEXPECTED = "only decision label_wrong takes a new label; got new label {value!r} with {decision}"
ERROR_CONTENT_HASH = "content_hash must be the image's sha256 (64 hex digits); got {value!r}"
ERROR_IMAGE_ID = "give the image's id (the id column of images.parquet); got an empty id"
ERROR_NOT_A_FOLDER = "{path} is not an audit folder (no such directory); pick an existing audit"
ERROR_REVIEWS_LOCKED = ("reviews.sqlite in {folder} stayed locked by another writer for {seconds:g} s; the decision was "
                        "NOT saved (it is still in the form): save it again in a moment")
ERROR_REVIEWS_DAMAGED = ("reviews.sqlite in {folder} cannot be used ({reason}); the decision was NOT saved (it is still "
                         "in the form). Move the damaged file away (a new one is created) or restore it from a backup")
ERROR_IMAGES_COLUMNS = "the images table lacks the column(s) {columns} needed to export corrected labels"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('label_wrong', 'label_correct', 'unsure')),
    new_label TEXT,
    note TEXT,
    decided_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_image ON decisions (id, content_hash);
"""


def _database(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(ERROR_NOT_A_FOLDER.format(path=folder), source=str(folder))
    return folder / REVIEWS_FILE


def open_reviews(folder: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) ``DIR/reviews.sqlite`` in WAL mode and return the connection.

    The caller closes it. Autocommit mode; writes use explicit ``BEGIN IMMEDIATE`` transactions.
    """
    path = _database(folder)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    # journal_mode=WAL is persistent in the file; setting it again is a cheap no-op.
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.executescript(_SCHEMA)
    return connection


def _now() -> str:
    # Microseconds, so that readers ordering by decided_at see a reviewer's decisions in the order made.
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def record_decision(folder: str | Path, *, image_id: str, content_hash: str, reviewer: str, decision: str,
                    new_label: str | None = None, note: str | None = None, classes=None,
                    decided_at: str | None = None) -> int:
    """Append one review decision; return its SQLite ``rowid`` (position in the log).

    Parameters
    ----------
    folder : path
        The audit folder (``reviews.sqlite`` is created in it when missing).
    image_id : str
        The image's ``id`` (``images.parquet``).
    content_hash : str
        sha256 of the image file (``images.parquet`` ``content_hash``); the decision applies to the image
        while its bytes are unchanged.
    reviewer : str
        Who decided (free text, stripped; must not be empty).
    decision : {"label_wrong", "label_correct", "unsure"}
    new_label : str, optional
        The right class; required with ``label_wrong`` and refused with the other decisions.
    note : str, optional
        Free-text comment.
    classes : sequence of str, optional
        The audit's classes; when given, ``new_label`` must be one of them.
    decided_at : str, optional
        ISO 8601 time; default now (UTC).

    Raises
    ------
    InputError
        With one of the ``ERROR_*`` messages of this module.
    """
    row = check_decision(image_id=image_id, content_hash=content_hash, reviewer=reviewer, decision=decision,
                         new_label=new_label, note=note, classes=classes)
    return record_decisions(folder, [row], decided_at=decided_at)[0]


def check_decision(*, image_id, content_hash, reviewer, decision, new_label=None, note=None, classes=None) -> dict:
    """One decision checked by the rules of the app (the ``ERROR_*`` messages of this module) and normalised:
    a dict with the ``decisions`` columns except ``decided_at``. Raises :class:`InputError`."""
    reviewer = (reviewer or "").strip()
    if decision is None:
        raise InputError(ERROR_NO_DECISION)
    if decision not in DECISIONS:
        raise InputError(ERROR_DECISION.format(value=decision))
    if not reviewer:
        raise InputError(ERROR_REVIEWER)
    image_id = "" if image_id is None else str(image_id)
    if not image_id:
        raise InputError(ERROR_IMAGE_ID)
    if not isinstance(content_hash, str) or len(content_hash) != 64 or any(
            c not in "0123456789abcdef" for c in content_hash.lower()):
        raise InputError(ERROR_CONTENT_HASH.format(value=content_hash))
    new_label = None if new_label is None or str(new_label) == "" else str(new_label)
    if decision == "label_wrong":
        if new_label is None:
            raise InputError(ERROR_NEW_LABEL_MISSING)
        if classes is not None and new_label not in [str(c) for c in classes]:
            raise InputError(ERROR_NEW_LABEL_UNKNOWN.format(value=new_label, classes=", ".join(map(str, classes))))
    elif new_label is not None:
        raise InputError(ERROR_NEW_LABEL_UNEXPECTED.format(value=new_label, decision=decision))
    note = (note or "").strip() or None
    return {"id": image_id, "content_hash": content_hash.lower(), "reviewer": reviewer, "decision": decision,
            "new_label": new_label, "note": note}


def record_decisions(folder: str | Path, rows, *, decided_at: str | None = None) -> list[int]:
    """Append several checked decisions (:func:`check_decision` dicts) in ONE transaction: all or none.

    Returns their SQLite ``rowid`` s. Used by :func:`record_decision` (one row) and by the CLI import.
    """
    rows = list(rows)
    stamp = decided_at or _now()
    try:
        connection = open_reviews(folder)
    except sqlite3.Error as error:
        raise _database_error(folder, error) from None
    try:
        connection.execute("BEGIN IMMEDIATE")
        ids = []
        for row in rows:
            cursor = connection.execute(
                "INSERT INTO decisions (id, content_hash, reviewer, decision, new_label, note, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], row["content_hash"], row["reviewer"], row["decision"], row["new_label"], row["note"],
                 row.get("decided_at") or stamp))
            ids.append(int(cursor.lastrowid))
        connection.execute("COMMIT")
        return ids
    except sqlite3.Error as error:
        _rollback(connection)
        raise _database_error(folder, error) from None
    except BaseException:
        _rollback(connection)
        raise
    finally:
        connection.close()


def _rollback(connection) -> None:
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _database_error(folder, error: sqlite3.Error) -> InputError:
    """One clear message for a locked or damaged ``reviews.sqlite`` (issue 11: never a traceback)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return InputError(ERROR_REVIEWS_LOCKED.format(folder=folder, seconds=BUSY_TIMEOUT_S))
    return InputError(ERROR_REVIEWS_DAMAGED.format(folder=folder, reason=text))


def list_decisions(folder: str | Path, *, current_only: bool = True) -> pd.DataFrame:
    """The decisions as a table with the contract columns (``DECISION_COLUMNS``), oldest first.

    ``current_only`` keeps each reviewer's latest decision per image (``id`` and ``content_hash``; the one
    that counts);
    ``False`` returns the whole log. An audit without ``reviews.sqlite`` gives an empty table (the file is
    not created by reading).
    """
    path = _database(folder)
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DECISION_COLUMNS})
    connection = open_reviews(folder)
    try:
        if current_only:
            query = ("SELECT d.* FROM decisions d JOIN (SELECT MAX(rowid) AS last FROM decisions "
                     "GROUP BY id, content_hash, reviewer) latest ON d.rowid = latest.last ORDER BY d.rowid")
        else:
            query = "SELECT * FROM decisions ORDER BY rowid"
        frame = pd.read_sql_query(query, connection)
    finally:
        connection.close()
    return frame[list(DECISION_COLUMNS)]


def resolve_decisions(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per reviewed image (``id``, ``content_hash``) from current decisions (:func:`list_decisions`).

    Columns: ``id``, ``content_hash``, ``decision`` (the shared decision, or ``conflict`` when the reviewers'
    current decisions or new labels differ), ``new_label`` (the shared new label of ``label_wrong``, else
    None), ``reviewers`` (sorted, joined by ``"; "``), ``decided_at`` (latest), ``n_reviewers``,
    ``details`` (``"reviewer: decision [-> new label]"`` joined by ``"; "``, so a conflict shows both sides),
    ``notes`` (``"reviewer: note"`` of every current decision with a note, joined by ``"; "``; empty without).
    """
    columns = ["id", "content_hash", "decision", "new_label", "reviewers", "decided_at", "n_reviewers", "details",
               "notes"]
    if decisions.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    decisions = decisions.reset_index(drop=True)
    keys = decisions["id"].astype(str) + "\0" + decisions["content_hash"].astype(str)
    sizes = keys.map(keys.value_counts())
    # One decision on an image (the common case, e.g. a CSV import of thousands): vectorised.
    single = decisions[sizes.to_numpy() == 1]
    new_label = pd.Series([v if isinstance(v, str) else None for v in single["new_label"]], index=single.index,
                          dtype=object)
    note = [v if isinstance(v, str) and v.strip() else None for v in single["note"]]
    reviewer = single["reviewer"].astype(str)
    fast = pd.DataFrame({
        "id": single["id"], "content_hash": single["content_hash"], "decision": single["decision"],
        "new_label": new_label, "reviewers": reviewer, "decided_at": single["decided_at"].astype(str),
        "n_reviewers": 1,
        "details": reviewer + ": " + single["decision"].astype(str) + new_label.map(
            lambda v: f" -> {v}" if isinstance(v, str) else ""),
        "notes": [f"{r}: {n}" if n is not None else "" for r, n in zip(reviewer, note)]},
        index=single.index)
    rows = {}
    several = decisions[sizes.to_numpy() > 1]
    for (image_id, content_hash), block in several.groupby(["id", "content_hash"], sort=False):
        pairs = {(row.decision, row.new_label if isinstance(row.new_label, str) else None)
                 for row in block.itertuples()}
        decision, new_label = next(iter(pairs)) if len(pairs) == 1 else (CONFLICT, None)
        details = "; ".join(
            f"{row.reviewer}: {row.decision}" + (f" -> {row.new_label}" if isinstance(row.new_label, str) else "")
            for row in block.sort_values("reviewer").itertuples())
        rows[block.index[0]] = {
            "id": image_id, "content_hash": content_hash, "decision": decision, "new_label": new_label,
            "reviewers": "; ".join(sorted(block["reviewer"].astype(str).unique())),
            "decided_at": str(block["decided_at"].max()), "n_reviewers": int(block["reviewer"].nunique()),
            "details": details,
            "notes": "; ".join(f"{row.reviewer}: {row.note}" for row in block.sort_values("reviewer").itertuples()
                               if isinstance(row.note, str) and row.note.strip())}
    slow = pd.DataFrame.from_dict(rows, orient="index", columns=columns) if rows else fast.iloc[:0]
    # first appearance order, as groupby(sort=False) gives
    out = pd.concat([fast, slow]).sort_index(kind="stable")
    return out.reset_index(drop=True)[columns]


def find_conflicts(folder: str | Path) -> pd.DataFrame:
    """Images whose reviewers disagree: the rows of :func:`resolve_decisions` with decision ``conflict``."""
    resolved = resolve_decisions(list_decisions(folder))
    return resolved[resolved["decision"] == CONFLICT].reset_index(drop=True)


def _matching(images: pd.DataFrame, resolved: pd.DataFrame) -> pd.DataFrame:
    """Resolved decisions that apply to the images now: same ``id`` and same ``content_hash``."""
    keys = images[["id", "content_hash"]].astype(str)
    return keys.merge(resolved.astype({"id": str, "content_hash": str}), on=["id", "content_hash"], how="inner")


@dataclass(frozen=True)
class ReviewSummary:
    """Counts over the current review decisions of flagged images (no statistics).

    Attributes
    ----------
    n_suspects : int
        Images flagged as label issues (``is_label_issue``) in the audit.
    n_reviewed : int
        Flagged images with at least one current decision (same ``id`` and ``content_hash``).
    n_label_wrong, n_label_correct, n_unsure, n_conflicts : int
        Flagged reviewed images by resolved decision (``conflict`` when reviewers disagree).
    confirmed_error_rate : float or None
        ``n_label_wrong / (n_label_wrong + n_label_correct)``: among flagged images with an agreed, definite
        decision, the fraction whose label was confirmed wrong (unsure and conflicting ones are left out);
        None when no such image exists yet. Reviewed suspects are not a random sample of the data: this is the
        share of confirmed errors among the suspects reviewed so far, not the data set's label-error rate.
    confirmed_error_ci_low, confirmed_error_ci_high : float or None
        95 % Wilson score interval of ``confirmed_error_rate`` (None with it).
    """

    n_suspects: int
    n_reviewed: int
    n_label_wrong: int
    n_label_correct: int
    n_unsure: int
    n_conflicts: int
    confirmed_error_rate: float | None
    confirmed_error_ci_low: float | None = None
    confirmed_error_ci_high: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def summarise_reviews(images: pd.DataFrame, decisions: pd.DataFrame) -> ReviewSummary:
    """Count reviewed suspects and confirmed errors (see :class:`ReviewSummary`).

    Parameters
    ----------
    images : DataFrame
        ``images.parquet`` (needs ``id``, ``content_hash``; ``is_label_issue`` when the audit has label noise).
    decisions : DataFrame
        Current decisions (:func:`list_decisions`).
    """
    images = with_review_keys(images) if "content_hash" not in images.columns else images
    if "is_label_issue" in images.columns:
        suspects = images.loc[images["is_label_issue"].astype(bool)]
    else:
        suspects = images.iloc[:0]
    reviewed = _matching(suspects, resolve_decisions(decisions))
    counts = reviewed["decision"].value_counts()
    wrong, correct = int(counts.get("label_wrong", 0)), int(counts.get("label_correct", 0))
    low, high = wilson_interval(wrong, wrong + correct)
    return ReviewSummary(n_suspects=int(len(suspects)), n_reviewed=int(len(reviewed)), n_label_wrong=wrong,
                         n_label_correct=correct, n_unsure=int(counts.get("unsure", 0)),
                         n_conflicts=int(counts.get(CONFLICT, 0)),
                         confirmed_error_rate=wrong / (wrong + correct) if wrong + correct else None,
                         confirmed_error_ci_low=float(low) if wrong + correct else None,
                         confirmed_error_ci_high=float(high) if wrong + correct else None)


def corrected_labels(images: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The corrected-labels table (``CORRECTED_LABEL_COLUMNS``): one row per reviewed image.

    An image is reviewed when a current decision matches its ``id`` and ``content_hash``. ``corrected_label`` is the
    new label of an agreed ``label_wrong`` and the given label otherwise (``label_correct``, ``unsure``,
    ``conflict``: the label stands until the reviewers agree it is wrong); ``decision`` says which case it is.
    Rows follow the order of ``images``.
    """
    if "content_hash" not in images.columns and "id" in images.columns:
        images = with_review_keys(images)  # label-only audit: decisions are keyed to the stand-in hash
    missing = [c for c in ("id", "path", "label", "content_hash") if c not in images.columns]
    if missing:
        raise InputError(ERROR_IMAGES_COLUMNS.format(columns=", ".join(missing)))
    resolved = resolve_decisions(decisions).astype({"id": str, "content_hash": str})
    frame = images[["id", "path", "label", "content_hash"]].astype({"id": str, "content_hash": str})
    merged = frame.merge(resolved, on=["id", "content_hash"], how="inner")
    corrected = merged["label"].astype(str).where(merged["decision"] != "label_wrong", merged["new_label"])
    return pd.DataFrame({"id": merged["id"].astype(str), "path": merged["path"].astype(str),
                         "label": merged["label"].astype(str), "corrected_label": corrected.astype(str),
                         "decision": merged["decision"], "reviewers": merged["reviewers"],
                         "decided_at": merged["decided_at"], "notes": merged["notes"].fillna("").astype(str)}
                        )[list(CORRECTED_LABEL_COLUMNS)]


def to_safe_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes (UTF-8) of ``frame`` with formula-injection cells neutralised (:mod:`audit.io.csv_export`)."""
    return _to_safe_csv(frame).encode("utf-8")


def export_corrected_labels(folder: str | Path, images: pd.DataFrame, *, out: str | Path | None = None) -> bytes:
    """The corrected-labels CSV of the audit in ``folder`` (bytes); also written atomically to ``out``."""
    data = to_safe_csv(corrected_labels(images, list_decisions(folder)))
    if out is not None:
        from audit.io.atomic import write_bytes_atomic

        write_bytes_atomic(out, data)
    return data


# ============================================================================ keys and CSV import (issue 13)

#: Label-only audits (``label-noise``) have no image bytes, so no ``content_hash``; their decisions are
#: keyed to a stand-in: sha256 of this prefix, a NUL byte and the image's id (stable across re-runs).
LABEL_ONLY_KEY_PREFIX = "imagefair-label-only"


def with_review_keys(images: pd.DataFrame) -> pd.DataFrame:
    """``images`` with a ``content_hash`` column: the real one, or (label-only audits) the stand-in
    sha256(:data:`LABEL_ONLY_KEY_PREFIX` NUL id) for rows without one."""
    import hashlib

    frame = images.copy()
    ids = frame["id"].astype(str)
    stand_in = ids.map(lambda i: hashlib.sha256(f"{LABEL_ONLY_KEY_PREFIX}\0{i}".encode("utf-8")).hexdigest())
    if "content_hash" not in frame.columns:
        frame["content_hash"] = stand_in
    else:
        current = frame["content_hash"]
        frame["content_hash"] = current.where(current.notna() & (current.astype(str) != ""), stand_in).astype(str)
    return frame


#: Columns of a review CSV for ``review DIR --import`` (``note`` optional).
IMPORT_COLUMNS = ("id", "decision", "new_label")
IMPORT_OPTIONAL_COLUMNS = ("note",)
_NOTHING = "nothing was imported"
ERROR_IMPORT_EMPTY = ("{file} is empty: give a CSV with the header id,decision,new_label[,note] and one row per "
                      "reviewed image; " + _NOTHING)
ERROR_IMPORT_NO_ROWS = "{file} has a header but no decision rows (row 2 onwards is empty); " + _NOTHING
ERROR_IMPORT_BOM = ("{file} row 1 starts with a byte-order mark (BOM): save it as UTF-8 without BOM (plain "
                    "\"CSV\", not \"CSV UTF-8\") and import again; " + _NOTHING)
ERROR_IMPORT_ENCODING = "{file} row {row} is not UTF-8 text: save the file as UTF-8 (without BOM); " + _NOTHING
ERROR_IMPORT_HEADER = ("{file} row 1: the header must be id,decision,new_label with an optional note column; "
                       "got {found}; " + _NOTHING)
ERROR_IMPORT_ROW = "{file} row {row}: {reason}; " + _NOTHING + " (fix the row and import the whole file again)"
REASON_UNKNOWN_ID = "id {value!r} is not an image of this audit (use the id column of the sample CSV)"
REASON_DUPLICATE = "id {value!r} appears again (first at row {first}): give one decision per image"
REASON_CELLS = "{found} cells, but the header has {expected}"
REASON_CSV = "cannot be read as CSV ({reason})"


def _unneutralise(text: str) -> str:
    """Undo the formula-injection quote our CSV exports add (``'=x`` -> ``=x``), so ids round-trip."""
    from audit.io.csv_export import FORMULA_PREFIXES

    if text.startswith("'") and text[1:].lstrip(" \u00a0\u3000").startswith(FORMULA_PREFIXES):
        return text[1:]
    return text


def read_review_csv(path: str | Path, *, images: pd.DataFrame, classes, reviewer: str) -> list[dict]:
    """Read and check a review CSV (``id,decision,new_label[,note]``) against the audit, all rows first.

    Rows are counted as a spreadsheet shows them (the header is row 1). Every row passes the app's rules
    (:func:`check_decision`: decision word, new label required with ``label_wrong`` and one of the audit's
    classes, refused otherwise), its id must be an image of the audit, and no id may appear twice. The first
    problem raises :class:`InputError` naming the file and row (``ERROR_IMPORT_*``); nothing is returned then,
    so nothing is written.

    Returns
    -------
    list of dict
        Checked decisions for :func:`record_decisions`, in file order.
    """
    import csv
    import io

    file = Path(path)
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise InputError(ERROR_REVIEWER)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise InputError(f"{file}: cannot be read ({error.strerror or type(error).__name__}); " + _NOTHING,
                         source=str(file)) from None
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        raise InputError(ERROR_IMPORT_BOM.format(file=file), source=str(file), row=0)
    if not data.strip():
        raise InputError(ERROR_IMPORT_EMPTY.format(file=file), source=str(file))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        row = data[:error.start].count(b"\n") + 1
        raise InputError(ERROR_IMPORT_ENCODING.format(file=file, row=row), source=str(file)) from None
    keys = with_review_keys(images)
    key_of = dict(zip(keys["id"].astype(str), keys["content_hash"].astype(str)))
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[dict] = []
    seen: dict[str, int] = {}
    header = None
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                allowed = set(IMPORT_COLUMNS) | set(IMPORT_OPTIONAL_COLUMNS)
                if (len(set(header)) != len(header) or not set(IMPORT_COLUMNS) <= set(header)
                        or not set(header) <= allowed):
                    raise InputError(ERROR_IMPORT_HEADER.format(file=file, found=",".join(header)), source=str(file),
                                     row=0)
                continue
            if len(cells) != len(header):
                raise InputError(ERROR_IMPORT_ROW.format(file=file, row=line, reason=REASON_CELLS.format(
                    found=len(cells), expected=len(header))), source=str(file), row=line - 2)
            record = {name: _unneutralise(value.strip()) for name, value in zip(header, cells)}
            image_id = record["id"]
            if image_id not in key_of:
                reason = REASON_UNKNOWN_ID.format(value=image_id) if image_id else ERROR_IMAGE_ID
                raise InputError(ERROR_IMPORT_ROW.format(file=file, row=line, reason=reason), source=str(file),
                                 row=line - 2, column="id")
            if image_id in seen:
                raise InputError(ERROR_IMPORT_ROW.format(file=file, row=line, reason=REASON_DUPLICATE.format(
                    value=image_id, first=seen[image_id])), source=str(file), row=line - 2, column="id")
            seen[image_id] = line
            try:
                rows.append(check_decision(image_id=image_id, content_hash=key_of[image_id], reviewer=reviewer,
                                           decision=record["decision"] or None, new_label=record["new_label"],
                                           note=record.get("note"), classes=classes))
            except InputError as error:
                raise InputError(ERROR_IMPORT_ROW.format(file=file, row=line, reason=error.message),
                                 source=str(file), row=line - 2) from None
    except csv.Error as error:
        raise InputError(ERROR_IMPORT_ROW.format(file=file, row=reader.line_num, reason=REASON_CSV.format(
            reason=error)), source=str(file)) from None
    if header is None:
        raise InputError(ERROR_IMPORT_EMPTY.format(file=file), source=str(file))
    if not rows:
        raise InputError(ERROR_IMPORT_NO_ROWS.format(file=file), source=str(file))
    return rows
