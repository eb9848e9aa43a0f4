"""Tests of the chunk readers (audit/io/arrays.py)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.errors import InputError
from audit.io import arrays
from audit.io.arrays import (
    array_chunk_source,
    iter_array_chunks,
    iter_npy_chunks,
    iter_parquet_chunks,
    npy_chunk_source,
    parquet_chunk_source,
    read_npy_header,
)


@pytest.fixture
def matrix():
    return np.random.default_rng(0).random((103, 7)).astype(np.float32)


@pytest.mark.parametrize("chunk_rows", [1, 10, 103, 1000])
def test_npy_chunks_cover_the_array_in_order(tmp_path, matrix, chunk_rows):
    path = tmp_path / "p.npy"
    np.save(path, matrix)
    chunks = [chunk.copy() for chunk in iter_npy_chunks(path, chunk_rows=chunk_rows)]
    assert all(chunk.shape[0] <= chunk_rows for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), matrix)


def test_npy_chunks_reuse_one_buffer(tmp_path, matrix):
    path = tmp_path / "p.npy"
    np.save(path, matrix)
    chunks = list(iter_npy_chunks(path, chunk_rows=10))
    # Every chunk is a view of the same buffer (no per-chunk allocation, no memory map).
    assert len({chunk.__array_interface__["data"][0] for chunk in chunks}) == 1
    assert not any(isinstance(chunk, np.memmap) for chunk in chunks)


def test_npy_big_endian_and_default_chunk(tmp_path, matrix):
    path = tmp_path / "be.npy"
    np.save(path, matrix.astype(">f4"))
    chunks = [chunk.copy() for chunk in iter_npy_chunks(path)]
    assert chunks[0].dtype == np.float32 and chunks[0].dtype.isnative
    np.testing.assert_array_equal(np.concatenate(chunks), matrix)


def test_npy_source_is_reiterable(tmp_path, matrix):
    path = tmp_path / "p.npy"
    np.save(path, matrix)
    source = npy_chunk_source(path, chunk_rows=40)
    first = np.concatenate([c.copy() for c in source()])
    second = np.concatenate([c.copy() for c in source()])
    np.testing.assert_array_equal(first, second)
    assert read_npy_header(path)[:2] == ((103, 7), np.dtype(np.float32))


def test_npy_errors(tmp_path, matrix):
    not_npy = tmp_path / "x.npy"
    not_npy.write_bytes(b"hello world")
    with pytest.raises(InputError, match=r"not a readable \.npy file"):
        read_npy_header(not_npy)
    one_d = tmp_path / "one.npy"
    np.save(one_d, np.zeros(5))
    with pytest.raises(InputError) as info:
        read_npy_header(one_d)
    assert str(info.value) == arrays.ERROR_NPY_NOT_2D.format(path=one_d, shape=(5,))
    fortran = tmp_path / "f.npy"
    np.save(fortran, np.asfortranarray(matrix))
    with pytest.raises(InputError) as info:
        read_npy_header(fortran)
    assert str(info.value) == arrays.ERROR_NPY_FORTRAN.format(path=fortran)
    truncated = tmp_path / "t.npy"
    np.save(truncated, matrix)
    data = truncated.read_bytes()
    truncated.write_bytes(data[:-7 * 4 * 3])
    with pytest.raises(InputError) as info:
        list(iter_npy_chunks(truncated, chunk_rows=50))
    assert str(info.value) == arrays.ERROR_NPY_TRUNCATED.format(path=truncated, rows=100, expected=103)
    with pytest.raises(ValueError):
        list(iter_npy_chunks(truncated, chunk_rows=0))


def test_array_chunks(matrix):
    chunks = list(iter_array_chunks(matrix, chunk_rows=25))
    assert [c.shape[0] for c in chunks] == [25, 25, 25, 25, 3]
    assert all(np.shares_memory(c, matrix) for c in chunks)
    source = array_chunk_source(matrix, chunk_rows=50)
    np.testing.assert_array_equal(np.concatenate(list(source())), matrix)
    with pytest.raises(InputError):
        array_chunk_source(np.zeros(3))


def test_parquet_columns_per_class(tmp_path, matrix):
    path = tmp_path / "p.parquet"
    table = pa.table({f"p{k}": matrix[:, k] for k in range(7)} | {"id": [str(i) for i in range(103)]})
    pq.write_table(table, path, row_group_size=30)
    chunks = list(iter_parquet_chunks(path, columns=[f"p{k}" for k in range(7)]))
    assert [c.shape[0] for c in chunks] == [30, 30, 30, 13]
    np.testing.assert_array_equal(np.concatenate(chunks), matrix)
    source = parquet_chunk_source(path, columns=[f"p{k}" for k in range(7)])
    np.testing.assert_array_equal(np.concatenate(list(source())), matrix)


def test_parquet_list_column(tmp_path, matrix):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"probabilities": list(matrix)}), path, row_group_size=50)
    chunks = list(iter_parquet_chunks(path, columns=["probabilities"]))
    assert [c.shape for c in chunks] == [(50, 7), (50, 7), (3, 7)]
    np.testing.assert_allclose(np.concatenate(chunks), matrix)


def test_parquet_errors(tmp_path, matrix):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"a": matrix[:, 0], "name": ["x"] * 103}), path)
    with pytest.raises(InputError) as info:
        parquet_chunk_source(path, columns=["b"])
    assert str(info.value) == arrays.ERROR_PARQUET_COLUMN.format(path=path, column="b", available="a, name")
    with pytest.raises(InputError, match="must hold numbers"):
        list(iter_parquet_chunks(path, columns=["a", "name"]))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        parquet_chunk_source(bad, columns=["a"])
