"""Input adapter of ``label-noise``: labels and predicted probabilities alone (no images, no model).

For users who already have out-of-sample probabilities (e.g. from cross-validation). The folder follows the
contract: sections that need images (pixel attributes, data quality) are absent; class distribution,
attribute distribution, associations, label noise and per-group performance of the given predictions are
computed as in a full run.

Memory: a ``.npy`` predictions file, or a Parquet file whose ``id`` column lists the labels' ids in the same
order, is read in chunks of about :data:`CHUNK_BYTES` of float64 working values and never held whole:

1. one *scan* checks every value (finite; for ``--predictions-kind probabilities`` in [0, 1] summing to 1),
   decides the kind (``auto``: the first chunk decides, and a later chunk that disagrees is an error naming
   its row), converts each chunk exactly as :func:`audit.model.predictions.load_predictions` converts the
   whole matrix (float64, renormalised or softmax, then float32) and keeps per image the prediction, its
   probability and the given label's probability;
2. up to :data:`IN_MEMORY_CELLS` values (N x K) the converted float32 matrix is also kept (at most 200 MB),
   and every analysis runs on it exactly as before; above, the analyses get a :class:`PredictionsStream`
   (converted chunks, re-read for each pass): label noise streams (three or four passes), group performance
   leaves out ``top_k_accuracy`` and ``expected_calibration_error`` (noted in its section), and the writer
   streams ``probabilities.npy``.

CSV predictions, and Parquet files whose rows are in another order, have extra rows or a ``path`` key, are
read whole by :func:`~audit.model.predictions.load_predictions` as before.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from audit.config import AuditConfig
from audit.errors import InputError
from audit.types import Dataset

ERROR_NPY_LABELS_NEED_CLASSES = ("labels file {path}: a .npy of class indices needs the class names; give --classes "
                                 "FILE (one class a line) or --predictions with named columns")
ERROR_NOTHING_TO_AUDIT = ("label-noise needs --predictions FILE (probabilities), --annotations FILE (several labels "
                          "per image), or both")
ERROR_LABELS_FILE_MISSING = "labels file {path} does not exist"
ERROR_PREDICTIONS_ONE_CLASS = ("predictions file {path} has {k} column(s): a classifier's predictions need one column "
                               "per class, at least two")
ERROR_LABELS_EMPTY = "labels file {path} has no rows: nothing to audit; give one row per image (id,label)"
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
ERROR_CLASSES_COUNT = ("classes file {path} lists {n} classes but the predictions file {predictions} has {k} columns: "
                       "give one class a line, in the predictions' column order (or predictions with one column "
                       "per class)")
ERROR_NO_CLASSES = ("cannot tell the class names: give --classes FILE (one class a line) or a predictions "
                    "CSV/Parquet whose columns are the class names")
ERROR_ATTRIBUTES_NO_ID = "attributes file {path}: needs an id column to join with the labels; found {columns}"
ERROR_ATTRIBUTES_DUPLICATE_ID = ("attributes file {path}: id {id!r} appears in rows {first} and {second}; keep one "
                                 "row per image")
ERROR_ATTRIBUTES_RESERVED = ("attributes file {path} has a column '{column}', a name the audit reserves for its own "
                             "data; rename the column")
ERROR_ROWS_DIFFER = ("predictions file {predictions} has {n_predictions} rows but labels file {labels} has "
                     "{n_labels}: a .npy predictions file must have one row per label, in the same order")
#: Up to this many values (N x K) the converted float32 matrix is also kept in memory (200 MB at most), so
#: every analysis runs as in a full audit; larger matrices are only ever held one chunk at a time.
IN_MEMORY_CELLS = 50_000_000
#: Rows per chunk are chosen so that one chunk of float64 working values takes about this many bytes.
CHUNK_BYTES = 32 * 2**20


def _read_table(path: str) -> pd.DataFrame:
    from audit.io.tables import read_table

    return read_table(path)


def load_classes_file(path: str) -> tuple[str, ...]:
    """One class name a line; blank lines ignored; names must be unique."""
    file = Path(path)
    if not file.is_file():
        raise InputError(ERROR_CLASSES_FILE.format(path=path, problem="file does not exist"), source=path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(ERROR_CLASSES_FILE.format(path=path, problem=f"not UTF-8 text ({error.reason} at byte "
                                                                      f"{error.start}); save it as UTF-8"),
                         source=path) from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) < 2:
        raise InputError(ERROR_CLASSES_FILE.format(path=path, problem="fewer than two class names"), source=path)
    seen = set()
    for name in names:
        if name in seen:
            raise InputError(ERROR_CLASSES_FILE.format(path=path, problem=f"class {name!r} is listed twice"),
                             source=path)
        seen.add(name)
    return tuple(names)


def _parquet_columns(path: str) -> list[str]:
    """Column names of a Parquet file as pandas would show them (index columns left out), from the schema."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    index = set()
    metadata = schema.pandas_metadata or {}
    for entry in metadata.get("index_columns", []):
        if isinstance(entry, str):
            index.add(entry)
    return [name for name in schema.names if name not in index]


