"""XLA options put in the environment before JAX starts.

XLA reads `XLA_FLAGS` once, when JAX sets up its backend, so the entry points that
serve a model (the generation worker, the CLI, benchmarks/decode.py) call
`use_serving_flags()` before anything imports jax. The flags only concern XLA's CPU
backend; on an accelerator they change nothing.

`use_compilation_cache()` sets up JAX's persistent compilation cache for the processes
started with that environment.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

SERVING_FLAGS = {
    # A decode step writes one token into each layer's KV cache and reads the cache in
    # the same program. With the default copy insertion XLA copies every layer's
    # cache twice per step to keep that write from racing the reads; region analysis
    # orders them instead and updates the cache in place.
    "xla_cpu_copy_insertion_use_region_analysis": "true",
    # XNNPACK's kernels for the products of many rows: prefill of gemma3-270m about a
    # quarter faster on a 2-core CPU (benchmarks/decode.py).
    "xla_cpu_use_xnnpack": "true",
}

# A worker's programs for gemma3-270m take about 3 MB.
CACHE_MAX_BYTES = 1 << 30


def use_serving_flags(environ: MutableMapping[str, str] = os.environ) -> None:
    """Adds `SERVING_FLAGS` to `XLA_FLAGS`, leaving any flag already set alone."""
    present = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in SERVING_FLAGS.items()]
    added = [flag for flag in added if flag.split("=")[0] not in present]
    environ["XLA_FLAGS"] = " ".join([present, *added]).strip()


def use_compilation_cache(
    directory: Path, environ: MutableMapping[str, str] = os.environ
) -> None:
    """Keeps the programs that XLA compiles in `directory`, for every process started
    with `environ`, unless a cache is set already.

    A restarted worker then loads its programs instead of compiling them again:
    the generation worker on gemma3-270m is ready in about half the time (15 s against
    29 s on a 2-core CPU), tiny-random's in a third. The cache is keyed by the program,
    the compiler's version and its flags, so a changed program is compiled afresh.
    """
    environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(directory))
    # The default (1 s) would leave out most of a small model's programs.
    environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    # Programs of models and versions no longer used go, least recently used first.
    environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(CACHE_MAX_BYTES))
