"""Writes the audit folder exactly as ``contract.md`` defines it: every file atomically, nothing else touched."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.io.atomic import atomic_path, write_npy_atomic, write_parquet_atomic
from audit.schema import validate_audit
from audit.types import json_safe

ERROR_OUT_IS_FILE = "--out {path} is a file; give a folder (it is created if missing)"
ERROR_OUT_NOT_WRITABLE = ("--out {path}: cannot write the audit folder ({reason}); give a folder you can write to "
                          "(it is created if missing)")
ERROR_STREAM_SHAPE = ("probabilities stream: shape must be (N, K) with N >= 0 and K >= 1, got {shape!r}; give an "
                      "object with .shape and a call returning (rows, K) chunks, or an array")
ERROR_STREAM_CHUNK = ("probabilities stream: chunk {chunk} has shape {found}; expected 2-D chunks with {k} columns "
                      "(the stream's declared shape is {shape})")
ERROR_STREAM_ROWS = ("probabilities stream gave {found} rows but declared {expected}; probabilities.npy was not "
                     "written (the previous one, if any, is kept)")

CONTRACT_FILES = ("audit.json", "images.parquet", "group_metrics.parquet", "probabilities.npy")


def to_json_safe(value):
    """Recursively convert numpy values, tuples and paths for ``json``; non-finite floats become None."""
    return json_safe(value)


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
                       probabilities) -> Path:
    """Write the contract files into ``out``; return the folder.

    ``audit.json`` is validated against the shipped JSON Schema before anything is written and is written
    last, so a reader that sees a new ``audit.json`` also sees the matching tables. A ``probabilities.npy``
    left from an earlier run is removed when this audit has none (it would contradict the new tables);
    every other file in the folder is kept.

    ``probabilities``: an ``(N, K)`` array, None, or for matrices too large for memory a chunk stream (an
    object with ``shape`` ``(N, K)`` that, called, returns an iterator of ``(rows, K)`` chunks, e.g.
    :class:`audit.label_noise_audit.PredictionsStream`), written with :func:`write_npy_chunks_atomic`.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(ERROR_OUT_IS_FILE.format(path=folder))
    audit = to_json_safe(audit)
    validate_audit(audit)
    json.dumps(audit, allow_nan=False)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_contract_files(folder, audit=audit, images=images, group_metrics=group_metrics,
                              probabilities=probabilities)
    except OSError as error:
        # a folder that cannot be created or written (permissions, read-only file system, a file in the way,
        # disk full): one line naming --out; atomic writes leave no temporary file behind
        reason = error.strerror or type(error).__name__
        raise InputError(ERROR_OUT_NOT_WRITABLE.format(path=folder, reason=reason), source=str(folder)) from error
    return folder


def _write_contract_files(folder: Path, *, audit: dict, images: pd.DataFrame, group_metrics: pd.DataFrame,
                          probabilities) -> None:
    if probabilities is not None and not isinstance(probabilities, np.ndarray) and callable(probabilities):
        write_npy_chunks_atomic(folder / "probabilities.npy", probabilities)
    elif probabilities is not None:
        write_npy_atomic(folder / "probabilities.npy", np.ascontiguousarray(probabilities, dtype=np.float32))
    else:
        (folder / "probabilities.npy").unlink(missing_ok=True)
    write_parquet_atomic(folder / "images.parquet", images)
    write_parquet_atomic(folder / "group_metrics.parquet", group_metrics)
    write_json_streamed_atomic(folder / "audit.json", audit)
