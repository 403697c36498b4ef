"""Handing memory that was freed back to the operating system.

Compiling a program, or loading weights, allocates and frees hundreds of MB in
XLA's and NumPy's C++ code. glibc keeps freed memory in its arenas (one per thread
that allocated, and XLA compiles on its own threads) for later allocations, so the
process's resident memory stays at its high-water mark: in `benchmarks/decode.py`
about a tenth of the generation worker's peak. `malloc_trim` returns the free pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


def release_freed_memory() -> bool:
    """Returns the C heap's free pages to the operating system; whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
