"""Read the two audits of a comparison and read/write a comparison folder.

A comparison folder holds ``comparison.json`` (validated against ``audit/schema/comparison.schema.json``)
and ``image_changes.parquet``; ``report.*`` files are added by ``report``. Both contract files are written as
one generation by the audit folder's machinery (:func:`audit.folder.write_generation`: a lock against a
concurrent writer, a fresh ``.generations/<run_id>/`` switched in by one atomic rename, leftovers of killed runs
cleaned, the run id in both files), so a reader sees the previous comparison or the new one, never a mix; the
reader (:func:`load_comparison_folder`) reads through the current generation and refuses a folder whose files
name different runs. Comparison folders written before generations (plain files, no run id) are still read.
An audit folder is never written into.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from audit.errors import InputError

COMPARISON_FILE = "comparison.json"
CHANGES_FILE = "image_changes.parquet"


def supported_audit_major() -> int:
    """The newest major ``schema_version`` of audit.json this imagefair reads (older ones are migrated on read
    by the shared reader; newer ones are refused with the version named)."""
    try:
        from audit.schema import SCHEMA_VERSION  # present once audits carry a migration path

        return int(str(SCHEMA_VERSION).split(".")[0])
    except (ImportError, ValueError):
        import re

        from audit.schema import load_schema

        pattern = load_schema()["properties"]["schema_version"].get("pattern", "^1")
        match = re.match(r"\^(\d+)", pattern)
        return int(match.group(1)) if match else 1

ERROR_IS_COMPARISON = ("{path} is a comparison folder (it holds comparison.json), not an audit: give the --out "
                       "folder of `python -m audit run` (or `label-noise`) as {role}")
ERROR_NOT_COMPARISON = ("{path} is not a comparison folder (no comparison.json){hint}: write one with "
                        "`python -m audit compare OLD NEW --out {path}`")
HINT_IS_AUDIT = "; it is an audit folder"
ERROR_SCHEMA_VERSION = ("{file} has schema_version {found!r}, which this imagefair cannot read (it reads {supported}): "
                        "re-run that audit with this version of imagefair")
ERROR_SAME_FOLDER = "OLD and NEW are the same folder ({path}): give two different audits"
ERROR_OUT_IS_AUDIT = ("--out {path} holds an audit (audit.json); a comparison must go to its own folder: give a new "
                      "or empty folder, or an earlier comparison folder")
ERROR_OUT_IS_INPUT = "--out {path} is one of the audits being compared: give a separate folder"
ERROR_OUT_IS_FILE = "--out {path} is a file; give a folder (it is created if missing)"
ERROR_OUT_NOT_WRITABLE = "--out {path}: cannot write the comparison ({reason}); give a folder you can write to"
ERROR_COMPARISON_CORRUPT = "{file} cannot be read ({reason}): the comparison is damaged; run `compare` again"
ERROR_COMPARISON_SCHEMA = "{file} is not a valid comparison ({reason}): run `compare` again with this imagefair"
ERROR_MIXED_COMPARISON = ("{path} mixes files of different comparisons ({file} is from run {found}, comparison.json "
                          "from run {expected}): the folder was written by something other than imagefair; run "
                          "`compare` again into it")


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 10 ** 6  # not a version this imagefair wrote: refused, with the text named


def _raw_schema_version(folder: Path):
    try:
        return json.loads((folder / "audit.json").read_text("utf-8")).get("schema_version")
    except (OSError, ValueError, AttributeError):
        return None  # the shared reader names the problem


def check_is_audit(path, *, role: str) -> None:
    """Refuse a comparison folder where an audit folder is expected (one line naming the folder)."""
    folder = Path(path)
    if (folder / COMPARISON_FILE).is_file() and not (folder / "audit.json").is_file():
        raise InputError(ERROR_IS_COMPARISON.format(path=folder, role=role), source=str(folder))


def load_audit_for_comparison(path, *, role: str):
    """Read one audit folder for ``compare``/``gate --baseline``, refusing comparison folders and unknown versions."""
    from audit.folder import load_audit_folder

    folder = Path(path)
    check_is_audit(folder, role=role)
    version = _raw_schema_version(folder)
    supported = supported_audit_major()
    if isinstance(version, str) and _major(version) > supported:
        raise InputError(ERROR_SCHEMA_VERSION.format(file=folder / "audit.json", found=version,
                                                     supported=f"up to {supported}.x"),
                         source=str(folder / "audit.json"))
    return load_audit_folder(folder)


def load_pair(old, new):
    """Both audits of a comparison (OLD, NEW), checked."""
    if Path(old).resolve() == Path(new).resolve():
        raise InputError(ERROR_SAME_FOLDER.format(path=old), source=str(old))
    return load_audit_for_comparison(old, role="OLD"), load_audit_for_comparison(new, role="NEW")


def verified_status(folder) -> dict | None:
    """The audit's verified label-error rate from its reviews of a random sample (the ``review --status``
    object), or None when the folder has no reviewed sample (or this imagefair has no review workflow)."""
    import importlib

    try:
        # audit.review_sample (the review-sample workflow, layer "folder" like this module) arrives with issue 13;
        # imported by name so this module also works, and passes the layer test, before it lands
        review_status = importlib.import_module("audit.review_sample").review_status
    except (ImportError, AttributeError):
        return None
    try:
        status = review_status(folder.path, images=folder.images, audit=folder.audit)
    except Exception:  # noqa: BLE001 - no sample or unreadable reviews: nothing verified to compare
        return None
    head = status.get("label_error_rate") if isinstance(status, dict) else None
    return status if isinstance(head, dict) and head.get("estimate") is not None else None


def compare_folders(old, new, **settings):
    """Read both audits (:func:`load_pair`), their verified rates, and compare them (:func:`compare_audits`)."""
    from audit.compare.core import compare_audits

    old_folder, new_folder = load_pair(old, new)
    return compare_audits(old_folder, new_folder, verified_old=verified_status(old_folder),
                          verified_new=verified_status(new_folder), probabilities_old=load_probabilities(old_folder),
                          probabilities_new=load_probabilities(new_folder), **settings)


def load_probabilities(folder):
    """The audit's ``probabilities.npy`` as a read-only memory map (from its current generation), or None when
    it has none or the file does not match the images (then top-k accuracy is simply not compared)."""
    import numpy as np

    from audit.folder import current_generation

    base = current_generation(folder.path) or folder.path
    try:
        matrix = np.load(base / "probabilities.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if matrix.ndim != 2 or matrix.shape != (len(folder.images), len(folder.classes)):
        return None
    return matrix


def check_out_folder(out, *inputs) -> Path:
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(ERROR_OUT_IS_FILE.format(path=folder), source=str(folder))
    for given in inputs:
        if folder.exists() and folder.resolve() == Path(given).resolve():
            raise InputError(ERROR_OUT_IS_INPUT.format(path=folder), source=str(folder))
    if (folder / "audit.json").exists():
        raise InputError(ERROR_OUT_IS_AUDIT.format(path=folder), source=str(folder))
    return folder


def write_comparison_folder(out, comparison: dict, image_changes: pd.DataFrame, *, run_id: str | None = None) -> Path:
    """Validate, then write ``image_changes.parquet`` and ``comparison.json`` into ``out`` as one generation.

    All or nothing (:func:`audit.folder.write_generation`): ``comparison.json`` gets the generation's
    ``run_id``, the table records it in its Parquet metadata; a second ``compare`` into a folder being written is
    refused (:data:`audit.folder.ERROR_FOLDER_LOCKED`); a failed write keeps the previous comparison. Other files
    of the folder (``report.*``) are kept.
    """
    from audit.folder import new_run_id, write_generation
    from audit.schema.comparison import validate_comparison

    folder = check_out_folder(out)
    run_id = run_id or new_run_id()
    comparison = {**comparison, "run_id": run_id}
    validate_comparison(comparison)
    json.dumps(comparison, allow_nan=False)
    try:
        # the table first, comparison.json last (write_generation keeps the order)
        write_generation(folder, {CHANGES_FILE: image_changes, COMPARISON_FILE: comparison}, run_id=run_id)
    except OSError as error:
        raise InputError(ERROR_OUT_NOT_WRITABLE.format(path=folder, reason=error.strerror or type(error).__name__),
                         source=str(folder)) from error
    return folder


@dataclass(frozen=True)
class ComparisonFolder:
    """A comparison folder as read: ``comparison.json`` (migrated, validated) and ``image_changes.parquet``,
    both from the same generation."""

    path: Path
    comparison: dict
    image_changes: pd.DataFrame

    @property
    def run_id(self) -> str | None:
        """The run id of the comparison (None for folders written before generations)."""
        return self.comparison.get("run_id")


def is_comparison_folder(path) -> bool:
    return (Path(path) / COMPARISON_FILE).is_file()


def load_comparison_folder(path) -> ComparisonFolder:
    """Read and validate a comparison folder (refusing an audit folder, or a folder mixing two runs, with one
    line).

    Both files are read from the folder's current generation (resolved once), so a ``compare`` switching
    generations meanwhile is never seen half-way; a folder of plain files is read as it is. The run id of
    ``comparison.json`` must match the table's (:data:`ERROR_MIXED_COMPARISON`).
    """
    from audit.folder import check_one_run, current_generation
    from audit.schema.comparison import migrate_comparison, validate_comparison

    folder = Path(path)
    file = folder / COMPARISON_FILE
    if not file.is_file():
        hint = HINT_IS_AUDIT if (folder / "audit.json").is_file() else ""
        raise InputError(ERROR_NOT_COMPARISON.format(path=folder, hint=hint), source=str(file))
    base = current_generation(folder) or folder
    try:
        comparison = json.loads((base / COMPARISON_FILE).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(ERROR_COMPARISON_CORRUPT.format(file=file, reason=error), source=str(file)) from None
    if not isinstance(comparison, dict):
        raise InputError(ERROR_COMPARISON_SCHEMA.format(file=file, reason="the top level is not an object"),
                         source=str(file))
    comparison = migrate_comparison(comparison)
    try:
        validate_comparison(comparison)
    except ValueError as error:
        raise InputError(ERROR_COMPARISON_SCHEMA.format(file=file, reason=error), source=str(file)) from None
    check_one_run(folder, comparison, names=[CHANGES_FILE], base=base, message=ERROR_MIXED_COMPARISON)
    table = folder / CHANGES_FILE
    try:
        changes = pd.read_parquet(base / CHANGES_FILE)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types
        raise InputError(ERROR_COMPARISON_CORRUPT.format(file=table, reason=" ".join(str(error).split())),
                         source=str(table)) from None
    return ComparisonFolder(path=folder, comparison=comparison, image_changes=changes)


def comparison_path_exists(path: str | os.PathLike) -> bool:  # pragma: no cover - convenience for views
    return is_comparison_folder(path)
