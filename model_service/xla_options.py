"""XLA options for serving on a CPU, put in the environment before JAX starts.

XLA reads `XLA_FLAGS` once, when JAX sets up its backend, so the entry points that
serve a model (the generation worker, the CLI, benchmarks/decode.py) call
`use_serving_flags()` before anything imports jax. The flags only concern XLA's CPU
backend; on an accelerator they change nothing.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

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


def use_serving_flags(environ: MutableMapping[str, str] = os.environ) -> None:
    """Adds `SERVING_FLAGS` to `XLA_FLAGS`, leaving any flag already set alone."""
    present = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in SERVING_FLAGS.items()]
    added = [flag for flag in added if flag.split("=")[0] not in present]
    environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
