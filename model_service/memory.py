"""Handing memory that was freed back to the operating system.

Compiling a program, or loading weights, allocates and frees hundreds of MB in
XLA's and NumPy's C++ code. glibc keeps freed memory in its arenas (one per thread
that allocated, and XLA compiles on its own threads) for later allocations, so the
process's resident memory stays at its high-water mark: in `benchmarks/decode.py`
about a tenth of the generation worker's peak. `malloc_trim` returns the free pages,
and fewer arenas hold fewer of them in the first place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameter for the most arenas (malloc.h).
M_ARENA_MAX = -8
# A serving process's arenas: glibc's default is eight per core.
SERVING_ARENAS = 2


@functools.cache
def _libc_function(name: str):
    """glibc's function `name`, or None where the C library has none (musl, macOS)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    return getattr(ctypes.CDLL(library), name, None)


def release_freed_memory() -> bool:
    """Returns the C heap's free pages to the operating system; whether it could."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def limit_arenas(arenas: int = SERVING_ARENAS) -> bool:
    """Caps the C heap's arenas from now on; whether it could.

    Each thread that allocates while others do gets an arena of its own, which keeps
    what it freed: with two, the generation worker's peak in `benchmarks/decode.py`
    is 30-60 MiB lower, at the same speed.
    """
    mallopt = _libc_function("mallopt")
    return mallopt is not None and mallopt(M_ARENA_MAX, arenas) == 1