def _predictions_classes(path: str) -> tuple[str, ...] | None:
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return None
    if suffix in (".parquet", ".pq") and Path(path).is_file():
        try:
            columns = _parquet_columns(path)
        except Exception:  # noqa: BLE001 - unreadable: let the table reader name the problem
            columns = list(_read_table(path).columns)
    else:
        columns = list(_read_table(path).columns)
    return tuple(str(c) for c in columns if c not in ("id", "path"))


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
        if values.size == 0:
            raise InputError(ERROR_LABELS_EMPTY.format(path=path), source=path)
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
    if len(frame) == 0:
        raise InputError(ERROR_LABELS_EMPTY.format(path=path), source=path)
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


def to_probabilities(values: np.ndarray, kind_used: str) -> np.ndarray:
    """float32 probabilities of one chunk of raw predictions, exactly as ``load_predictions`` converts them.

    The values are taken as float64; ``"logits"``: row-wise softmax; ``"probabilities"``: each row divided by
    its sum (rows already sum to 1 within 1e-4). Every row is converted on its own, so the result does not
    depend on how the file is cut into chunks.
    """
    from audit.model.inference import softmax

    values = np.asarray(values, dtype=np.float64)
    if kind_used == "logits":
        return softmax(values) if len(values) else np.zeros((0, values.shape[1]), dtype=np.float32)
    sums = values.sum(axis=1, keepdims=True)
    return (values / np.where(sums > 0, sums, 1.0)).astype(np.float32)


class PredictionsStream:
    """The converted float32 probabilities of a predictions file, produced chunk by chunk (a chunk source).

    Calling it returns a fresh iterator over consecutive ``(rows, K)`` float32 chunks (each a new array),
    re-reading the file and converting with :func:`to_probabilities` with the kind the scan decided. It is
    what :func:`audit.analysis.label_noise.estimate_label_noise` and
    :func:`audit.folder.write_audit_folder` accept in place of an array.

    Attributes
    ----------
    shape : tuple of int
        ``(N, K)``.
    dtype : numpy.dtype
        float32.
    kind_used : str
        ``"probabilities"`` or ``"logits"``.
    chunk_rows : int
        Rows per converted chunk (blocks of the file, e.g. Parquet row groups, are cut to this size).
    """

    dtype = np.dtype(np.float32)

    def __init__(self, raw_source, *, shape: tuple[int, int], kind_used: str, chunk_rows: int):
        self._raw_source = raw_source
        self.shape = (int(shape[0]), int(shape[1]))
        self.kind_used = kind_used
        self.chunk_rows = int(chunk_rows)

    def __call__(self):
        return self._chunks()

    def _chunks(self):
        for block in self._raw_source():
            for offset in range(0, block.shape[0], self.chunk_rows):
                yield to_probabilities(block[offset:offset + self.chunk_rows], self.kind_used)


@dataclass
class _Scan:
    kind_used: str
    message: str
    columns: object  # audit.analysis.prediction_columns.PredictionColumns
    array: np.ndarray | None


