"""Load a data set (ImageFolder tree, CSV or Parquet manifest, optional attribute table) into a
validated :class:`audit.types.Dataset`.

Inputs
------
ImageFolder
    ``root/<class>/*`` or ``root/<split>/<class>/*``. The layout is detected with one rule:
    the tree is ``split/class`` when **every** visible top-level folder holds no image file directly and
    at least one visible sub-folder (e.g. ``train/cat/``, ``test/cat/``); otherwise it is ``class``, and
    images anywhere below a class folder (also in nested folders) belong to that class. Images are files
    with the extensions in :data:`IMAGE_EXTENSIONS` (any case). Hidden files and folders (name starting
    with ``.``) and macOS ``__MACOSX`` folders are ignored; every other file that is not an image (or that
    lies directly in the root or in a split folder, outside any class folder) is a counted skip. Files
    are listed in sorted relative-path order; ``row`` is the position of an image in that listing.
CSV / Parquet manifest
    Columns ``path`` (relative to the manifest's folder, or absolute inside it) and the label column
    (``label`` or ``label_column``); optional ``id`` and ``split``; every other column is an attribute.
    CSV is read with every cell as text, so ``3`` stays ``"3"`` (never ``"3.0"``). Rows are 0-based data
    rows (header excluded), as in ``skipped``; messages about a CSV also give the 1-based line number.
Attribute table (``attributes_file``)
    CSV or Parquet joined by ``id`` when it has an ``id`` column, else by ``path`` (relative to the
    attribute table's folder). Images without a row get missing values (they are not dropped); attribute
    rows that match no image are ignored and counted in a note.

Values
------
Labels, splits and attribute values become strings with surrounding white space removed. A missing
value (empty or blank cell, NaN, or one of :data:`MISSING_TOKENS` in an attribute column) becomes ``None``;
Parquet integers stay ``"3"`` (also when nulls made them floats), booleans become ``"True"``/``"False"``.

Group attributes
----------------
``group_by`` names them (in that order). Otherwise every attribute column with at least one value, at most
``max_group_values`` distinct values, and not id-like is a group
attribute, in column order; the other attribute columns are ``metadata_columns``. Id-like means a different
value on every image that has one, over at least :data:`ID_LIKE_MIN_VALUES` images (file names, hashes).

Skips and errors
----------------
Relative manifest paths are read from the manifest's folder; absolute paths, ``..`` and symlinks are read
wherever they point (the local user owns the manifest). With ``data_root`` (CLI ``--data-root DIR``), an
image whose real path lies outside that folder is a counted skip (:data:`SKIP_OUTSIDE_DATA_ROOT`, naming
the option). A Windows drive path, a missing image file, a path naming a folder, pipe or device, and a path
holding a NUL byte are counted skips (:data:`SKIP_PATH_ESCAPES`, :data:`SKIP_NOT_FOUND`,
:data:`SKIP_NOT_A_FILE`, :data:`SKIP_INVALID_PATH`). A label cell holding one of :data:`LABEL_MISSING_TOKENS` (``nan``, ``null``) is an
error like an empty one; a column named like a per-image column the engine writes (:data:`ENGINE_COLUMNS`,
``is_<issue>_issue``, ``<issue>_score``) is refused; a CSV whose only column holds ``;``, tabs or ``|`` is
reported as using the wrong delimiter.
Everything else that makes the input unusable raises :class:`audit.errors.InputError` with one of the
``ERROR_*`` constants below.

Notes
-----
Non-fatal facts about the load (attribute rows that matched no image) are returned as a tuple of
sentences in ``dataset.table.attrs["notes"]`` (and in ``dataset.notes`` once :class:`Dataset` has such a
field).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.types import RESERVED_COLUMNS, Dataset, SkipEntry

#: File extensions (lower case) treated as images in an ImageFolder tree.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: Attribute cell values (after stripping) read as missing, besides the empty string.
MISSING_TOKENS = frozenset({"nan", "NaN", "NA", "N/A", "n/a", "null", "NULL", "None"})

#: Default maximum number of distinct values for an attribute column to be a group attribute.
MAX_GROUP_VALUES = 50
#: A --group-by column with more distinct values is refused: every value is a group tested against the rest
#: (and every pairwise intersection with the other attributes), so 10,000 values meant hours and nothing
#: readable. Raise it on purpose with ``load_dataset(max_group_by_values=...)``.
MAX_GROUP_BY_VALUES = 1000

#: An attribute column with a distinct value on each of at least this many images is id-like (metadata).
ID_LIKE_MIN_VALUES = 10

#: Folder names ignored in an ImageFolder tree (besides hidden ones).
IGNORED_FOLDERS = frozenset({"__MACOSX"})

#: Label cells that read as a missing label (an error naming the row, like an empty cell): what pandas,
#: numpy and databases write for a missing value. "None" and "NA" are left alone: they can be real classes.
LABEL_MISSING_TOKENS = frozenset({"nan", "NaN", "NAN", "null", "NULL", "Null"})

#: Per-image columns the engine writes into ``images.parquet`` (contract): a manifest or attribute column of
#: the same name would be overwritten there while still being analysed as a group, so it is refused.
#: ``is_<issue>_issue`` is refused for any issue; ``<issue>_score`` for the issues of
#: :data:`audit.analysis.data_quality.ISSUES` (copied here: io must not import analysis; a test keeps them equal).
ENGINE_COLUMNS = frozenset({"prediction", "confidence", "label_probability", "label_score", "suggested_label",
                            "label_issue_rank", "duplicate_set"})
ENGINE_ISSUES = ("exact_duplicate", "near_duplicate", "outlier", "dark", "light", "blurry", "low_information",
                 "grayscale", "odd_size", "odd_aspect_ratio")
_ENGINE_ISSUE_COLUMN = re.compile(r"^is_.+_issue$")

# --- counted skips (SkipEntry.reason) --------------------------------------------------------------------
SKIP_PATH_ESCAPES = "path escapes the data root"
#: The reason of a file outside ``--data-root`` (the option that would allow it is named).
SKIP_OUTSIDE_DATA_ROOT = "outside --data-root (give a --data-root that holds it, or leave --data-root out)"
SKIP_NOT_FOUND = "file not found"
SKIP_NOT_A_FILE = "not a regular file (a folder, pipe or device)"
SKIP_INVALID_PATH = "invalid path (contains a NUL byte)"
SKIP_NOT_IMAGE_EXTENSION = "not an image file (extension {extension!r}; images are {extensions})"
SKIP_OUTSIDE_CLASS_FOLDER = "file outside any class folder"

# --- errors ------------------------------------------------------------------------------------------------
ERROR_DATA_NOT_FOUND = (
    "Data path {path} does not exist. Pass an ImageFolder directory or a CSV/Parquet manifest with --data.")
ERROR_UNSUPPORTED_DATA = (
    "Data file {path} is neither a folder nor a .csv/.parquet manifest. Pass an ImageFolder directory or a "
    "CSV/Parquet manifest with --data.")
ERROR_UNREADABLE_TABLE = (
    "Cannot read {path} as {kind}: {detail}. Save it as a valid {kind} file (UTF-8, with a header row).")
ERROR_NO_PATH_COLUMN = (
    "Manifest {path} has no 'path' column (columns found: {columns}). Add a column 'path' holding each "
    "image's path relative to the manifest's folder.")
ERROR_NO_LABEL_COLUMN = (
    "Manifest {path} has no label column '{column}' (columns found: {columns}). Add it, or pass "
    "--label-column with the column that holds the class names.")
ERROR_LABEL_COLUMN_CLASH = (
    "Manifest {path} has a column 'label' besides the label column '{column}'. Rename or drop the column "
    "'label' (it is reserved for the class labels).")
ERROR_RESERVED_COLUMN = (
    "{path} has a column '{column}', a name the audit reserves for its own data. Rename the column.")
ERROR_DUPLICATE_COLUMN = (
    "{path} has the column '{column}' more than once. Give every column a unique name.")
ERROR_WRONG_DELIMITER = (
    "Manifest {path} has a single column '{header}': it looks separated by {delimiter} instead of commas. "
    "Save it as a comma-separated CSV (UTF-8, with a header row).")
ERROR_MISSING_LABEL = (
    "Manifest {path}, {where}: the label column '{column}' holds '{value}', which reads as a missing value. "
    "Give the image its class name or remove the row.")
ERROR_DUPLICATE_ID = (
    "Manifest {path}: {first} and {second} have the same id '{id}'. Ids (the 'id' column, else the path) "
    "must be unique; fix or remove one of the rows.")
ERROR_EMPTY_ID = (
    "Manifest {path}, {where}: the 'id' column is empty. Give every row an id or drop the 'id' column.")
ERROR_EMPTY_PATH = (
    "Manifest {path}, {where}: the 'path' column is empty. Give every row an image path or remove the row.")
ERROR_EMPTY_LABEL = (
    "Manifest {path}, {where}: the label column '{column}' is empty. Give every image a class name or "
    "remove the row.")
ERROR_LABEL_NOT_IN_CLASSES = (
    "{path}, {where}: label '{label}' is not one of the given classes ({classes}). Add it to the class list "
    "or fix the label.")
ERROR_DUPLICATE_CLASSES = "The class list repeats '{label}'. Give each class name once."
ERROR_UNKNOWN_GROUP_COLUMN = (
    "Group attribute '{column}' (--group-by) is not an attribute column of {path}. Available attribute "
    "columns: {available}.")
ERROR_GROUP_BY_RESERVED = (
    "Group attribute '{column}' (--group-by) is a reserved column (id, path, label, split, row, "
    "content_hash) and cannot be a group attribute. Choose among: {available}.")
ERROR_GROUP_BY_TOO_MANY = (
    "Group attribute '{column}' (--group-by) has {n} distinct values, more than the cap of {cap}: each value "
    "would be a group (an identifier or free text?). Group a coarser column, bin the values, or leave "
    "'{column}' out of --group-by (it is kept as metadata).")
ERROR_ATTRIBUTES_NOT_FOUND = "Attribute file {path} does not exist. Check the path given with --attributes."
ERROR_ATTRIBUTES_UNSUPPORTED = "Attribute file {path} is not a .csv or .parquet file. Pass a CSV or Parquet table."
ERROR_ATTRIBUTES_NO_KEY = (
    "Attribute file {path} has neither an 'id' nor a 'path' column (columns found: {columns}). Add one of "
    "them to join it to the data set.")
ERROR_ATTRIBUTES_EMPTY_KEY = (
    "Attribute file {path}, {where}: the join column '{column}' is empty. Fill it or remove the row.")
ERROR_ATTRIBUTES_DUPLICATE_KEY = (
    "Attribute file {path}: {first} and {second} have the same {column} '{value}'. Keep one row per image.")
ERROR_ATTRIBUTES_COLUMN_CLASH = (
    "Attribute file {path} has the column '{column}', which the manifest {data} already has. Rename the "
    "column in one of the files.")
ERROR_NO_CLASS_FOLDERS = (
    "ImageFolder {path} has no class folders. Put images in {path}/<class>/ (or {path}/<split>/<class>/), "
    "or pass a CSV/Parquet manifest.")
ERROR_EMPTY_DATASET = (
    "No usable images in {path}: {n_skipped} input(s) skipped ({reasons}). Check that the paths point to "
    "existing image files (relative paths are read from the manifest's folder; files outside --data-root, "
    "when given, are refused).")
ERROR_LABEL_NOT_A_MODEL_CLASS = (
    "{path}, {where}: label '{label}' is not a class of the model (model classes: {model}). Fix the label (a "
    "typo?) in column '{column}', or map a model class to it with --class-map (a row '<model class>,{label}').")
ERROR_DATA_ROOT = "--data-root {path} is not a folder: give the folder that holds every image, or leave it out"
ERROR_SINGLE_CLASS = (
    "{path} has images of only one class ('{label}'): an audit needs at least 2 classes. Add images of "
    "other classes or check the label column.")

NOTE_UNMATCHED_ATTRIBUTE_ROWS = (
    "{n} row(s) of the attribute file {path} match no image of the data set and were ignored "
    "(first: {column} '{value}').")


# ==========================================================================================================
# public entry point
# ==========================================================================================================

def load_dataset(data: str | os.PathLike, *, label_column: str = "label", group_by: list[str] | None = None,
                 attributes_file: str | os.PathLike | None = None, classes: list[str] | None = None,
                 max_group_values: int = MAX_GROUP_VALUES, classes_source: str = "classes file",
                 data_root: str | os.PathLike | None = None) -> Dataset:
    """Read an ImageFolder tree or a CSV/Parquet manifest into a validated :class:`Dataset`.

    Parameters
    ----------
    data : str or path
        An ImageFolder directory, or a ``.csv`` / ``.parquet`` manifest (see the module docstring).
    label_column : str, default "label"
        Manifest column holding the class names (renamed ``label`` in the table).
    group_by : list of str, optional
        Attribute columns to analyse as groups, in this order (a comma-separated string is split).
        Default: the low-cardinality rule.
    attributes_file : str or path, optional
        A CSV/Parquet attribute table joined by ``id`` (else ``path``).
    classes : list of str, optional
        The class order. Every label must be one of them. Default: the sorted unique labels.
    max_group_values : int, default 50
        Attribute columns with more distinct values are metadata, not groups (when ``group_by`` is None).
    classes_source : str, default "classes file"
        Recorded as ``class_order_source`` when ``classes`` is given (e.g. ``"model"``).
    data_root : str or path, optional
        Confine reads: an image whose real path (after symlinks) lies outside this folder is a counted skip
        (:data:`SKIP_OUTSIDE_DATA_ROOT`). Default None: the user owns the manifest, so absolute paths, ``..``
        and symlinks into a store elsewhere (DVC, git-annex, the Hugging Face cache) are read. The app
        always confines uploads to their folder.

    Returns
    -------
    Dataset
        ``table`` columns: ``row``, ``id``, ``path`` (absolute), ``label``, ``split`` (when known), then the
        attribute columns (strings or None). ``kind`` is ``imagefolder``, ``csv`` or ``parquet``.

    Raises
    ------
    InputError
        With one of this module's ``ERROR_*`` messages.
    """
    source = str(data)
    data_path = Path(data)
    if not data_path.exists():
        raise InputError(ERROR_DATA_NOT_FOUND.format(path=source), source=source)
    if classes is not None:
        classes = [str(c) for c in classes]
        repeated = [c for c, n in Counter(classes).items() if n > 1]
        if repeated:
            raise InputError(ERROR_DUPLICATE_CLASSES.format(label=repeated[0]), source=source)

    confine = None
    if data_root is not None:
        if not Path(data_root).is_dir():
            raise InputError(ERROR_DATA_ROOT.format(path=data_root), source=str(data_root), column="--data-root")
        confine = os.path.realpath(data_root)
    if data_path.is_dir():
        kind = "imagefolder"
        root = Path(os.path.realpath(data_path))
        table, skipped = _scan_imagefolder(root, source, confine)
    else:
        kind = _table_kind(data_path)
        if kind is None:
            raise InputError(ERROR_UNSUPPORTED_DATA.format(path=source), source=source)
        root = Path(os.path.realpath(data_path.parent))
        table, skipped = _load_manifest(data_path, kind, root, source, label_column, confine)

    notes: list[str] = []
    if attributes_file is not None:
        table = _join_attributes(table, Path(attributes_file), notes, source)

    if table.empty:
        raise InputError(_empty_message(source, skipped), source=source)

    class_order, order_source = _class_order(table, classes, classes_source, source, kind)
    present = table["label"].unique()
    if len(present) < 2:
        raise InputError(ERROR_SINGLE_CLASS.format(path=source, label=present[0]), source=source)

    attribute_columns = [c for c in table.columns if c not in RESERVED_COLUMNS]
    group_attributes, metadata_columns = _choose_groups(table, attribute_columns, group_by,
                                                        max_group_values, source)
    table = table.reset_index(drop=True)
    table.attrs["notes"] = tuple(notes)
    extra = {}
    if "notes" in {f.name for f in dataclasses.fields(Dataset)}:
        extra["notes"] = tuple(notes)
    return Dataset(table=table, classes=tuple(class_order), group_attributes=tuple(group_attributes),
                   metadata_columns=tuple(metadata_columns), root=root, source=source, kind=kind,
                   skipped=tuple(skipped), class_order_source=order_source, **extra)


def is_image_file(name: str) -> bool:
    """True when ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# ==========================================================================================================
