"""int8 weight-only quantization with per-output-channel scales.

Decoding one token reads every weight once; on a CPU that read, not the arithmetic,
sets the speed. Stored as int8 the weights are a quarter of the float32 bytes. Each
output channel (a row of the tied embedding, a column of a projection) gets its own
scale, max|w| / 127, over the axes the matmul contracts, so the error of a weight is at
most half a step of its own channel.

A quantized weight is a `QuantizedWeight` pytree in place of the float array; the
model's `layers.weight_einsum` and `layers.embedding_lookup` understand it, so the same
apply function runs float and int8 parameter trees.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# How the generation worker may store weights: as loaded, or int8 per channel.
QUANTIZATIONS = ("none", "int8")

# The axes each weight contracts in its einsum (model_service.modules), by parameter
# name: always its last ones. The scale is taken over them, so it is per output channel.
CONTRACTED_AXES = {
    "input_embedding": (1,),  # [V, D]: a row per token (lookup and output projection)
    "q_einsum": (2,),  # [N, H, D]
    "kv_einsum": (3,),  # [2, K, H, D]
    "qkv_einsum": (3,),  # [3, N, H, D]
    "attn_vec_einsum": (1, 2),  # [D, N, H]
    "gating_einsum": (2,),  # [2, F, D]
    "linear": (1,),  # [D, F]
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """An int8 weight and its float32 scales (same rank, size 1 on contracted axes).

    `values` comes first among the leaves so that Flax's parameter shape check, which
    compares the first leaf with the declared shape, accepts it in place of the float
    weight.
    """

    values: jax.Array  # int8, the weight's shape
    scale: jax.Array  # float32, the weight's shape with contracted axes of size 1
    axes: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    # Products with this weight round the activations to bfloat16 (a prefill pass's:
    # `with_bfloat16_products`); float32 otherwise.
    bfloat16_products: bool = dataclasses.field(
        default=False, metadata={"static": True}
    )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def dequantize(self, dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return self.values.astype(dtype) * self.scale.astype(dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerWeight:
    """Layer `index` of an int8 weight stacked over the layers (`values` [L, ...] and
    `scale` [L, ...] of `stack`; its `axes` are a layer's), in a model scanned over
    its layers (`transformer.stack_layers`).

    The int8 product reads the layer where it lies in the stack; slicing it out with
    a traced index would copy the layer's weights on every step.
    """

    stack: QuantizedWeight
    index: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stack.shape[1:]


def quantize(weight: Any, axes: tuple[int, ...]) -> QuantizedWeight:
    """Symmetric int8 quantization of `weight`, one scale per output channel."""
    values, scale = _quantize_array(np.asarray(weight, np.float32), axes)
    return QuantizedWeight(jnp.asarray(values), jnp.asarray(scale), tuple(axes))


def quantize_rows(
    chunks: Iterable[np.ndarray], shape: tuple[int, ...]
) -> QuantizedWeight:
    """`quantize` of a weight that contracts all its axes but the first, given as
    consecutive chunks of its rows (of any float dtype).

    Only the int8 result and one chunk are held at a time: the float32 copy of the
    262,144 x 640 embedding alone would be 671 MB. The result becomes the device
    array without a copy.

    Args:
        chunks: the weight's rows, in order, a few thousand at a time.
        shape: the whole weight's shape.

    Returns:
        The weight in int8 with one scale per row.
    """
    axes = tuple(range(1, len(shape)))
    values = _aligned_empty(shape, np.int8)
    scale = np.empty((shape[0],) + (1,) * len(axes), np.float32)
    start = 0
    for chunk in chunks:
        stop = start + len(chunk)
        values[start:stop], scale[start:stop] = _quantize_array(
            np.asarray(chunk, np.float32), axes
        )
        start = stop
    if start != shape[0]:
        raise ValueError(f"the chunks hold {start} rows, the weight {shape[0]}")
    return QuantizedWeight(
        jax.device_put(values, may_alias=True), jnp.asarray(scale), axes
    )


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An empty array whose data starts on 64 bytes, which a CPU device array can
    alias (numpy's large arrays start 16 bytes into a page: XLA would copy them)."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    buffer = np.empty(size + 64, np.uint8)
    start = -buffer.ctypes.data % 64
    return buffer[start : start + size].view(dtype).reshape(shape)


def _quantize_array(
    weight: np.ndarray, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and float32 scales (size 1 on `axes`) of a float32 array."""
    scale = np.max(np.abs(weight), axis=axes, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.rint(weight / scale), -127, 127).astype(np.int8), scale


def quantize_params(params: Any, names: tuple[str, ...] | None = None) -> Any:
    """The parameter tree with the named weights (default: all matmul weights) in int8.

    Args:
        params: a float parameter tree of `model_service.transformer.Transformer`.
        names: parameter names to quantize, keys of CONTRACTED_AXES.

    Returns:
        A tree of the same structure where those weights are `QuantizedWeight`s
        (those that already were stay as they are).
    """
    names = tuple(CONTRACTED_AXES) if names is None else names

    def visit(tree: Any, name: str = "") -> Any:
        if isinstance(tree, dict):
            if set(tree) == {"w"} and name in names:  # an `Einsum` module's weight
                return {"w": visit(tree["w"], name)}
            return {key: visit(value, key) for key, value in tree.items()}
        if name in names and not isinstance(tree, QuantizedWeight):
            return quantize(tree, CONTRACTED_AXES[name])
        return tree

    return visit(params)


def with_bfloat16_products(params: Any) -> Any:
    """The tree with every int8 weight's products in bfloat16 activations.

    On a CPU with AVX512_BF16 a product then does twice the multiply-adds per
    instruction (`cpu_kernels.int8_matmul`); the generation worker's prefill passes
    run so, its decode steps in float32. Float weights stay as they are.
    """
    return jax.tree.map(
        lambda leaf: (
            dataclasses.replace(leaf, bfloat16_products=True)
            if isinstance(leaf, QuantizedWeight)
            else leaf
        ),
        params,
        is_leaf=lambda node: isinstance(node, QuantizedWeight),
    )


def check_quantization(quantize: str) -> None:
    """Raises ValueError unless `quantize` is one of `QUANTIZATIONS`."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize is one of {QUANTIZATIONS}, not {quantize!r}")


def default_quantization() -> str:
    """How the generation worker stores weights: "int8" on a CPU, "none" elsewhere.

    A CPU decoding a token reads every weight once and waits on memory, so a quarter
    of the bytes is most of the speed; an accelerator runs the weights in bf16.
    """
    return "int8" if jax.default_backend() == "cpu" else "none"