def _scan_predictions(raw_source, *, file: str, labels_file: str, n: int, classes: tuple[str, ...],
                      label_codes: np.ndarray, kind: str, chunk_rows: int, keys: list[str] | None,
                      keep: bool) -> _Scan:
    """One pass: validate every value, decide the kind, convert, keep the per-image columns (and the matrix)."""
    from audit.analysis.prediction_columns import PredictionColumns
    from audit.model.predictions import ERROR_PREDICTIONS_NOT_FINITE, KindDecider

    def where(row: int) -> str:
        return "" if keys is None else f" (id/path '{keys[row]}')"

    k = len(classes)
    predicted = np.empty(n, dtype=np.int64)
    confidence = np.empty(n, dtype=np.float32)
    label_probability = np.empty(n, dtype=np.float32)
    label_rank = np.empty(n, dtype=np.int64)
    array = np.empty((n, k), dtype=np.float32) if keep else None
    decider = None
    start = 0
    for block in raw_source():
        for offset in range(0, block.shape[0], chunk_rows):
            values = np.asarray(block[offset:offset + chunk_rows], dtype=np.float64)
            stop = start + values.shape[0]
            if stop > n:
                raise InputError(ERROR_ROWS_DIFFER.format(predictions=file, n_predictions=f"more than {n}",
                                                          labels=labels_file, n_labels=n), source=file)
            finite = np.isfinite(values)
            if not finite.all():
                row, column = (int(v) for v in np.argwhere(~finite)[0])
                value = values[row, column]
                text = "missing or NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
                where_key = "" if keys is None else f" (id '{keys[start + row]}')"
                raise InputError(ERROR_PREDICTIONS_NOT_FINITE.format(file=file, row=start + row, where=where_key,
                                                                     column=classes[column], value=text),
                                 source=file, row=start + row, column=classes[column])
            if decider is None:  # the one --predictions-kind rule (audit.model.predictions.KindDecider)
                decider = KindDecider(kind, file=file, dtype=getattr(block, "dtype", np.float64), n_classes=k,
                                      where=where)
            decider.feed(values, np.arange(start, stop))
            kind_used = decider.result()[0]
            chunk = to_probabilities(values, kind_used)
            del values, finite
            columns = PredictionColumns.of_chunk(chunk, label_codes[start:stop])
            (predicted[start:stop], confidence[start:stop], label_probability[start:stop],
             label_rank[start:stop]) = columns
            if array is not None:
                array[start:stop] = chunk
            start = stop
    if start != n:
        raise InputError(ERROR_ROWS_DIFFER.format(predictions=file, n_predictions=start, labels=labels_file,
                                                  n_labels=n),
                         source=file)
    if decider is None:  # no rows at all
        decider = KindDecider(kind, file=file, dtype=np.float64, n_classes=k, where=where)
    kind_used, message = decider.result()
    return _Scan(kind_used=kind_used, message=message,
                 columns=PredictionColumns(predicted=predicted, confidence=confidence,
                                           label_probability=label_probability, label_rank=label_rank),
                 array=array)


def _npy_header(path: str, *, source: str):
    """Shape and dtype of a ``.npy`` predictions file (InputError naming the file when unusable)."""
    from audit.io.arrays import read_npy_header
    from audit.model.predictions import ERROR_PREDICTIONS_NOT_FOUND, ERROR_PREDICTIONS_NPY_SHAPE

    if not Path(path).is_file():
        raise InputError(ERROR_PREDICTIONS_NOT_FOUND.format(file=source), source=source)
    shape, dtype, _ = read_npy_header(path)
    if dtype.kind not in "fiu":
        raise InputError(ERROR_PREDICTIONS_NPY_SHAPE.format(file=source, shape=shape, dtype=dtype), source=source)
    return shape, dtype


def _stream_plan(path: str, *, table: pd.DataFrame, classes: tuple[str, ...], labels_file: str):
    """``(raw chunk source, keys or None)`` when the file can be streamed in table order, else None.

    ``.npy``: always (its shape is checked against the labels here, before any pass). Parquet: when it has
    an ``id`` key column listing the table's ids in the same order and one int/float column per class (and
    no other column that is not a class); anything else goes to ``load_predictions``, which reads the file
    whole and names every problem as before.
    """
    from audit.io.arrays import iter_npy_chunks, iter_parquet_chunks
    from audit.model.predictions import ERROR_PREDICTIONS_N_COLUMNS, _IGNORED_COLUMNS

    suffix = Path(path).suffix.lower()
    n, k = len(table), len(classes)
    short = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    if suffix == ".npy":
        shape, _ = _npy_header(path, source=path)
        if shape[1] != k:
            raise InputError(ERROR_PREDICTIONS_N_COLUMNS.format(file=path, found=shape[1], n=k, classes=short),
                             source=path)
        if shape[0] != n:
            raise InputError(ERROR_ROWS_DIFFER.format(predictions=path, n_predictions=shape[0], labels=labels_file,
                                                      n_labels=n), source=path)
        chunk_rows = _chunk_rows(k)
        return (lambda: iter_npy_chunks(path, chunk_rows=chunk_rows)), None
    if suffix not in (".parquet", ".pq") or not Path(path).is_file():
        return None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        columns = _parquet_columns(path)
    except Exception:  # noqa: BLE001 - unreadable: load_predictions names the problem
        return None
    ignored = set(_IGNORED_COLUMNS) | {"id", "path"}
    if "id" not in columns or parquet.metadata.num_rows != n or any(c not in classes and c not in ignored
                                                                      for c in columns):
        return None
    for name in classes:
        if name not in columns:
            return None
        kind = schema.field(name).type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            return None
    ids = parquet.read(columns=["id"]).column("id").to_pylist()
    if any(v is None for v in ids):
        return None
    keys = [str(v).strip() for v in ids]
    del ids
    if keys != table["id"].astype(str).tolist():
        return None
    return (lambda: iter_parquet_chunks(path, columns=list(classes))), keys


