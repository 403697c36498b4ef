"""The C++ CPU kernels of `cpu_kernels.cc`, as JAX functions.

The extension module `model_service._cpu_kernels` is built with the package
(`setup.py`); its handlers are registered with XLA as FFI targets the first time a
kernel is traced. The kernels exist for the CPU only: on an accelerator the weights
stay in bf16 and never reach the int8 product, and `logit_stats` has a twin in
`jax.numpy` (`model_service.sampler`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_INT8_MATMUL = "gemma_studio_int8_matmul"
_LOGIT_STATS = "gemma_studio_logit_stats"


@functools.cache
def _register() -> None:
    try:
        from model_service import _cpu_kernels
    except ImportError as error:
        raise ImportError(
            "model_service._cpu_kernels is not built: install the package (`make "
            "install`, or `pip install -e .`), which compiles "
            "model_service/cpu_kernels.cc"
        ) from error
    handlers = _cpu_kernels.handlers()
    jax.ffi.register_ffi_target(_INT8_MATMUL, handlers["int8_matmul"], platform="cpu")
    jax.ffi.register_ffi_target(_LOGIT_STATS, handlers["logit_stats"], platform="cpu")


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


def logit_stats(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row of logits [R, V]: argmax (the first index of the largest) and
    log(sum(exp)), in one pass over the row on both cores.

    A token's log-probability is its logit minus the second. XLA's own log-softmax
    of a step's 8 x 262144 logits took longer than the model's layers.

    Returns:
        (int32 [R], float32 [R]).
    """
    _register()
    rows = logits.shape[0]
    call = jax.ffi.ffi_call(
        _LOGIT_STATS,
        (
            jax.ShapeDtypeStruct((rows,), jnp.int32),
            jax.ShapeDtypeStruct((rows,), jnp.float32),
        ),
    )
    return call(logits.astype(jnp.float32))
