"""Basic layers: the weight matmul, RMSNorm and rotary position embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from model_service.quantize import QuantizedWeight


def weight_einsum(equation: str, x: jax.Array, weight: jax.Array) -> jax.Array:
    """Multiplies activations by a weight: every weight matmul of the model is here.

    Keeping all of them in one function leaves one place to change when weights are
    stored differently (e.g. int8 with per-channel scales).

    Args:
        equation: einsum equation, activations first, weight second.
        x: activations.
        weight: the parameter; it is cast to the activations' dtype.

    Returns:
        The einsum of `x` and `weight`.
    """
    if isinstance(weight, QuantizedWeight):
        # Contract with the int8 values, then scale each output channel: the scale is
        # constant over the contracted axes, so it can wait until after the sum.
        operands, out = equation.split("->")
        weight_axes = operands.split(",")[1]
        kept = "".join(a for i, a in enumerate(weight_axes) if i not in weight.axes)
        if weight.values.ndim == 2 and weight.axes == (1,):
            y = _rows_times_transposed(x, weight.values)
        else:
            y = jnp.einsum(equation, x, weight.values.astype(x.dtype))
        scale = jnp.squeeze(weight.scale, weight.axes).astype(x.dtype)
        return jnp.einsum(f"{out},{kept}->{out}", y, scale)
    return jnp.einsum(equation, x, weight.astype(x.dtype))


def _rows_times_transposed(x: jax.Array, values: jax.Array) -> jax.Array:
    """x [..., D] times int8 values [V, D] transposed -> [..., V], one row at a time.

    XLA on CPU fuses the int8-to-float conversion into a [1, D] x [D, V] product and
    reads the int8 bytes once; with more rows it first writes the whole float copy of
    the weight (4 bytes per entry) and is several times slower than float weights. So
    the rows go one by one: that is the decode step's output projection.
    """
    rows = x.reshape(-1, 1, x.shape[-1])
    y = jax.lax.map(lambda row: row @ values.astype(x.dtype).T, rows)
    return y.reshape(*x.shape[:-1], values.shape[0])


def embedding_lookup(table: jax.Array, tokens: jax.Array) -> jax.Array:
    """Rows of an embedding table [V, D] for tokens [...] -> [..., D] (float32)."""
    if isinstance(table, QuantizedWeight):
        return table.values[tokens].astype(jnp.float32) * table.scale[tokens]
    return table[tokens]


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
        weight = self.param(self.weight_name, nn.initializers.normal(), self.shape)
        return weight_einsum(equation, x, weight)


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