def _chunk_rows(k: int) -> int:
    return max(1, CHUNK_BYTES // (8 * max(1, k)))


def prepare_labels(*, labels_file: str, predictions_file: str | None, classes_file: str | None = None,
                   attributes_file: str | None = None, predictions_kind: str = "auto",
                   max_in_memory_cells: int = IN_MEMORY_CELLS, chunk_rows: int | None = None):
    """Input adapter of ``label-noise``: the labels table (+ attributes) and a probabilities source.

    Returns a :class:`audit.pipeline.core.Prepared` (kind ``"label-noise"``); see
    :func:`run_label_noise_audit` for ``max_in_memory_cells`` and ``chunk_rows``.
    """
    from audit.model.predictions import ERROR_PREDICTIONS_KIND, PREDICTION_KINDS, load_predictions
    from audit.pipeline.core import Prepared, _sha256_file

    clock = time.perf_counter()
    if predictions_kind not in PREDICTION_KINDS:
        raise InputError(ERROR_PREDICTIONS_KIND.format(kind=predictions_kind), column="--predictions-kind")
    if predictions_file is None:  # --annotations alone: annotation quality without a model
        classes = load_classes_file(classes_file) if classes_file else None
        if classes is None and Path(labels_file).suffix.lower() == ".npy":
            raise InputError(ERROR_NPY_LABELS_NEED_CLASSES.format(path=labels_file), source=labels_file)
    else:
        classes = load_classes_file(classes_file) if classes_file else _predictions_classes(predictions_file)
    n_columns = None
    if classes is None and predictions_file is not None:
        shape, _ = _npy_header(predictions_file, source=predictions_file)
        n_columns = int(shape[1])
        if n_columns < 2:
            raise InputError(ERROR_PREDICTIONS_ONE_CLASS.format(path=predictions_file, k=n_columns),
                             source=predictions_file)
    elif classes_file and str(predictions_file).lower().endswith(".npy"):
        # the classes file and an NPY of probabilities must agree on K before labels are checked against K,
        # so a short classes file is blamed, not the labels or the predictions
        shape, _ = _npy_header(predictions_file, source=predictions_file)
        if len(shape) == 2 and int(shape[1]) != len(classes):
            raise InputError(ERROR_CLASSES_COUNT.format(path=classes_file, n=len(classes), predictions=predictions_file,
                                                        k=int(shape[1])), source=str(classes_file))
    table = load_labels(labels_file, classes=classes, n_predictions_columns=n_columns)
    if classes is None and predictions_file is None:
        classes = tuple(sorted(table["label"].astype(str).unique()))
    elif classes is None:
        classes = tuple(str(i) for i in range(n_columns))
    class_index = {name: i for i, name in enumerate(classes)}
    label_codes = table["label"].astype(str).map(class_index).to_numpy(dtype=np.int64)
    # Shape against the labels before anything is read (npy); Parquet: ids in order, or the in-memory path.
    plan = (_stream_plan(predictions_file, table=table, classes=classes, labels_file=labels_file)
            if predictions_file is not None else None)
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
        from audit.io.manifest import MISSING_TOKENS, is_engine_column

        attributes = attributes.astype(object).where(attributes.notna(), None)
        attributes["id"] = attributes["id"].astype(str)
        duplicated = attributes["id"][attributes["id"].duplicated(keep=False)]
        if len(duplicated):  # never keep one of two rows silently
            rows = list(duplicated.index[:2])
            raise InputError(ERROR_ATTRIBUTES_DUPLICATE_ID.format(path=attributes_file, id=duplicated.iloc[0],
                                                                  first=rows[0], second=rows[1]),
                             source=attributes_file, row=int(rows[1]), column="id")
        extra = [c for c in attributes.columns if c not in ("id", "label", "path", "row", "split")]
        for column in extra:  # the engine writes these columns itself: the user's values would be overwritten
            name = str(column)
            if name == "content_hash" or name.startswith("image_") or is_engine_column(name):
                raise InputError(ERROR_ATTRIBUTES_RESERVED.format(path=attributes_file, column=name),
                                 source=attributes_file, column=name)
        # missing as in a manifest: empty or a missing-value token ("NaN", "NA", ...) -> the <missing> group
        attributes[extra] = attributes[extra].map(
            lambda v: None if v is None or (isinstance(v, str) and v.strip() in MISSING_TOKENS | {""}) else v)
        table = table.merge(attributes[["id"] + extra], on="id", how="left")
        for column in extra:
            table[column] = table[column].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                              else str(v))
            (group_attributes if table[column].nunique() <= 50 else metadata).append(column)
    prediction_columns = None
    if predictions_file is None:
        probabilities = None
    elif plan is None:
        loaded = load_predictions(predictions_file, table=table, classes=classes, kind=predictions_kind, root=None)
        probabilities = np.asarray(loaded.probabilities, dtype=np.float32)
        kind_used, message = loaded.kind_used, loaded.message
    else:
        raw_source, keys = plan
        rows = chunk_rows or _chunk_rows(len(classes))
        keep = len(table) * len(classes) <= max_in_memory_cells
        scan = _scan_predictions(raw_source, file=predictions_file, labels_file=labels_file, n=len(table), classes=classes,
                                 label_codes=label_codes, kind=predictions_kind, chunk_rows=rows, keys=keys,
                                 keep=keep)
        kind_used, message = scan.kind_used, scan.message
        if keep:
            probabilities = scan.array
        else:
            probabilities = PredictionsStream(raw_source, shape=(len(table), len(classes)), kind_used=kind_used,
                                              chunk_rows=rows)
            prediction_columns = scan.columns
        del scan
    dataset = Dataset(table=table, classes=classes, group_attributes=tuple(group_attributes),
                      metadata_columns=tuple(metadata), root=Path(labels_file).resolve().parent,
                      source=str(labels_file), kind="labels", class_order_source="classes file" if classes_file
                      else "predictions columns" if predictions_file is not None else "sorted")
    data_hash = hashlib.sha256(("\n".join(f"{i}\t{l}" for i, l in zip(table["id"], table["label"]))).encode()).hexdigest()
    model_info = None
    if predictions_file is not None:
        model_info = {"source": str(Path(predictions_file).resolve()), "kind": "predictions",
                      "sha256": _sha256_file(predictions_file), "predictions_kind": kind_used, "message": message,
                      "has_embeddings": False, "from_cache": False}
    return Prepared(kind="label-noise", dataset=dataset, kept=table, classes=tuple(classes),
                    class_order_source=dataset.class_order_source, probabilities=probabilities,
                    prediction_columns=prediction_columns, model_info=model_info, skipped=[],
                    durations={"load_inputs": round(time.perf_counter() - clock, 3)},
                    source=str(Path(labels_file).resolve()), root=None, label_column="label", data_hash=data_hash,
                    label_noise_source=("predictions", "the probabilities given with --predictions"))


