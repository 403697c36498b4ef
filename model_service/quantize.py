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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def dequantize(self, dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return self.values.astype(dtype) * self.scale.astype(dtype)


def quantize(weight: Any, axes: tuple[int, ...]) -> QuantizedWeight:
    """Symmetric int8 quantization of `weight`, one scale per output channel."""
    weight = np.asarray(weight, np.float32)
    scale = np.max(np.abs(weight), axis=axes, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    values = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return QuantizedWeight(jnp.asarray(values), jnp.asarray(scale), tuple(axes))


def quantize_params(params: Any, names: tuple[str, ...] | None = None) -> Any:
    """The parameter tree with the named weights (default: all matmul weights) in int8.

    Args:
        params: a float parameter tree of `model_service.transformer.Transformer`.
        names: parameter names to quantize, keys of CONTRACTED_AXES.

    Returns:
        A tree of the same structure where those weights are `QuantizedWeight`s.
    """
    names = tuple(CONTRACTED_AXES) if names is None else names

    def visit(tree: Any, name: str = "") -> Any:
        if isinstance(tree, dict):
            if set(tree) == {"w"} and name in names:  # an `Einsum` module's weight
                return {"w": quantize(tree["w"], CONTRACTED_AXES[name])}
            return {key: visit(value, key) for key, value in tree.items()}
        if name in names:
            return quantize(tree, CONTRACTED_AXES[name])
        return tree

    return visit(params)


def default_quantization() -> str:
    """How the generation worker stores weights: "int8" on a CPU, "none" elsewhere.

    A CPU decoding a token reads every weight once and waits on memory, so a quarter
    of the bytes is most of the speed; an accelerator runs the weights in bf16.
    """
    return "int8" if jax.default_backend() == "cpu" else "none"
