"""Shared state of the app: the ONLY module with ``st.cache_data`` / ``st.cache_resource``.

Pages read the audit folder through :func:`current_audit` (tables loaded once per folder version and kept
in memory) and never compute statistics: they filter, sort and draw what the folder holds. Counting review
decisions (reviewed suspects, confirmed error rate) comes from :mod:`audit.reviews`.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from audit.escaping import streamlit_markdown
from audit.folder import AuditFolder, load_audit_folder

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"


def reports_dir() -> Path:
    """Folder of audits: ``reports/`` of the repository, or ``$IMAGEFAIR_REPORTS`` (tests, benchmarks)."""
    return Path(os.environ.get("IMAGEFAIR_REPORTS") or REPO / "reports").resolve()


def uploads_dir() -> Path:
    """Where uploads of new audits are unpacked (one sub-folder per upload)."""
    return reports_dir() / ".uploads"

ERROR_NO_AUDIT = ("{path} holds no audit.json: pick an audit folder written by `imagefair run` "
                  "(or start a new audit in the sidebar)")
ERROR_SAMPLE_MISSING = ("the sample audit cannot be computed: {path} is missing. Build the sample data with "
                        "`python sample_data/build.py`, or open another audit with `-- --audit reports/NAME`")
ERROR_AUDIT_NAME = "audit name {name!r}: use letters, digits, '-' and '_' only (it becomes the folder reports/NAME)"
ERROR_AUDIT_EXISTS = "reports/{name} already exists: choose another name"
ERROR_TORCHSCRIPT_UPLOAD = ("{name} is a TorchScript model, which is code: uploads of TorchScript are refused "
                            "unless the app is started with `streamlit run app.py -- --allow-torchscript-upload`. "
                            "Upload an ONNX model or a state_dict checkpoint instead")

ERROR_PATH_OUTSIDE_ROOTS = ("{field}: {path} is outside the folders this app may read ({roots}). Put the file "
                            "under one of them, or start the app with IMAGEFAIR_DATA_ROOTS listing its folder "
                            "(several separated by '{sep}')")
ERROR_PATH_MISSING = "{field}: {path} does not exist (give a path on the server, under {roots})"
ERROR_MODEL_FROM_UPLOADS = ("{field}: {path} is inside the uploads area ({uploads}). A model is code the server "
                            "runs: it is taken only from the operator's own files, never from uploaded data "
                            "(upload an ONNX model or a state_dict in the Model field instead)")
ERROR_AUDIT_FAILED = ("The audit failed ({kind}). The details are in the server log; check the files and "
                      "settings, or run the same audit with `imagefair run` to see the full message")


def data_roots() -> list[Path]:
    """Folders the app's "local path" fields may read: ``$IMAGEFAIR_DATA_ROOTS`` (separated by
    ``os.pathsep``), else the current directory and ``reports/``. Resolved (symlinks followed)."""
    raw = os.environ.get("IMAGEFAIR_DATA_ROOTS")
    if raw:
        roots = [Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip()]
    else:
        roots = [Path.cwd(), reports_dir()]
    return [Path(os.path.realpath(root)) for root in roots]


def _is_within(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:
        return False


def confine_local_path(text: str, *, field: str, model: bool = False) -> str:
    """A "local path" typed in the app, checked: it must exist and resolve (symlinks followed) under one of
    :func:`data_roots`; a model file must not come from the uploads area (:func:`uploads_dir`).

    Raises
    ------
    InputError
        :data:`ERROR_PATH_MISSING`, :data:`ERROR_PATH_OUTSIDE_ROOTS` or :data:`ERROR_MODEL_FROM_UPLOADS`;
        the messages name the path as typed and never show the file's content.
    """
    from audit.errors import InputError

    roots = data_roots()
    shown = ", ".join(str(root) for root in roots)
    given = Path(str(text).strip()).expanduser()
    real = Path(os.path.realpath(given if given.is_absolute() else Path.cwd() / given))
    if not any(_is_within(real, root) for root in roots):
        raise InputError(ERROR_PATH_OUTSIDE_ROOTS.format(field=field, path=text, roots=shown, sep=os.pathsep))
    if not real.exists():
        raise InputError(ERROR_PATH_MISSING.format(field=field, path=text, roots=shown))
    if model and _is_within(real, Path(os.path.realpath(uploads_dir()))):
        raise InputError(ERROR_MODEL_FROM_UPLOADS.format(field=field, path=text, uploads=uploads_dir()))
    return str(real)


#: Gallery page size (thumbnails are loaded only for the visible page).
GALLERY_PAGE_SIZE = 12
GALLERY_COLUMNS = 3
THUMBNAIL_PX = 160

#: Streamlit markdown: the one escaping helper of that output kind (audit/escaping.py), under the pages' name.
escape_markdown = streamlit_markdown


# --------------------------------------------------------------------------------------------- arguments

def parse_args(argv=None) -> argparse.Namespace:
    """Options after ``--`` of ``streamlit run app.py -- ...`` (unknown ones are ignored)."""
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--audit", default=None, help="audit folder to open (default: reports/sample)")
    parser.add_argument("--allow-torchscript-upload", action="store_true",
                        help="accept uploaded TorchScript models (they are code)")
    arguments, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return arguments


# --------------------------------------------------------------------------------------------- audits

#: One audit folder in memory, as every view reads it (:class:`audit.folder.AuditFolder`; read-only by
#: convention: pages filter copies, never mutate).
Audit = AuditFolder


def is_audit_folder(path: Path) -> bool:
    return (Path(path) / "audit.json").is_file()


def list_audits(root: Path | None = None) -> list[Path]:
    """Audit folders directly under ``reports/`` (folders holding ``audit.json``), sample first."""
    root = reports_dir() if root is None else root
    if not root.is_dir():
        return []
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_audit_folder(p))
    return sorted(found, key=lambda p: (p.name != "sample", p.name))


def _version(folder: Path) -> tuple:
    """Changes whenever the audit is re-run (``audit.json`` is written last, atomically)."""
    stat = (folder / "audit.json").stat()
    return (stat.st_mtime_ns, stat.st_size)


@st.cache_resource(show_spinner="Loading the audit...", max_entries=4)
def _load_audit(folder: str, version: tuple) -> Audit:
    # the one reader of the folder (schema validation, cleaned tables); reviews are read fresh per page
    return load_audit_folder(folder, reviews=False)


def load_audit(folder: str | Path) -> Audit:
    """The audit in ``folder`` (cached per folder and ``audit.json`` version)."""
    folder = Path(folder).resolve()
    if not is_audit_folder(folder):
        from audit.errors import InputError

        raise InputError(ERROR_NO_AUDIT.format(path=folder))
    return _load_audit(str(folder), _version(folder))


@st.cache_resource(show_spinner="Computing the sample audit once (it is then loaded from reports/sample)...")
def _ensure_sample(folder: str) -> str:
    """Compute ``reports/sample`` from ``sample_data/`` once when it is missing; return its path."""
    path = Path(folder)
    if is_audit_folder(path):
        return folder
    manifest, model = SAMPLE_DATA / "manifest.csv", SAMPLE_DATA / "model.onnx"
    for needed in (manifest, model):
        if not needed.exists():
            from audit.errors import InputError

            raise InputError(ERROR_SAMPLE_MISSING.format(path=needed))
    from audit.config import AuditConfig

    policy = REPO / "policy.example.toml"  # the same command as the README's sample audit
    run_new_audit(AuditConfig(data=str(manifest), model=str(model),
                              policy_file=str(policy) if policy.exists() else None), path)
    return folder


def default_audit_folder(arguments: argparse.Namespace) -> Path:
    """``--audit`` when given, else ``reports/sample`` (computed once when missing)."""
    if arguments.audit:
        candidate = Path(arguments.audit)
        return (candidate if candidate.is_absolute() else (Path.cwd() / candidate)).resolve()
    return Path(_ensure_sample(str(reports_dir() / "sample")))


def run_new_audit(config, out: Path, *, progress=None) -> Path:
    """Run the engine and write the audit folder (no caching: a new audit is computed once)."""
    from audit.pipeline import run_audit
    from audit.folder import write_audit_folder

    result = run_audit(config, progress=progress)
    return write_audit_folder(out, audit=result.audit, images=result.images, group_metrics=result.group_metrics,
                              probabilities=result.probabilities, annotators=result.extra.get("files", {}).get("annotators"))


def current_audit() -> Audit:
    """The audit picked in the sidebar (``st.session_state["audit_dir"]``, set by ``app.py``)."""
    return load_audit(st.session_state["audit_dir"])


# --------------------------------------------------------------------------------------------- reviews

def review_state(audit: Audit):
    """Current decisions (fresh from ``reviews.sqlite``, never cached) and their summary."""
    import sqlite3

    from audit import reviews

    try:
        decisions = reviews.list_decisions(audit.folder)
    except (sqlite3.Error, pd.errors.DatabaseError) as error:  # damaged or locked: a message, never a traceback
        st.warning(reviews.ERROR_REVIEWS_DAMAGED.format(folder=audit.folder, reason=" ".join(str(error).split()))
                   .split("; the decision")[0] + "; review decisions are not shown")
        decisions = pd.DataFrame(columns=list(reviews.DECISION_COLUMNS))
    return decisions, reviews.summarise_reviews(audit.images, decisions)


def show_review_status(audit: Audit, container=None) -> None:
    """Two metrics: suspects reviewed and confirmed error rate (counts over reviews.sqlite)."""
    if "is_label_issue" not in audit.images.columns:
        return
    _, summary = review_state(audit)
    target = container or st
    left, right = target.columns(2)
    left.metric("Suspects reviewed", f"{summary.n_reviewed} / {summary.n_suspects}",
                help="Images flagged as possible label errors with at least one review decision.")
    rate = summary.confirmed_error_rate
    decided = summary.n_label_wrong + summary.n_label_correct
    right.metric("Confirmed errors among reviewed suspects",
                 "-" if rate is None else f"{summary.n_label_wrong} of {decided} ({rate:.0%})",
                 help="Reviewed suspects with an agreed decision that the label is wrong, out of those with an agreed "
                      "label_wrong or label_correct decision (unsure and conflicting reviews left out). Suspects are "
                      "not a random sample: this is not the data set's label-error rate.")
    if rate is not None:
        target.caption(f"95 % interval of the confirmed share: {summary.confirmed_error_ci_low:.0%} - "
                       f"{summary.confirmed_error_ci_high:.0%} (Wilson, {decided} decided reviews).")


# --------------------------------------------------------------------------------------------- images

@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str, size: int = THUMBNAIL_PX) -> bytes | None:
    """A small PNG of the image at ``path`` (None when it cannot be read; pixel count checked before decoding)."""
    from audit.report.thumbnails import thumbnail_bytes

    return thumbnail_bytes(path, size=size, format="PNG")


# --------------------------------------------------------------------------------------------- exports

@st.cache_data(show_spinner="Preparing the CSV...", max_entries=8)
def table_csv(folder: str, version: tuple, table: str) -> bytes:
    """A contract table as formula-injection-safe CSV bytes (cached per audit version)."""
    from audit.reviews import to_safe_csv

    audit = _load_audit(folder, version)
    frame = audit.images if table == "images" else audit.group_metrics
    return to_safe_csv(frame)


@st.cache_data(show_spinner=False, max_entries=8)
def _annotators_table(folder: str, version: tuple) -> pd.DataFrame | None:
    path = Path(folder) / "annotators.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def annotators_table(audit: Audit) -> pd.DataFrame | None:
    """``annotators.parquet`` of the audit (None when absent), cached per audit version."""
    return _annotators_table(str(audit.folder), _version(audit.folder))


def audit_version(audit: Audit) -> tuple:
    return _version(audit.folder)


def check_audit_name(name: str) -> str:
    from audit.errors import InputError

    name = (name or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise InputError(ERROR_AUDIT_NAME.format(name=name))
    return name
