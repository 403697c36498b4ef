"""The C++ CPU kernels of `cpu_kernels.cc`, as JAX functions.

The shared library is built with the package (`setup.py`) and registered with XLA as
an FFI target the first time a kernel is traced. The kernels exist for the CPU only:
on an accelerator the weights stay in bf16 and never reach them.
"""

from __future__ import annotations

import ctypes
import functools
from importlib.util import find_spec

import jax
import jax.numpy as jnp

_LIBRARY = "model_service._cpu_kernels"
_INT8_MATMUL = "gemma_studio_int8_matmul"


@functools.cache
def _register() -> None:
    spec = find_spec(_LIBRARY)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"{_LIBRARY} is not built: install the package (`make install`, or "
            "`pip install -e .`), which compiles model_service/cpu_kernels.cc"
        )
    library = ctypes.CDLL(spec.origin)
    jax.ffi.register_ffi_target(
        _INT8_MATMUL, jax.ffi.pycapsule(library.Int8Matmul), platform="cpu"
    )


def int8_matmul(x: jax.Array, values: jax.Array, scale: jax.Array) -> jax.Array:
    """x [R, K] times int8 `values` [M, K] transposed, column m times `scale[m]`.

    Computed in float32, each output the same way whatever R is: a row's result does
    not depend on the other rows.

    Args:
        x: activations, [R, K] (cast to float32).
        values: int8 weight, [M, K].
        scale: float32, M entries (any shape).

    Returns:
        float32 [R, M].
    """
    _register()
    rows, outputs = x.shape[0], values.shape[0]
    call = jax.ffi.ffi_call(
        _INT8_MATMUL, jax.ShapeDtypeStruct((rows, outputs), jnp.float32)
    )
    return call(x.astype(jnp.float32), values, scale.reshape(-1).astype(jnp.float32))