# ImageFolder
# ==========================================================================================================

def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in IGNORED_FOLDERS


def _list_dir(path: Path) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """Visible sub-directories and files of ``path`` (symlinked directories count as directories)."""
    dirs, files = [], []
    with os.scandir(path) as entries:
        for entry in entries:
            if not _visible(entry.name):
                continue
            (dirs if entry.is_dir() else files).append(entry)
    dirs.sort(key=lambda e: e.name)
    files.sort(key=lambda e: e.name)
    return dirs, files


def _is_split_layout(root: Path) -> bool:
    top_dirs, _ = _list_dir(root)
    if not top_dirs:
        return False
    for top in top_dirs:
        sub_dirs, files = _list_dir(Path(top.path))
        if not sub_dirs or any(is_image_file(f.name) for f in files):
            return False
    return True


def _walk_files(folder: Path) -> list[str]:
    """Absolute paths of every visible file below ``folder`` (not following symlinked folders)."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        found.extend(os.path.join(current, f) for f in files if _visible(f))
        # symlinked directories are listed in dirs but not walked: treat them as files to check below
        for d in list(dirs):
            if os.path.islink(os.path.join(current, d)):
                dirs.remove(d)
                found.append(os.path.join(current, d))
    return found


def _scan_imagefolder(root: Path, source: str, confine: str | None) -> tuple[pd.DataFrame, list[SkipEntry]]:
    split_layout = _is_split_layout(root)
    top_dirs, top_files = _list_dir(root)
    if not top_dirs:
        raise InputError(ERROR_NO_CLASS_FOLDERS.format(path=source), source=source)
    listing: list[tuple[str, str, str | None]] = []  # (relative posix path, label, split)
    outside: list[str] = [os.path.join(root, f.name) for f in top_files]
    if split_layout:
        for split_dir in top_dirs:
            class_dirs, loose = _list_dir(Path(split_dir.path))
            outside.extend(f.path for f in loose)
            for class_dir in class_dirs:
                for file in _walk_files(Path(class_dir.path)):
                    listing.append((_relative(file, root), class_dir.name, split_dir.name))
    else:
        for class_dir in top_dirs:
            for file in _walk_files(Path(class_dir.path)):
                listing.append((_relative(file, root), class_dir.name, None))
    listing.sort(key=lambda item: item[0])

    skipped: list[SkipEntry] = [SkipEntry(None, _relative(p, root), SKIP_OUTSIDE_CLASS_FOLDER)
                                for p in sorted(outside)]
    rows, ids, paths, labels, splits = [], [], [], [], []
    root_real = str(root)
    position = 0
    for relative, label, split in listing:
        absolute = os.path.join(root_real, *relative.split("/"))
        if not is_image_file(relative):
            extension = os.path.splitext(relative)[1]
            skipped.append(SkipEntry(None, relative, SKIP_NOT_IMAGE_EXTENSION.format(
                extension=extension, extensions=" ".join(IMAGE_EXTENSIONS))))
            continue
        row = position
        position += 1
        if confine is not None and not _inside(os.path.realpath(absolute), confine):
            skipped.append(SkipEntry(row, relative, SKIP_OUTSIDE_DATA_ROOT))
            continue
        if not os.path.isfile(absolute):
            skipped.append(SkipEntry(row, relative, SKIP_NOT_A_FILE if os.path.exists(absolute) else SKIP_NOT_FOUND))
            continue
        rows.append(row)
        ids.append(relative)
        paths.append(absolute)
        labels.append(label)
        splits.append(split)
    columns = {"row": rows, "id": ids, "path": paths, "label": labels}
    if split_layout:
        columns["split"] = splits
    return _object_frame(columns), skipped


def _relative(path: str, root: Path) -> str:
    return PurePosixPath(Path(os.path.relpath(path, root)).as_posix()).as_posix()


def _inside(real_path: str, real_root: str) -> bool:
    return real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep)


# ==========================================================================================================
# CSV / Parquet manifests
# ==========================================================================================================

def _table_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return None


def check_labels_in(dataset: Dataset, model_classes, *, label_column: str = "label") -> None:
    """Raise :data:`ERROR_LABEL_NOT_A_MODEL_CLASS` for the first image whose label the model does not know.

    Checked before any image is read, so a typo in one label costs no model run. The message names the
    manifest (or folder), the row and the label column.
    """
    known = {str(c) for c in model_classes}
    table = dataset.table
    unknown = ~table["label"].astype(str).isin(known)
    if not unknown.any():
        return
    first = table.loc[unknown].iloc[0]
    kind = dataset.kind
    where = _where(int(first["row"]), kind, dataset.source) if kind in ("csv", "parquet") else f"file {first['id']}"
    shown = ", ".join(list(map(str, model_classes))[:20]) + (", ..." if len(model_classes) > 20 else "")
    raise InputError(ERROR_LABEL_NOT_A_MODEL_CLASS.format(path=dataset.source, where=where, label=first["label"],
                                                          model=shown, column=label_column),
                     source=dataset.source, row=int(first["row"]), column=label_column)


def _where(row: int, kind: str, path=None) -> str:
    """'row 3 (line 5)' for CSV, 'row 3' for Parquet; rows are 0-based data rows.

    The CSV line is the physical line where the row starts in ``path`` (a quoted field may hold newlines, so
    it is counted with the csv module, only when a message needs it); without ``path``, header on line 1
    and one line a row.
    """
    if kind != "csv":
        return f"row {row}"
    line = _csv_line(path, row) if path is not None else None
    return f"row {row} (line {line if line is not None else row + 2})"


def _csv_line(path, row: int) -> int | None:
    """Physical line (1-based) where data row ``row`` (0-based, blank lines skipped as pandas does) starts."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)  # the header
            previous_end = reader.line_num
            seen = -1
            for record in reader:
                start, previous_end = previous_end + 1, reader.line_num
                if not record or (len(record) == 1 and record[0] == ""):
                    continue  # a blank line, which pandas skips
                seen += 1
                if seen == row:
                    return start
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration):
        return None
    return None


