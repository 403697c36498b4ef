"""`release_freed_memory` hands freed heap memory back to the operating system."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: 3,000 blocks of 64 KB (below glibc's mmap threshold, so on
# its heap) freed under one still in use, which keeps glibc from trimming the heap's
# top itself; prints the resident KB the call gave back.
FREED_UNDER_A_LIVE_BLOCK = """
import re
from model_service.memory import release_freed_memory

def resident_kb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1])

blocks = [bytearray(64 * 1024) for _ in range(3000)]
above = bytearray(64 * 1024)
del blocks
before = resident_kb()
print(release_freed_memory(), before - resident_kb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_freed_heap_memory_goes_back_to_the_system():
    result = subprocess.run(
        [sys.executable, "-c", FREED_UNDER_A_LIVE_BLOCK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    released, given_back_kb = result.stdout.split()
    assert released == "True"
    assert int(given_back_kb) > 150_000  # of the 192,000 freed


# In a fresh interpreter: eight live threads allocate, each getting an arena of its
# own unless they are capped; glibc's malloc_stats (on stderr) lists the arenas.
THREADS_ALLOCATING = """
import ctypes, sys, threading
from model_service.memory import limit_arenas

limited = sys.argv[1] == "limited" and limit_arenas()
blocks, all_allocated = [], threading.Barrier(8)

def allocate():
    blocks.append(bytearray(64 * 1024))
    all_allocated.wait()  # alive until all have: an ended thread's arena is reused

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
def test_a_serving_process_keeps_to_two_heap_arenas():
    def arenas(mode: str) -> int:
        result = subprocess.run(
            [sys.executable, "-c", THREADS_ALLOCATING, mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stderr.count("Arena ")

    assert arenas("limited") == 2
    assert arenas("default") > 2  # one per thread: the cap is what keeps them to two
