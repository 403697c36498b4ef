"""The C++ CPU kernels of `cpu_kernels.cc`, as JAX functions.

The extension module `model_service._cpu_kernels` is built with the package
(`setup.py`); its handlers are registered with XLA as FFI targets the first time a
kernel is traced. The kernels exist for the CPU only: on an accelerator the weights
stay in bf16 and never reach the int8 product, and the other two have twins in
`jax.numpy` (`sampler.logit_stats`, `modules.Attention._attend`), chosen by platform.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# The int8 product's code paths, fastest first: "avx512" and "avx2" in an x86-64
# build, "portable" elsewhere. A CPU runs the first it can, or the one this environment
# variable names (read at every call); all give the same bits.
INT8_PATHS = ("avx512", "avx2", "portable")
INT8_PATH_VARIABLE = "GEMMA_STUDIO_INT8_PATH"

_INT8_MATMUL = "gemma_studio_int8_matmul"
_INT8_MATMUL_BF16 = "gemma_studio_int8_matmul_bf16"
_LOGIT_STATS = "gemma_studio_logit_stats"
_DECODE_ATTENTION = "gemma_studio_decode_attention"
# XLA's target name of each handler of `_cpu_kernels.handlers()`.
_TARGETS = {
    "int8_matmul": _INT8_MATMUL,
    "int8_matmul_bf16": _INT8_MATMUL_BF16,
    "logit_stats": _LOGIT_STATS,
    "decode_attention": _DECODE_ATTENTION,
}


def _extension():
    try:
        from model_service import _cpu_kernels
    except ImportError as error:
        raise ImportError(
            "model_service._cpu_kernels is not built: install the package (`make "
            "install`, or `pip install -e .`), which compiles "
            "model_service/cpu_kernels.cc"
        ) from error
    return _cpu_kernels


@functools.cache
def _register() -> None:
    for name, handler in _extension().handlers().items():
        jax.ffi.register_ffi_target(_TARGETS[name], handler, platform="cpu")


def int8_path() -> str | None:
    """The code path `int8_matmul` takes on this CPU now (one of `INT8_PATHS`).

    The fastest the CPU runs, or the one the environment variable
    `INT8_PATH_VARIABLE` names (`avx2` on an AVX-512 host, to check that path); None
    when it names a path this CPU does not run (the product then fails).
    """
    return _extension().int8_path()


def bfloat16_native() -> bool:
    """Whether `int8_matmul(..., bfloat16=True)` runs the CPU's own bfloat16 dot
    products on the path it takes now (AVX512_BF16), rather than their emulation by
    float FMAs (the same bits, slower than float32 products)."""
    return _extension().bf16_native()


def int8_matmul(
    x: jax.Array,
    values: jax.Array,
    scale: jax.Array,
    layer: jax.Array | int = 0,
    *,
    bfloat16: bool = False,
) -> jax.Array:
    """x [R, K] times int8 `values` [M, K] transposed, column m times `scale[m]`.

    Computed in float32, each output in one fixed order whatever R is and whichever
    path (`int8_path`) runs: a row's result does not depend on the other rows, nor on
    the CPU's instruction set.

    Args:
        x: activations, [R, K] (cast to float32, or to bfloat16 with `bfloat16`).
        values: int8 weight, [M, K], or a stack of them [L, M, K].
        scale: float32, M entries (L x M for a stack; any shape).
        layer: which weight of a stack (a traced index in a scan over layers): the
            kernel reads it where it lies, where slicing it out would copy it.
        bfloat16: round the activations to bfloat16 first (the sums stay float32).
            Twice the multiply-adds per instruction where the CPU has AVX512_BF16
            (`bfloat16_native`), for the many rows of a prefill pass; elsewhere an
            exact emulation, slower than float32. The same bits on every path.

    Returns:
        float32 [R, M].
    """
    _register()
    stack = values.reshape(-1, *values.shape[-2:])
    rows, outputs = x.shape[0], stack.shape[1]
    target = _INT8_MATMUL_BF16 if bfloat16 else _INT8_MATMUL
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((rows, outputs), jnp.float32))
    return call(
        x.astype(jnp.bfloat16 if bfloat16 else jnp.float32),
        stack,
        scale.reshape(-1).astype(jnp.float32),
        jnp.asarray(layer, jnp.int32),
    )


def logit_stats(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row of logits [R, V]: argmax (the first index of the largest) and
    log(sum(exp)), in one pass over the row on both cores.

    A token's log-probability is its logit minus the second. XLA's own log-softmax
    of a step's 8 x 262144 logits took 14 ms of the step.

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


def decode_attention(
    q: jax.Array,
    k_new: jax.Array,
    v_new: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    key_positions: jax.Array,
    positions: jax.Array,
    *,
    layer: jax.Array | int = 0,
    window: int,
    soft_cap: float,
) -> jax.Array:
    """Attention of one query token per row to its cached keys and its own new key.

    A key at position p is visible to the query at position t when 0 <= p <= t and,
    with a window, t - p < window; the own key always is. Only the stretch of slots
    that holds visible keys is read. A free row (position -1) gets zeros.

    Args:
        q: [B, K, G, H] float32, after RoPE and the query scale (G queries per
            kv head).
        k_new, v_new: [B, K, H], this step's key (after RoPE) and value.
        keys: [B, S, K, H], the cache's keys, float32 or float16, or a stack of
            layers' [L, B, S, K, H].
        values: [B, K, H, S] ([L, B, K, H, S]), the cache's values, slots last, in
            the keys' dtype.
        key_positions: [B, S] int32, each slot's visible position, -1 for none.
        positions: [B] int32, each query's position.
        layer: which layer of a stack, read where it lies (a traced index in a scan).
        window: the sliding window, 0 for none.
        soft_cap: cap * tanh(logit / cap) on the logits, 0 for none.

    Returns:
        float32 [B, K, G, H].
    """
    _register()
    call = jax.ffi.ffi_call(
        _DECODE_ATTENTION, jax.ShapeDtypeStruct(q.shape, jnp.float32)
    )
    return call(
        q,
        k_new,
        v_new,
        keys.reshape(-1, *keys.shape[-4:]),
        values.reshape(-1, *values.shape[-4:]),
        jnp.asarray(layer, jnp.int32),
        key_positions.astype(jnp.int32),
        positions.astype(jnp.int32),
        window=np.int64(window),
        soft_cap=np.float32(soft_cap),
    )