def is_engine_column(name: str) -> bool:
    """True when the engine writes a per-image column of this name (see :data:`ENGINE_COLUMNS`)."""
    return (name in ENGINE_COLUMNS or bool(_ENGINE_ISSUE_COLUMN.match(name))
            or any(name == f"{issue}_score" for issue in ENGINE_ISSUES))


def _read_table(path: Path, kind: str) -> pd.DataFrame:
    """Read a CSV (every cell as text, nothing turned into NaN) or a Parquet file."""
    label = "CSV" if kind == "csv" else "Parquet"
    try:
        if kind == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
        else:
            import pyarrow.parquet as pq

            # pyarrow refuses to read a file with a repeated column name with an obscure message: check first
            schema_names = [str(c).strip() for c in pq.read_schema(path).names]
            repeated = [c for c, n in Counter(schema_names).items() if n > 1]
            if repeated:
                raise InputError(ERROR_DUPLICATE_COLUMN.format(path=path, column=repeated[0]), source=str(path),
                                 column=repeated[0])
            frame = pd.read_parquet(path)
    except (MemoryError, InputError):
        raise
    except Exception as error:  # pandas, the csv module and pyarrow raise many types for a broken file
        text = str(error).strip()
        detail = text.splitlines()[0].rstrip(".") if text else type(error).__name__
        raise InputError(ERROR_UNREADABLE_TABLE.format(path=path, kind=label, detail=detail),
                         source=str(path)) from error
    names = [str(c).strip() for c in frame.columns]
    if kind == "csv":
        # pandas renames a repeated header 'a' to 'a.1': look at the raw header line instead
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
        names_to_check = [h.strip() for h in header]
    else:
        names_to_check = names
    repeated = [c for c, n in Counter(names_to_check).items() if n > 1]
    if repeated:
        raise InputError(ERROR_DUPLICATE_COLUMN.format(path=path, column=repeated[0]), source=str(path),
                         column=repeated[0])
    frame.columns = names
    return frame


