"""Chunk readers for large (N, K) arrays: ``.npy`` files, Parquet row groups and in-memory arrays.

Analyses that stream (e.g. :func:`audit.analysis.label_noise.estimate_label_noise`) take a *chunk
source*: a callable with no arguments that returns a fresh iterator over consecutive row blocks, so they
can make several passes. The ``*_chunk_source`` helpers below build one from a file or an array.

Memory: :func:`iter_npy_chunks` reads with ``readinto`` into one buffer that is reused for every chunk,
so a pass over a 5 GB file keeps one chunk resident (pages of a memory-mapped file would count towards
the process's resident memory, and the page cache is not). Consequently **a yielded chunk is only valid
until the next one is requested**: copy what you keep.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from audit.errors import InputError

ERROR_NPY_UNREADABLE = "{path}: not a readable .npy file ({reason}); save it with numpy.save(path, array)"
ERROR_NPY_NOT_2D = "{path}: expected a 2-D array (rows = images, columns = classes), found shape {shape}"
ERROR_NPY_DTYPE = ("{path}: expected a numeric array, found dtype {dtype}; save the probabilities as "
                   "float32")
ERROR_NPY_FORTRAN = ("{path}: the array is stored in Fortran (column-major) order; re-save it with "
                     "numpy.save(path, numpy.ascontiguousarray(array))")
ERROR_NPY_TRUNCATED = "{path}: file ends after {rows} of {expected} rows; the file is truncated, write it again"
ERROR_CHUNK_ROWS = "chunk_rows must be a positive integer, got {value!r}"
ERROR_PARQUET_UNREADABLE = "{path}: not a readable Parquet file ({reason})"
ERROR_PARQUET_COLUMN = "{path}: column {column!r} not found; available columns: {available}"
ERROR_PARQUET_VALUES = ("{path}: column {column!r} must hold numbers (one column per class) or a list of "
                        "numbers per row (all of the same length); found {kind}")
ERROR_ARRAY_NOT_2D = "expected a 2-D array (rows = images, columns = classes), found shape {shape}"

#: Default chunk size in bytes (one chunk of float32 probabilities, 1000 classes: ~16k rows).
DEFAULT_CHUNK_BYTES = 64 * 2**20


def _check_chunk_rows(chunk_rows) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(ERROR_CHUNK_ROWS.format(value=chunk_rows))
    return int(chunk_rows)


def default_chunk_rows(n_columns: int, itemsize: int = 4, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that one chunk holds about ``chunk_bytes`` bytes (at least 1 row)."""
    return max(1, int(chunk_bytes // max(1, n_columns * itemsize)))


def read_npy_header(path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a ``.npy`` file, without reading its data.

    Raises
    ------
    InputError
        Not a ``.npy`` file, an object dtype, Fortran order, or not 2-D.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            offset = handle.tell()
    except (OSError, ValueError) as error:
        raise InputError(ERROR_NPY_UNREADABLE.format(path=path, reason=" ".join(str(error).split()) or type(error).__name__), source=str(path)) from None
    if dtype.hasobject or dtype.kind not in "fiub":
        raise InputError(ERROR_NPY_DTYPE.format(path=path, dtype=dtype), source=str(path))
    if fortran and len(shape) > 1:
        raise InputError(ERROR_NPY_FORTRAN.format(path=path), source=str(path))
    if len(shape) != 2:
        raise InputError(ERROR_NPY_NOT_2D.format(path=path, shape=tuple(shape)), source=str(path))
    return tuple(int(s) for s in shape), dtype, offset


def iter_npy_chunks(path, *, chunk_rows: int | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive row blocks of a 2-D ``.npy`` file, read into one reused buffer.

    Parameters
    ----------
    path : path-like
        A C-ordered 2-D ``.npy`` file (as written by ``numpy.save``).
    chunk_rows : int, optional
        Rows per chunk (the last one may be shorter); default about 64 MB worth.

    Yields
    ------
    ndarray (rows, K)
        A view of the reused buffer, in native byte order: valid only until the next chunk is requested.

    Raises
    ------
    InputError
        The file is not a readable 2-D ``.npy`` or is truncated (named, with the fix).
    """
    path = Path(path)
    shape, dtype, offset = read_npy_header(path)
    n_rows, n_columns = shape
    chunk_rows = (default_chunk_rows(n_columns, dtype.itemsize) if chunk_rows is None
                  else _check_chunk_rows(chunk_rows))
    chunk_rows = max(1, min(chunk_rows, n_rows))
    buffer = np.empty((chunk_rows, n_columns), dtype=dtype)
    row_bytes = n_columns * dtype.itemsize
    swap = not dtype.isnative
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        start = 0
        while start < n_rows:
            rows = min(chunk_rows, n_rows - start)
            view = buffer[:rows]
            target = memoryview(view.reshape(-1).view(np.uint8))
            filled = 0
            while filled < rows * row_bytes:
                got = handle.readinto(target[filled:])
                if not got:
                    raise InputError(ERROR_NPY_TRUNCATED.format(path=path, rows=start + filled // row_bytes,
                                                                expected=n_rows), source=str(path))
                filled += got
            if swap:
                view = view.byteswap().view(dtype.newbyteorder("="))
            yield view
            start += rows


def npy_chunk_source(path, *, chunk_rows: int | None = None) -> Callable[[], Iterator[np.ndarray]]:
    """A re-iterable chunk source over a ``.npy`` file (see :func:`iter_npy_chunks`).

    The header is checked now, so a bad file fails before any analysis starts.
    """
    read_npy_header(path)
    if chunk_rows is not None:
        _check_chunk_rows(chunk_rows)
    return lambda: iter_npy_chunks(path, chunk_rows=chunk_rows)


def iter_array_chunks(array: np.ndarray, *, chunk_rows: int | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive row blocks (views, no copy) of an in-memory 2-D array."""
    if np.ndim(array) != 2:
        raise InputError(ERROR_ARRAY_NOT_2D.format(shape=np.shape(array)))
    n_rows, n_columns = array.shape
    chunk_rows = (default_chunk_rows(n_columns, array.dtype.itemsize) if chunk_rows is None
                  else _check_chunk_rows(chunk_rows))
    for start in range(0, n_rows, chunk_rows):
        yield array[start:start + chunk_rows]


def array_chunk_source(array: np.ndarray, *, chunk_rows: int | None = None) -> Callable[[], Iterator[np.ndarray]]:
    """A re-iterable chunk source over an in-memory array (the adapter for data already in memory)."""
    if np.ndim(array) != 2:
        raise InputError(ERROR_ARRAY_NOT_2D.format(shape=np.shape(array)))
    return lambda: iter_array_chunks(array, chunk_rows=chunk_rows)


def _parquet_file(path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as error:
        raise InputError(ERROR_PARQUET_UNREADABLE.format(path=path, reason=" ".join(str(error).split()) or type(error).__name__), source=str(path)) from None


def _table_to_matrix(path, table, columns: Sequence[str]) -> np.ndarray:
    import pyarrow as pa

    if len(columns) == 1:
        column = table.column(columns[0])
        kind = column.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            chunked = column.combine_chunks()
            if chunked.null_count:
                raise InputError(ERROR_PARQUET_VALUES.format(path=path, column=columns[0], kind="missing rows"),
                                 source=str(path), column=columns[0])
            values = chunked.flatten().to_numpy(zero_copy_only=False)
            n_rows = len(chunked)
            if n_rows == 0:
                return values.reshape(0, 0)
            if values.size % n_rows or not np.issubdtype(values.dtype, np.number):
                raise InputError(ERROR_PARQUET_VALUES.format(path=path, column=columns[0], kind=str(kind)),
                                 source=str(path), column=columns[0])
            return values.reshape(n_rows, values.size // n_rows)
    arrays = []
    for name in columns:
        column = table.column(name)
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            raise InputError(ERROR_PARQUET_VALUES.format(path=path, column=name, kind=str(column.type)),
                             source=str(path), column=name)
        arrays.append(column.to_numpy(zero_copy_only=False))
    return np.column_stack(arrays) if arrays else np.empty((table.num_rows, 0))


def iter_parquet_chunks(path, *, columns: Sequence[str]) -> Iterator[np.ndarray]:
    """Yield one 2-D array per Parquet row group.

    Parameters
    ----------
    path : path-like
        The Parquet file.
    columns : sequence of str
        Either one numeric column per class (in class order), or a single list column holding each
        row's K values.

    Yields
    ------
    ndarray (rows_in_group, K)
        A fresh array per row group (missing numeric values become NaN and are caught by the analysis).
    """
    parquet = _parquet_file(path)
    columns = list(columns)
    available = parquet.schema_arrow.names
    for name in columns:
        if name not in available:
            raise InputError(ERROR_PARQUET_COLUMN.format(path=path, column=name, available=", ".join(available)),
                             source=str(path), column=name)
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=columns)
        yield _table_to_matrix(path, table, columns)


def parquet_chunk_source(path, *, columns: Sequence[str]) -> Callable[[], Iterator[np.ndarray]]:
    """A re-iterable chunk source over a Parquet file's row groups (see :func:`iter_parquet_chunks`)."""
    parquet = _parquet_file(path)
    available = parquet.schema_arrow.names
    for name in columns:
        if name not in available:
            raise InputError(ERROR_PARQUET_COLUMN.format(path=path, column=name, available=", ".join(available)),
                             source=str(path), column=name)
    columns = list(columns)
    return lambda: iter_parquet_chunks(path, columns=columns)


class NpyChunkSource:
    """A re-iterable chunk source over a ``.npy`` file that also says its ``shape`` and ``dtype``.

    What :func:`audit.folder.write_audit_folder` streams into ``probabilities.npy`` and the analysis steps
    read in chunks (:func:`iter_npy_chunks`: file reads into one reused buffer, so no page of the file stays
    resident in the process). ``keep`` holds an object alive as long as the source (e.g. the memory map whose
    finaliser deletes a temporary file).

    Attributes
    ----------
    path : Path
    shape : tuple of int
        ``(N, K)``.
    dtype : numpy.dtype
    chunk_rows : int or None
        Rows per chunk (None: about 64 MB worth).
    """

    def __init__(self, path, *, chunk_rows: int | None = None, keep=None):
        self.path = Path(path)
        self.shape, self.dtype, _ = read_npy_header(self.path)
        self.chunk_rows = None if chunk_rows is None else _check_chunk_rows(chunk_rows)
        self._keep = keep

    def __call__(self) -> Iterator[np.ndarray]:
        return iter_npy_chunks(self.path, chunk_rows=self.chunk_rows)


def chunk_source_of(array, *, chunk_rows: int | None = None):
    """A chunk source over the rows of ``array``: for a memory map of a whole ``.npy`` file
    (``numpy.load(mmap_mode="r")``, ``open_memmap``) a :class:`NpyChunkSource` reading the file, so a pass
    leaves none of its pages resident; for any other array its row blocks (views)."""
    filename = getattr(array, "filename", None) if isinstance(array, np.memmap) else None
    if filename is not None:
        try:
            source = NpyChunkSource(filename, chunk_rows=chunk_rows, keep=array)
        except InputError:
            source = None
        if source is not None and source.shape == tuple(array.shape) and source.dtype == array.dtype:
            return source
    return array_chunk_source(array, chunk_rows=chunk_rows)


ERROR_SAVE_ROWS = "chunk source gave {found} rows, expected {expected}: {path} was not completed"


def save_npy_chunks(path, source, *, shape: tuple[int, int], dtype=np.float32) -> "NpyChunkSource":
    """Write the chunks of ``source`` (``shape[0]`` rows in all) to a new C-ordered ``.npy`` file, one chunk
    in memory at a time (for working files of the engine; the audit folder has its atomic writer), and
    return a chunk source reading it back.

    Raises
    ------
    ValueError
        The source gave another number of rows than ``shape[0]``, or chunks of another width.
    """
    dtype = np.dtype(dtype)
    n_rows, n_columns = (int(v) for v in shape)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n_rows, n_columns)}
    written = 0
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for chunk in source():
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            if chunk.ndim != 2 or chunk.shape[1] != n_columns:
                raise ValueError(ERROR_ARRAY_NOT_2D.format(shape=chunk.shape))
            written += chunk.shape[0]
            if written > n_rows:
                break
            handle.write(chunk.data)
    if written != n_rows:
        raise ValueError(ERROR_SAVE_ROWS.format(found=written if written <= n_rows else f"more than {n_rows}",
                                                expected=n_rows, path=path))
    return NpyChunkSource(path)
