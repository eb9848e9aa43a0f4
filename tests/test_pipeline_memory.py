"""audit.pipeline.memory: freed memory goes back to the operating system between the stages of a run."""
import sys

import numpy as np
import pytest

import audit.pipeline.memory as memory


def test_release_memory_collects_garbage_returns_arrow_pool_and_trims_the_heap(monkeypatch):
    import gc

    import pyarrow as pa

    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: calls.append(("trim", pad)))

    class Pool:
        def release_unused(self):
            calls.append(("arrow",))

    monkeypatch.setattr(pa, "default_memory_pool", lambda: Pool())

    class Cycle:
        pass

    cycle = Cycle()
    cycle.me = cycle
    collected = []
    import weakref

    weakref.finalize(cycle, collected.append, True)
    del cycle
    gc.disable()  # only release_memory's collection can free the cycle
    try:
        memory.release_memory()
    finally:
        gc.enable()
    assert collected == [True]
    assert calls == [("arrow",), ("trim", 0)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux only")
def test_malloc_trim_is_found_and_gives_freed_heap_back():
    """On glibc the trim is found and returns freed small-object heap: RSS after freeing 200 MB of small
    arrays and trimming is well below RSS with them alive."""
    import ctypes.util

    if "musl" in (ctypes.util.find_library("c") or ""):
        pytest.skip("not glibc")
    trim = memory._malloc_trim()
    assert trim is not None

    def rss_mb():
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmRSS:"))

    held = [np.ones(2_000, dtype=np.float64) for _ in range(12_500)]  # 200 MB in 16 KB blocks (heap, not mmap)
    held_mb = rss_mb()
    del held[:-1]  # all but the last: freed heap below a live block, which glibc keeps until it is trimmed
    memory.release_memory()
    assert rss_mb() < held_mb - 150