def _cell_to_str(value, *, attribute: bool) -> str | None:
    """One cell as a clean string, or None when missing (see the module docstring)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isinf(number):
            return str(number)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value).strip()
    if text == "" or (attribute and text in MISSING_TOKENS):
        return None
    return text


def _column_to_str(values, *, attribute: bool, shared: bool = False) -> list:
    """Every cell as its text (:func:`_cell_to_str`). ``shared``: equal texts are one string object, so a
    column of few distinct values (a label, an attribute) costs a pointer per row, not a string per row
    (about 150 MB for three such columns at 1.28M rows)."""
    texts = [_cell_to_str(v, attribute=attribute) for v in values]
    if shared:
        first: dict = {}
        texts = [first.setdefault(t, t) if t is not None else None for t in texts]
    return texts


def _object_frame(columns: dict) -> pd.DataFrame:
    """``row`` as int64, every other column object dtype (None stays None, not NaN or pd.NA)."""
    return pd.DataFrame({name: pd.Series(values, dtype="int64" if name == "row" else object)
                         for name, values in columns.items()})


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _load_manifest(path: Path, kind: str, root: Path, source: str, label_column: str,
                   confine: str | None) -> tuple[pd.DataFrame, list[SkipEntry]]:
    raw = _read_table(path, kind)
    columns = list(raw.columns)
    if kind == "csv" and len(columns) == 1:
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
            if delimiter in columns[0]:
                raise InputError(ERROR_WRONG_DELIMITER.format(path=source, header=columns[0].replace("\t", "\\t"),
                                                              delimiter=name), source=source)
    shown = ", ".join(repr(c) for c in columns) if columns else "none"
    if "path" not in columns:
        raise InputError(ERROR_NO_PATH_COLUMN.format(path=source, columns=shown), source=source, column="path")
    if label_column not in columns:
        raise InputError(ERROR_NO_LABEL_COLUMN.format(path=source, column=label_column, columns=shown),
                         source=source, column=label_column)
    if label_column != "label" and "label" in columns:
        raise InputError(ERROR_LABEL_COLUMN_CLASH.format(path=source, column=label_column), source=source,
                         column="label")
    for reserved in ("row", "content_hash"):
        if reserved in columns:
            raise InputError(ERROR_RESERVED_COLUMN.format(path=source, column=reserved), source=source,
                             column=reserved)
    for column in columns:
        if column.startswith("image_") or is_engine_column(column):
            raise InputError(ERROR_RESERVED_COLUMN.format(path=source, column=column), source=source,
                             column=column)

    n = len(raw)
    paths = _column_to_str(raw["path"].tolist(), attribute=False)
    labels = _column_to_str(raw[label_column].tolist(), attribute=False, shared=True)
    has_id = "id" in columns
    given_ids = _column_to_str(raw["id"].tolist(), attribute=False) if has_id else None
    splits = _column_to_str(raw["split"].tolist(), attribute=False, shared=True) if "split" in columns else None
    attribute_names = [c for c in columns if c not in ("path", "id", "split", label_column)]

    for row in range(n):
        if paths[row] is None:
            raise InputError(ERROR_EMPTY_PATH.format(path=source, where=_where(row, kind, source)), source=source,
                             row=row, column="path")
        if labels[row] is None:
            raise InputError(ERROR_EMPTY_LABEL.format(path=source, where=_where(row, kind, source),
                                                      column=label_column),
                             source=source, row=row, column=label_column)
        if labels[row] in LABEL_MISSING_TOKENS:
            raise InputError(ERROR_MISSING_LABEL.format(path=source, where=_where(row, kind, source),
                                                        column=label_column,
                                                        value=labels[row]),
                             source=source, row=row, column=label_column)
        if has_id and given_ids[row] is None:
            raise InputError(ERROR_EMPTY_ID.format(path=source, where=_where(row, kind, source)), source=source,
                             row=row, column="id")

    root_text = str(root)
    # a normalised path under the root: its id is the rest of the path (what relpath gives, without its cost)
    prefix = root_text.rstrip(os.sep) + os.sep
    absolute_paths: list[str] = []
    ids: list[str] = []
    for row in range(n):
        given = paths[row].replace("\\", "/") if os.sep == "/" else paths[row]
        if os.path.isabs(given) or _DRIVE.match(given):
            absolute = os.path.normpath(given)
        else:
            absolute = os.path.normpath(os.path.join(root_text, given))
        absolute_paths.append(absolute)
        if has_id:
            ids.append(given_ids[row])
        elif _DRIVE.match(given):
            ids.append(given)
        elif os.sep == "/" and absolute.startswith(prefix):
            ids.append(absolute[len(prefix):])
        elif _inside(absolute, root_text):
            ids.append(Path(os.path.relpath(absolute, root_text)).as_posix())
        else:  # outside the manifest's folder: the absolute path is the id (unique, says where it is)
            ids.append(Path(absolute).as_posix())

    keep: list[int] = []
    skipped: list[SkipEntry] = []
    for row in range(n):
        absolute = absolute_paths[row]
        if "\x00" in absolute:  # os.path.realpath raises ValueError on it; no file can have such a name
            skipped.append(SkipEntry(row, paths[row].replace("\x00", "\\x00"), SKIP_INVALID_PATH))
        elif _DRIVE.match(paths[row]):  # a Windows drive path names no file on this system
            skipped.append(SkipEntry(row, paths[row], SKIP_PATH_ESCAPES))
        elif confine is not None and not _inside(os.path.realpath(absolute), confine):
            skipped.append(SkipEntry(row, paths[row], SKIP_OUTSIDE_DATA_ROOT))
        elif not os.path.isfile(absolute):
            reason = SKIP_NOT_A_FILE if os.path.exists(absolute) else SKIP_NOT_FOUND
            skipped.append(SkipEntry(row, paths[row], reason))
        else:
            keep.append(row)

    # Given ids must be unique on every row; path-derived ids only among usable rows (two rows naming the
    # same file twice), since a skipped row is not audited.
    first_row: dict[str, int] = {}
    for row in (range(n) if has_id else keep):
        identifier = ids[row]
        if identifier in first_row:
            raise InputError(ERROR_DUPLICATE_ID.format(path=source, first=_where(first_row[identifier], kind, source),
                                                       second=_where(row, kind, source), id=identifier),
                             source=source, row=row, column="id" if has_id else "path")
        first_row[identifier] = row

    columns_out: dict[str, list] = {
        "row": keep,
        "id": [ids[r] for r in keep],
        "path": [absolute_paths[r] for r in keep],
        "label": [labels[r] for r in keep],
    }
    if splits is not None:
        columns_out["split"] = [splits[r] for r in keep]
    for name in attribute_names:
        values = _column_to_str(raw[name].tolist(), attribute=True, shared=True)
        columns_out[name] = [values[r] for r in keep]
    return _object_frame(columns_out), skipped


# ==========================================================================================================
# attribute table
# ==========================================================================================================

def _join_attributes(table: pd.DataFrame, path: Path, notes: list[str], data_source: str) -> pd.DataFrame:
    source = str(path)
    if not path.is_file():
        raise InputError(ERROR_ATTRIBUTES_NOT_FOUND.format(path=source), source=source)
    kind = _table_kind(path)
    if kind is None:
        raise InputError(ERROR_ATTRIBUTES_UNSUPPORTED.format(path=source), source=source)
    raw = _read_table(path, kind)
    columns = list(raw.columns)
    if "id" in columns:
        key = "id"
    elif "path" in columns:
        key = "path"
    else:
        shown = ", ".join(repr(c) for c in columns) if columns else "none"
        raise InputError(ERROR_ATTRIBUTES_NO_KEY.format(path=source, columns=shown), source=source)
    for column in columns:
        if column in ("id", "path"):
            continue
        if column in RESERVED_COLUMNS or column.startswith("image_") or is_engine_column(column):
            raise InputError(ERROR_RESERVED_COLUMN.format(path=source, column=column), source=source,
                             column=column)
        if column in table.columns:
            raise InputError(ERROR_ATTRIBUTES_COLUMN_CLASH.format(path=source, column=column, data=data_source),
                             source=source, column=column)

    keys = _column_to_str(raw[key].tolist(), attribute=False)
    base = Path(os.path.realpath(path.parent))
    first_row: dict[str, int] = {}
    for row, value in enumerate(keys):
        if value is None:
            raise InputError(ERROR_ATTRIBUTES_EMPTY_KEY.format(path=source, where=_where(row, kind, source),
                                                              column=key),
                             source=source, row=row, column=key)
        if key == "path":
            given = value.replace("\\", "/") if os.sep == "/" else value
            value = os.path.normpath(given if os.path.isabs(given) else os.path.join(base, given))
            keys[row] = value
        if value in first_row:
            raise InputError(ERROR_ATTRIBUTES_DUPLICATE_KEY.format(
                path=source, first=_where(first_row[value], kind, source), second=_where(row, kind, source), column=key,
                value=raw[key].iloc[row]), source=source, row=row, column=key)
        first_row[value] = row

    table_keys = table["id"].tolist() if key == "id" else table["path"].tolist()
    positions = [first_row.get(k) for k in table_keys]
    matched = {p for p in positions if p is not None}
    unmatched = [r for r in range(len(keys)) if r not in matched]
    if unmatched:
        notes.append(NOTE_UNMATCHED_ATTRIBUTE_ROWS.format(n=len(unmatched), path=source, column=key,
                                                          value=raw[key].iloc[unmatched[0]]))
    table = table.copy()
    for column in columns:
        if column in ("id", "path"):
            continue
        values = _column_to_str(raw[column].tolist(), attribute=True, shared=True)
        table[column] = pd.Series([values[p] if p is not None else None for p in positions], dtype=object,
                                  index=table.index)
    return table


# ==========================================================================================================
# classes and groups
# ==========================================================================================================

def _class_order(table: pd.DataFrame, classes, classes_source: str, source: str, kind: str):
    if classes is None:
        return sorted(table["label"].unique().tolist()), "sorted"
    allowed = set(classes)
    for position, label in enumerate(table["label"].tolist()):
        if label not in allowed:
            row = int(table["row"].iloc[position])
            where = _where(row, kind, source) if kind != "imagefolder" else f"image {table['id'].iloc[position]}"
            shown = ", ".join(repr(c) for c in classes)
            raise InputError(ERROR_LABEL_NOT_IN_CLASSES.format(path=source, where=where, label=label,
                                                               classes=shown),
                             source=source, row=row, column="label")
    return list(classes), classes_source


def _choose_groups(table: pd.DataFrame, attribute_columns: list[str], group_by, max_group_values: int,
                   source: str) -> tuple[list[str], list[str]]:
    available = ", ".join(repr(c) for c in attribute_columns) if attribute_columns else "none"
    if isinstance(group_by, str):  # "race,age" as typed on the command line
        group_by = [name for name in group_by.split(",") if name.strip()]
    if group_by is not None:
        chosen = []
        for column in group_by:
            column = str(column).strip()
            if column in RESERVED_COLUMNS:
                raise InputError(ERROR_GROUP_BY_RESERVED.format(column=column, available=available),
                                 source=source, column=column)
            if column not in attribute_columns:
                raise InputError(ERROR_UNKNOWN_GROUP_COLUMN.format(column=column, path=source,
                                                                   available=available),
                                 source=source, column=column)
            n_distinct = int(table[column].nunique(dropna=True)) if column in table.columns else 0
            if n_distinct > MAX_GROUP_BY_VALUES:
                raise InputError(ERROR_GROUP_BY_TOO_MANY.format(column=column, n=n_distinct, cap=MAX_GROUP_BY_VALUES),
                                 source=source, column=column)
            if column not in chosen:
                chosen.append(column)
        return chosen, [c for c in attribute_columns if c not in chosen]
    groups, metadata = [], []
    for column in attribute_columns:
        values = table[column].dropna()
        n_distinct = values.nunique()
        id_like = len(values) >= ID_LIKE_MIN_VALUES and n_distinct == len(values)
        if 0 < n_distinct <= max_group_values and not id_like:
            groups.append(column)
        else:
            metadata.append(column)
    return groups, metadata


def _empty_message(source: str, skipped: list[SkipEntry]) -> str:
    reasons = Counter(entry.reason.split(" (")[0] for entry in skipped)
    shown = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "no image files found"
    return ERROR_EMPTY_DATASET.format(path=source, n_skipped=len(skipped), reasons=shown)