def run_label_noise_audit(*, labels_file: str, predictions_file: str | None, classes_file: str | None = None,
                          attributes_file: str | None = None, predictions_kind: str = "auto",
                          min_group_size: int = 30, policy_file: str | None = None, seed: int = 0,
                          max_in_memory_cells: int = IN_MEMORY_CELLS, chunk_rows: int | None = None,
                          annotations_file: str | None = None, consensus_method: str = "auto"):
    """Build the audit of a labels + probabilities pair; returns an :class:`~audit.pipeline.AuditResult`.

    The same steps and ``audit.json`` assembly as ``run`` (:func:`audit.pipeline.core.analyse`); sections
    that need images are left out. ``max_in_memory_cells``: above this many values (N x K) a streamable
    predictions file (``.npy``, or Parquet in the labels' id order) is never held whole;
    ``result.probabilities`` is then a :class:`PredictionsStream` (the writer streams it). ``chunk_rows``
    overrides the rows per chunk (default about :data:`CHUNK_BYTES` of float64 values).
    ``annotations_file`` (several labels per image) adds the annotations step; then ``predictions_file`` may
    be None (annotation quality alone: no label-noise or performance sections).
    """
    from audit.pipeline.core import analyse

    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    if predictions_file is None and annotations_file is None:
        raise InputError(ERROR_NOTHING_TO_AUDIT)
    config = AuditConfig(data=labels_file, predictions=predictions_file, predictions_kind=predictions_kind,
                         min_group_size=min_group_size, policy_file=policy_file, seed=seed,
                         attributes_file=attributes_file, annotations_file=annotations_file,
                         consensus_method=consensus_method, use_cache=False)  # label-noise has no cache options
    prepared = prepare_labels(labels_file=labels_file, predictions_file=predictions_file, classes_file=classes_file,
                              attributes_file=attributes_file, predictions_kind=predictions_kind,
                              max_in_memory_cells=max_in_memory_cells, chunk_rows=chunk_rows)
    config.check()
    return analyse(prepared, config=config, progress=lambda *a: None, started=started, clock=clock)
