"""Give memory the run no longer uses back to the operating system, between the stages of a run.

A step of the reduce side (label noise, group performance, data quality) allocates and frees hundreds of
megabytes at a million images. Freed memory stays in the process: CPython's and glibc's allocators keep
freed heap for later allocations, and Apache Arrow's allocator (mimalloc) keeps its own pool. Resident
memory then grows by what each step used at its peak, and the next step's peak adds to that. Measured with
``bench/reduce_memory.py`` at 100,000 images: after the per-image stage, 41 MB sat in Arrow's pool and 37
MB in free glibc heap; after label noise, 170 MB of free glibc heap.

:func:`release_memory` runs a garbage collection, asks Arrow's pool to return unused memory and, on glibc,
calls ``malloc_trim(0)`` (as Dask's workers do). None of this changes a result; where a call is not
available it is skipped.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> None:
    """Collect garbage and return the allocators' free memory to the operating system (best effort)."""
    gc.collect()
    arrow = sys.modules.get("pyarrow")  # only when Arrow is in use already: importing it costs time
    if arrow is not None:
        try:
            arrow.default_memory_pool().release_unused()
        except Exception:  # noqa: BLE001 - an older Arrow or another pool: nothing to release
            pass
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
