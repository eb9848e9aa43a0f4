"""Read a file of model outputs (``--predictions``) and line it up with the data set table.

Accepted files:

- CSV or Parquet with a key column, ``id`` (matched against the table's ``id``) or else ``path``, and one
  numeric column per class, named exactly as the class. A ``path`` may be absolute, relative to the
  predictions file's folder, relative to the data root, or the string the table's ``id`` holds (for
  manifests without ids that is the path relative to the data root). Columns named ``label``, ``split``,
  ``row`` or ``content_hash`` (and ``path`` when ``id`` is the key) are ignored; any other column that is not
  a class is an error, because it is most likely a misspelt class. Rows that match no image of the table
  are ignored and counted in the message (the table may have left out undecodable images).
- NPY ``(N, K)`` (``allow_pickle=False``), columns in class order, rows in table order; when ``N`` is
  larger than the table and the table's ``row`` column (position in the source manifest) fits inside
  ``N``, rows are taken by ``row`` (the file was written for the whole manifest, some images were left out).

``kind`` (decided by :class:`KindDecider`, the one rule shared by ``run`` and ``label-noise``):
``"probabilities"`` requires every row to lie in [0, 1] and sum to 1 within a tolerance set by the file's
dtype (:func:`probability_tolerance`: 1e-4 for float64 text and float32 up to 1e-2 for float16);
``"logits"`` applies a softmax; ``"auto"`` decides per file: every row probability-like -> probabilities,
no row probability-like -> logits, a mix -> an error naming the first row of the minority kind (one row
summing to 0.98 no longer turns a whole file into logits). The choice is said in the result's ``message``
(and on the CLI summary line).

Row counts: an NPY has one row per data set image (in order) or one row per manifest row
(``n_source_rows``, taken by the images' ``row``); any other count is an error, never a silent cut.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.model.inference import one_line, softmax

__all__ = ["PredictionsResult", "load_predictions", "PREDICTION_KINDS", "SUM_TOLERANCE"]

PREDICTION_KINDS = ("auto", "probabilities", "logits")
#: Rows whose values lie in [0, 1] and sum to 1 within this are probabilities.
SUM_TOLERANCE = 1e-4
_IGNORED_COLUMNS = ("label", "split", "row", "content_hash")

ERROR_PREDICTIONS_NOT_FOUND = "Predictions file {file} does not exist or is not a file. Check the --predictions path."
ERROR_PREDICTIONS_FORMAT = (
    "Predictions file {file} has an unsupported extension '{suffix}'. Use .csv, .parquet or .npy."
)
ERROR_PREDICTIONS_KIND = "--predictions-kind must be one of auto, probabilities, logits; got '{kind}'."
ERROR_PREDICTIONS_UNREADABLE = "Cannot read the predictions file {file}: {reason}."
ERROR_PREDICTIONS_NPY_SHAPE = (
    "Predictions file {file} must hold a 2-D numeric array (rows = images, columns = classes); found "
    "shape {shape} and dtype {dtype}."
)
ERROR_PREDICTIONS_N_COLUMNS = (
    "Predictions file {file} has {found} columns, but the data set has {n} classes ({classes}). Give one "
    "column per class, in class order."
)
ERROR_PREDICTIONS_N_ROWS = (
    "Predictions file {file} has {found} rows, but the data set has {n} images. Give one row per image, in "
    "the data set's row order, or use a CSV/Parquet file with an id or path column."
)
ERROR_PREDICTIONS_NO_KEY = (
    "Predictions file {file} has neither an 'id' nor a 'path' column, so its rows cannot be matched to "
    "images. Add one of them (or use a .npy file in data set row order)."
)
ERROR_PREDICTIONS_MISSING_CLASS = (
    "Predictions file {file} has no column for the class '{name}'. Give one column per class, named exactly "
    "as the class ({classes})."
)
ERROR_PREDICTIONS_UNKNOWN_CLASS = (
    "Predictions file {file} has a column '{column}', which is not a class of the data set (unknown "
    "label/class; classes: {classes}). Rename it to the right class or remove it."
)
ERROR_PREDICTIONS_NOT_NUMERIC = (
    "Predictions file {file}, row {row}, column '{column}': '{value}' is not a number."
)
ERROR_PREDICTIONS_NOT_FINITE = (
    "Predictions file {file}, row {row}{where}: the value in column '{column}' is {value}. Every "
    "prediction must be a finite number."
)
ERROR_PREDICTIONS_EMPTY_KEY = "Predictions file {file}, row {row}: the '{column}' value is empty."
ERROR_PREDICTIONS_DUPLICATE = (
    "Predictions file {file} gives two predictions for the same image: rows {first} and {second} "
    "('{column}' = '{value}'). Keep one row per image."
)
ERROR_PREDICTIONS_MISSING_ROW = (
    "Predictions file {file} has no prediction for {n_missing} image(s) of the data set, the first being "
    "id '{id}' (path {path}). Give a row for every image."
)
ERROR_PREDICTIONS_NOT_PROBABILITIES = (
    "Predictions file {file}, row {row}{where}: values must lie in [0, 1] and sum to 1 (within 1e-4) for "
    "--predictions-kind probabilities, but they sum to {total:.6g} (min {low:.6g}, max {high:.6g}). Use "
    "--predictions-kind logits if these are raw scores."
)

MESSAGE_AUTO_PROBABILITIES = (
    "--predictions-kind auto: every row of {file} lies in [0, 1] and sums to 1 (within 1e-4), so the values "
    "were read as probabilities."
)
MESSAGE_AUTO_LOGITS = (
    "--predictions-kind auto: the rows of {file} (from row {row}{where} on) do not lie in [0, 1] summing to 1 "
    "(within 1e-4), so the values were read as logits and converted with a softmax."
)
MESSAGE_GIVEN = "--predictions-kind {kind}: the values of {file} were read as {kind}{extra}."
ERROR_PREDICTIONS_MIXED = (
    "Predictions file {file}, row {row}{where}: {this}, but {n_other} other row(s) {that} (tolerance {tolerance:g} "
    "for {dtype} values), so --predictions-kind auto cannot tell probabilities from logits. Fix that row, or "
    "give --predictions-kind probabilities or logits."
)
_LOOKS_PROBABILITY = "the values lie in [0, 1] and sum to 1 like probabilities"
_LOOKS_LOGITS = "the values do not lie in [0, 1] summing to 1 (sum {total:.6g}, min {low:.6g}, max {high:.6g})"


def probability_tolerance(dtype, n_classes: int) -> float:
    """How far a row's sum may be from 1 (and its values outside [0, 1]) and still read as probabilities.

    ``max(1e-4, n_classes * eps(dtype))``, at most 1e-2: rounding each of ``K`` probabilities to the file's
    precision moves the sum by up to about ``K * eps / 2``. float64 (and text) and float32: 1e-4 for up
    to some hundreds of classes; float16 (eps 9.8e-4): 2e-3 for 2 classes, 1e-2 from 11 classes on.
    """
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0
    return float(min(1e-2, max(SUM_TOLERANCE, max(int(n_classes), 1) * eps)))


class KindDecider:
    """Decides how to read prediction values (``--predictions-kind``), row by row, fed in order.

    Parameters
    ----------
    kind : {"auto", "probabilities", "logits"}
    file : str
        The file, for messages.
    dtype : numpy dtype
        The values' dtype in the file (sets :func:`probability_tolerance`).
    n_classes : int
    where : callable, optional
        ``where(row)`` -> text naming the row's id/path in messages (``" (id/path 'x')"``).

    Notes
    -----
    ``auto``: the first :meth:`feed` decides by its majority (all rows of a whole file; the first chunk of a
    streamed one); any row of the other kind, then or later, is :data:`ERROR_PREDICTIONS_MIXED`.
    """

    def __init__(self, kind: str, *, file: str, dtype, n_classes: int, where=None):
        self.kind = kind
        self.file = file
        self.dtype = np.dtype(dtype)
        self.tolerance = probability_tolerance(self.dtype, n_classes)
        self.where = where or (lambda row: "")
        self.kind_used = None if kind == "auto" else kind
        self.message = "" if kind == "auto" else MESSAGE_GIVEN.format(
            kind=kind, file=file, extra=" (softmax applied)" if kind == "logits" else "")
        self._n_decided = 0
        self._within = "(within 1e-4)" if self.tolerance == SUM_TOLERANCE else f"(within {self.tolerance:.2g})"

    def probability_rows(self, values: np.ndarray) -> np.ndarray:
        """Rows in [0, 1] summing to 1, within the tolerance."""
        tolerance = self.tolerance
        sums = values.sum(axis=1)
        return (values.min(axis=1, initial=0.0) >= -tolerance) & (values.max(axis=1, initial=0.0) <= 1 + tolerance) \
            & (np.abs(sums - 1.0) <= tolerance)

    def feed(self, values: np.ndarray, rows: np.ndarray) -> None:
        """Check one block of finite float64 ``values`` whose file rows are ``rows``; raises InputError."""
        if self.kind == "logits" or len(values) == 0:
            return
        looks = self.probability_rows(values)
        if self.kind == "probabilities":
            if not looks.all():
                position = int(np.argmin(looks))
                row_values = values[position]
                raise InputError(ERROR_PREDICTIONS_NOT_PROBABILITIES.format(
                    file=self.file, row=int(rows[position]), where=self.where(int(rows[position])),
                    total=row_values.sum(), low=row_values.min(), high=row_values.max()).replace(
                    "(within 1e-4)", self._within), source=self.file, row=int(rows[position]))
            return
        n_prob = int(looks.sum())
        if self.kind_used is None:
            self.kind_used = "probabilities" if 2 * n_prob >= len(looks) else "logits"
            if self.kind_used == "probabilities":
                self.message = MESSAGE_AUTO_PROBABILITIES.format(file=self.file).replace(
                    "(within 1e-4)", self._within)
            else:
                self.message = MESSAGE_AUTO_LOGITS.format(row=int(rows[0]), where=self.where(int(rows[0])),
                                                          file=self.file).replace(
                    "(within 1e-4)", self._within)
        odd = ~looks if self.kind_used == "probabilities" else looks
        if odd.any():
            position = int(np.argmax(odd))
            row = int(rows[position])
            row_values = values[position]
            n_other = self._n_decided + int((~odd).sum())  # rows of the decided kind in the file so far
            if self.kind_used == "probabilities":
                this = _LOOKS_LOGITS.format(total=row_values.sum(), low=row_values.min(), high=row_values.max())
                that = "look like probabilities"
            else:
                this = _LOOKS_PROBABILITY
                that = "do not (logits)"
            raise InputError(ERROR_PREDICTIONS_MIXED.format(
                file=self.file, row=row, where=self.where(row), this=this, n_other=n_other, that=that,
                tolerance=self.tolerance, dtype=self.dtype.name), source=self.file, row=row)
        self._n_decided += len(values)

    def result(self) -> tuple[str, str]:
        """(kind_used, message); an empty file reads as probabilities."""
        if self.kind_used is None:
            self.kind_used = "probabilities"
            self.message = MESSAGE_AUTO_PROBABILITIES.format(file=self.file)
        return self.kind_used, self.message


@dataclass(frozen=True)
class PredictionsResult:
    """Predictions lined up with the data set table.

    Attributes
    ----------
    probabilities : numpy.ndarray
        ``(n_images, n_classes)`` float32, row ``i`` = table row ``i``, columns in ``classes`` order, each
        row summing to 1.
    kind_used : str
        ``"probabilities"`` or ``"logits"`` (softmax applied).
    message : str
        What was done, in one or two sentences (which kind was chosen, rows ignored).
    """

    probabilities: np.ndarray
    kind_used: str
    message: str

    def to_dict(self) -> dict:
        return {"kind_used": self.kind_used, "message": self.message,
                "n_images": int(self.probabilities.shape[0]), "n_classes": int(self.probabilities.shape[1])}


def _describe(value: float) -> str:
    """How a non-finite value is named in messages."""
    return "missing or NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def _short(names) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")


def _read_npy(path: Path, source: str, table: pd.DataFrame, classes: tuple, n_source_rows: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, str, np.dtype]:
    """Return (values (n_table, K), file row of each table row, note, the file's dtype)."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
        raise InputError(ERROR_PREDICTIONS_UNREADABLE.format(file=source, reason=one_line(exc)), source=source) from exc
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(ERROR_PREDICTIONS_NPY_SHAPE.format(file=source, shape=array.shape, dtype=array.dtype),
                         source=source)
    if array.shape[1] != len(classes):
        raise InputError(ERROR_PREDICTIONS_N_COLUMNS.format(file=source, found=array.shape[1], n=len(classes),
                                                            classes=_short(classes)), source=source)
    n_table = len(table)
    if array.shape[0] == n_table:
        return array.astype(np.float64), np.arange(n_table), "", array.dtype
    if n_source_rows is not None and array.shape[0] == n_source_rows and "row" in table.columns:
        rows = table["row"].to_numpy(dtype=np.int64)
        note = (f" The file has one row per manifest row ({array.shape[0]}) for {n_table} images; rows were taken "
                f"by the images' positions in the manifest.")
        return array[rows].astype(np.float64), rows, note, array.dtype
    expected = n_table if n_source_rows in (None, n_table) else f"{n_table} (or {n_source_rows} manifest rows)"
    raise InputError(ERROR_PREDICTIONS_N_ROWS.format(file=source, found=array.shape[0], n=expected), source=source)


def _read_frame(path: Path, source: str) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            # Everything as text first, so ids like "0001" survive and bad numbers can be named.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types
        raise InputError(ERROR_PREDICTIONS_UNREADABLE.format(file=source, reason=one_line(exc)), source=source) from exc
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _numeric_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    values = frame[column]
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype(str).str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        # Empty cells and "nan"/"inf" become non-finite numbers (reported later, with the row); anything
        # else that does not parse is not a number.
        bad = numbers.isna() & ~text.str.lower().isin(["", "nan", "-nan", "+nan", "na", "null"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(ERROR_PREDICTIONS_NOT_NUMERIC.format(file=source, row=row, column=column,
                                                                  value=text.iloc[row]),
                             source=source, row=row, column=column)
        return numbers.to_numpy(dtype=np.float64)
    if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
        raise InputError(ERROR_PREDICTIONS_NOT_NUMERIC.format(file=source, row=0, column=column,
                                                              value=values.iloc[0] if len(values) else ""),
                         source=source, row=0, column=column)
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _path_keys(value: str) -> list[str]:
    """Normalised absolute forms of a path, for matching (with and without symlinks resolved)."""
    normal = os.path.normpath(os.path.abspath(value))
    real = os.path.realpath(value)
    return [normal] if real == normal else [normal, real]


def _match_rows(frame: pd.DataFrame, key: str, source: str, path: Path, table: pd.DataFrame,
                root) -> tuple[np.ndarray, int]:
    """File row for each table row (-1 = none) and the number of file rows matching nothing."""
    keys = [str(v).strip() for v in frame[key].tolist()]
    lookup: dict[str, int] = {}
    table_ids = table["id"].astype(str).tolist()
    if key == "id":
        for position, value in enumerate(table_ids):
            lookup[value] = position
    else:
        table_paths = table["path"].tolist() if "path" in table.columns else []
        for position, value in enumerate(table_paths):
            if isinstance(value, str) and value:  # tables without image files carry empty paths
                for form in _path_keys(value):
                    lookup.setdefault(form, position)
        id_lookup = {value: position for position, value in enumerate(table_ids)}
    file_row_of = np.full(len(table), -1, dtype=np.int64)
    seen_value: dict[int, str] = {}
    unmatched = 0
    bases = [path.parent.resolve()]
    if root is not None:
        bases.insert(0, Path(root))
    for row, value in enumerate(keys):
        position = None
        if key == "id":
            position = lookup.get(value)
        else:
            # The string as the table holds it first, then absolute, data root, predictions folder.
            position = id_lookup.get(value)
            if position is None:
                candidates = [value] if os.path.isabs(value) else [os.path.join(str(b), value) for b in bases]
                for candidate in candidates:
                    for form in _path_keys(candidate):
                        if form in lookup:
                            position = lookup[form]
                            break
                    if position is not None:
                        break
        if position is None:
            unmatched += 1
            continue
        if file_row_of[position] >= 0:
            first = int(file_row_of[position])
            raise InputError(ERROR_PREDICTIONS_DUPLICATE.format(file=source, first=first, second=row, column=key,
                                                                value=seen_value.get(position, value)),
                             source=source, row=row, column=key)
        file_row_of[position] = row
        seen_value[position] = value
    return file_row_of, unmatched


def _duplicate_check(frame: pd.DataFrame, key: str, source: str) -> None:
    raw = frame[key].tolist()
    for row, value in enumerate(raw):
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
            raise InputError(ERROR_PREDICTIONS_EMPTY_KEY.format(file=source, row=row, column=key),
                             source=source, row=row, column=key)
    values = frame[key].astype(str).str.strip()
    duplicated = values.duplicated(keep="first").to_numpy()
    if duplicated.any():
        second = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero((values == values.iloc[second]).to_numpy())[0])
        raise InputError(ERROR_PREDICTIONS_DUPLICATE.format(file=source, first=first, second=second, column=key,
                                                            value=values.iloc[second]),
                         source=source, row=second, column=key)


def _read_table_file(path: Path, source: str, table: pd.DataFrame, classes: tuple, root
                     ) -> tuple[np.ndarray, np.ndarray, str, list]:
    frame = _read_frame(path, source)
    if "id" in frame.columns:
        key = "id"
    elif "path" in frame.columns:
        key = "path"
    else:
        raise InputError(ERROR_PREDICTIONS_NO_KEY.format(file=source), source=source)
    ignored = set(_IGNORED_COLUMNS) | {"id", "path"}
    for column in frame.columns:
        if column not in classes and column not in ignored:
            raise InputError(ERROR_PREDICTIONS_UNKNOWN_CLASS.format(file=source, column=column,
                                                                    classes=_short(classes)),
                             source=source, column=column)
    for name in classes:
        if name not in frame.columns:
            raise InputError(ERROR_PREDICTIONS_MISSING_CLASS.format(file=source, name=name, classes=_short(classes)),
                             source=source, column=name)
    _duplicate_check(frame, key, source)
    values = np.column_stack([_numeric_column(frame, name, source) for name in classes]) if len(frame) \
        else np.zeros((0, len(classes)))
    finite = np.isfinite(values)
    if not finite.all():
        row, column = (int(v) for v in np.argwhere(~finite)[0])
        where = f" ({key} '{frame[key].iloc[row]}')"
        raise InputError(ERROR_PREDICTIONS_NOT_FINITE.format(file=source, row=row, where=where, column=classes[column],
                                                             value=_describe(values[row, column])),
                         source=source, row=row, column=classes[column])
    file_row_of, unmatched = _match_rows(frame, key, source, path, table, root)
    missing = np.flatnonzero(file_row_of < 0)
    if len(missing):
        first = int(missing[0])
        raise InputError(ERROR_PREDICTIONS_MISSING_ROW.format(file=source, n_missing=len(missing),
                                                              id=table["id"].iloc[first],
                                                              path=table["path"].iloc[first]
                                                              if "path" in table.columns else "-"),
                         source=source)
    note = (f" {unmatched} row(s) of the file match no image of the data set and were ignored."
            if unmatched else "")
    return values[file_row_of], file_row_of, note, frame[key].astype(str).tolist()


def _bad_probability_rows(values: np.ndarray) -> np.ndarray:
    sums = values.sum(axis=1)
    return (values.min(axis=1, initial=0.0) < 0) | (values.max(axis=1, initial=0.0) > 1) \
        | (np.abs(sums - 1.0) > SUM_TOLERANCE)


def load_predictions(path: str | os.PathLike, *, table: pd.DataFrame, classes: tuple[str, ...],
                     kind: str = "auto", root: str | os.PathLike | None = None,
                     n_source_rows: int | None = None) -> PredictionsResult:
    """Read a predictions file and return probabilities aligned to ``table`` rows.

    Parameters
    ----------
    path : path
        ``.csv``, ``.parquet`` (or ``.pq``) or ``.npy`` (see module docstring for the layout).
    table : pandas.DataFrame
        The data set table (columns ``row``, ``id``, ``path``, ``label``, ...).
    classes : tuple of str
        The data set's class order; the result's columns follow it.
    kind : {"auto", "probabilities", "logits"}
    root : path, optional
        The data root, for ``path`` values relative to it.
    n_source_rows : int, optional
        Rows of the source manifest (kept + skipped): an NPY may have one row per manifest row instead of one
        per kept image.

    Returns
    -------
    PredictionsResult

    Raises
    ------
    InputError
        naming the file and the row or column for every problem listed in the module docstring.
    """
    source = str(path)
    path = Path(path)
    classes = tuple(str(c) for c in classes)
    if kind not in PREDICTION_KINDS:
        raise InputError(ERROR_PREDICTIONS_KIND.format(kind=kind), column="--predictions-kind")
    if not path.is_file():
        raise InputError(ERROR_PREDICTIONS_NOT_FOUND.format(file=source), source=source)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values, file_rows, note, dtype = _read_npy(path, source, table, classes, n_source_rows)
        keys = None
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            position = int(np.argmax(bad))
            column = int(np.argmax(~np.isfinite(values[position])))
            row = int(file_rows[position])
            raise InputError(ERROR_PREDICTIONS_NOT_FINITE.format(file=source, row=row, where="",
                                                                 column=classes[column],
                                                                 value=_describe(values[position, column])),
                             source=source, row=row, column=classes[column])
    elif suffix in (".csv", ".parquet", ".pq"):
        values, file_rows, note, keys = _read_table_file(path, source, table, classes, root)
        dtype = np.dtype(np.float64)
    else:
        raise InputError(ERROR_PREDICTIONS_FORMAT.format(file=source, suffix=suffix or "(none)"), source=source)

    decider = KindDecider(kind, file=source, dtype=dtype, n_classes=len(classes),
                          where=lambda row: "" if keys is None else f" (id/path '{keys[int(row)]}')")
    decider.feed(values, np.asarray(file_rows))
    kind_used, message = decider.result()
    if kind_used == "logits":
        probabilities = softmax(values) if len(values) else np.zeros((0, len(classes)), dtype=np.float32)
    else:
        # Within tolerance of 1: renormalise so every row sums to 1 in float32 as well.
        values = np.clip(values, 0.0, None)
        sums = values.sum(axis=1, keepdims=True)
        probabilities = (values / np.where(sums > 0, sums, 1.0)).astype(np.float32)
    return PredictionsResult(probabilities=probabilities, kind_used=kind_used, message=message + note)
