"""Basic layers: the weight matmul, RMSNorm and rotary position embeddings."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from model_service import cpu_kernels
from model_service.quantize import LayerWeight, QuantizedWeight


def weight_einsum(equation: str, x: jax.Array, weight: jax.Array) -> jax.Array:
    """Multiplies activations by a weight: every weight matmul of the model is here.

    Keeping all of them in one function leaves one place to change when weights are
    stored differently (int8 with per-channel scales: `model_service.quantize`).

    Args:
        equation: einsum equation, activations first, weight second; the weight's
            contracted axes are its last ones.
        x: activations.
        weight: the parameter; it is cast to the activations' dtype.

    Returns:
        The einsum of `x` and `weight`.
    """
    if isinstance(weight, QuantizedWeight | LayerWeight):
        return _quantized_einsum(equation, x, weight)
    return jnp.einsum(equation, x, weight.astype(x.dtype))


def _quantized_einsum(
    equation: str, x: jax.Array, weight: QuantizedWeight | LayerWeight
) -> jax.Array:
    """`weight_einsum` for an int8 weight, as one 2-D product [rows, K] x [M, K]^T.

    The weight's contracted axes are its last ones, so it is an [M, K] matrix without
    a copy (a layer of a stack: [L, M, K], read at the layer); the activations are
    moved into [rows, K], which is small. The scale is constant over the contracted
    axes, so it is applied to the product's columns.
    """
    stack, layer = (
        (weight.stack, weight.index) if isinstance(weight, LayerWeight) else (weight, 0)
    )
    operands, out = equation.split("->")
    x_axes, w_axes = operands.split(",")
    contracted = w_axes[len(w_axes) - len(stack.axes) :]
    kept = w_axes[: len(w_axes) - len(stack.axes)]
    rest = "".join(a for a in x_axes if a not in contracted)
    rows = jnp.einsum(f"{x_axes}->{rest}{contracted}", x)
    rest_shape = rows.shape[: len(rest)]
    kept_shape = weight.shape[: len(kept)]
    depth = math.prod(weight.shape[len(kept) :])
    values = stack.values.reshape(-1, math.prod(kept_shape), depth)  # [L, M, K]
    y = _int8_matmul(
        rows.reshape(-1, values.shape[-1]),
        values,
        stack.scale,
        layer,
        bfloat16=stack.bfloat16_products,
    )
    y = y.reshape(*rest_shape, *kept_shape)
    return jnp.einsum(f"{rest}{kept}->{out}", y).astype(x.dtype)


def _int8_matmul(
    x: jax.Array,
    values: jax.Array,
    scale: jax.Array,
    layer: jax.Array | int,
    *,
    bfloat16: bool,
) -> jax.Array:
    """x [R, K] (float) times int8 values [M, K] transposed (layer `layer` of a stack
    [L, M, K]), column m times scale[m]; with `bfloat16`, x rounded to bfloat16 first
    (a prefill pass's: `quantize.with_bfloat16_products`).

    Only the weights are int8; the activations stay float. The C++ kernel reads each
    weight byte once and converts it next to its use, and computes every row the same
    way whatever R is, so a request gets the same tokens alone or in a batch. (XLA
    converts the whole weight first, or for one row fuses the conversion but
    recomputes the row's producers for each output.) It also beat XLA's float GEMM
    (XNNPACK) over weight blocks converted to float on prefill passes of 64 and 128
    rows. int8 activations cost accuracy: with one scale per row 88 % top-1 agreement
    with HF transformers on the parity corpus, with one per block of 32 (llama.cpp's
    Q8_0) 94.3 % where the bar is 95 %, and a row's last-bit differences between batch
    shapes (XLA's own operations) then flip roundings and so greedy tokens.
    """
    return cpu_kernels.int8_matmul(x, values, scale, layer, bfloat16=bfloat16).astype(
        x.dtype
    )


def embedding_lookup(table: jax.Array, tokens: jax.Array) -> jax.Array:
    """Rows of an embedding table [V, D] for tokens [...] -> [..., D] (float32)."""
    if isinstance(table, QuantizedWeight):
        return table.values[tokens].astype(jnp.float32) * table.scale[tokens]
    return table[tokens]


def weight(module: nn.Module, name: str, shape: tuple[int, ...]) -> Any:
    """`module`'s matmul weight `name` of `shape` (a parameter, created at `init`).

    A layer of a model scanned over its layers gets its int8 weights as
    `LayerWeight`s, whole stacks that Flax's shape check of `param` would refuse:
    those are taken as they are.
    """
    if module.has_variable("params", name):
        value = module.get_variable("params", name)
        if isinstance(value, LayerWeight):
            return value
    return module.param(name, nn.initializers.normal(), shape)


class Einsum(nn.Module):
    """A weight of a fixed shape applied with an einsum equation.

    Attributes:
        shape: the weight's shape.
        weight_name: the parameter's name (`w` in the official checkpoints).
    """

    shape: tuple[int, ...]
    weight_name: str = "w"

    @nn.compact
    def __call__(self, equation: str, x: jax.Array) -> jax.Array:
        return weight_einsum(equation, x, weight(self, self.weight_name, self.shape))


class RMSNorm(nn.Module):
    """Root-mean-square norm whose scale is stored as an offset from 1.

    Computed in float32 (as the reference implementations do) and cast back.

    Attributes:
        epsilon: added to the mean square before the square root.
    """

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(mean_square + self.epsilon)
        return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def apply_rope(
    x: jax.Array,  # [B, T, N, H]
    positions: jax.Array,  # [B, T]
    *,
    base_frequency: float,
    scale_factor: float = 1.0,
) -> jax.Array:
    """Rotary position embedding, rotating the two halves of each head.

    Head dimension i (i < H/2) pairs with i + H/2, rotated by the angle
    position / scale_factor / base_frequency ** (2i / H).

    Args:
        x: queries or keys, [batch, time, heads, head_dim].
        positions: the absolute position of each token, [batch, time].
        base_frequency: RoPE base (10,000 or 1,000,000 in Gemma 3).
        scale_factor: linear position scaling (1 means none).

    Returns:
        `x` rotated, same shape and dtype.
    """
    head_dim = x.shape[-1]
    fraction = 2 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
    timescale = base_frequency**fraction  # [H/2]
    angles = positions[..., None].astype(jnp.float32) / scale_factor / timescale
    angles = angles[..., None, :]  # [B, T, 1, H/2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate(
        [first * cos - second * sin, second * cos + first * sin], axis=-1
    )
    return rotated.astype(x.dtype)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU with the tanh approximation, as Gemma's GeGLU uses."""
    return jax.nn.gelu(x, approximate=True)
