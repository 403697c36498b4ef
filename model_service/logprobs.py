"""Differentiable log-probabilities of given tokens, for training.

A full forward pass returns logits [B, T, vocab] in float32: with Gemma 3's 262,144
pieces a batch of 8 x 512 tokens would take 4 GiB, and its gradient as much again.
Here the final hidden states are multiplied by the (tied) embedding a chunk of
positions at a time, inside `jax.lax.map`, and each chunk is rematerialized
(`jax.checkpoint`) in the backward pass, so neither pass ever holds more than one
chunk's logits. A loss linear in the log-probs (SFT's, REINFORCE's) takes
`weighted_logprob_sum` instead, which makes its gradient in the forward pass and so
recomputes nothing. Training differentiates through this plain-JAX path; the C++ CPU
kernels serve inference only.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from model_service.config import TransformerConfig
from model_service.modules import soft_cap
from model_service.transformer import Transformer

# Positions whose logits are computed at once: 128 x 262,144 float32 logits are 128 MiB.
CHUNK = 128
# The same for `weighted_logprob_sum`, whose chunks each add their part to the
# embedding's gradient (671 MB for Gemma 3's vocabulary): four chunks of 512 took its
# pass over 32 x 64 positions from 13.0 s (chunks of 128) to 10.0 s on 2 CPU cores,
# with each chunk's logits and their gradient, 512 MiB apiece, alive at once.
WEIGHTED_CHUNK = 512


def hidden_states(
    config: TransformerConfig,
    params: dict[str, Any],
    tokens: jax.Array,  # [B, T] int32
    positions: jax.Array,  # [B, T] int32, -1 = padding
    *,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:  # [B, T, D]
    """The final-normed hidden states of a forward pass without a cache.

    The transformer's logits are left unused, so under `jit` XLA never computes them.

    Args:
        config: the model's config.
        params: its parameters (float32; cast to `dtype` where they are used).
        tokens: token ids.
        positions: each token's position; -1 marks padding.
        dtype: the activations' dtype (bfloat16 on accelerators).

    Returns:
        The hidden states, in `dtype`.
    """
    model = Transformer(config=config, dtype=dtype)
    return model.apply({"params": params}, tokens, positions).hidden


class _Chunks:
    """The positions a mask selects, each row's moved to its front, cut into chunks
    of `per_chunk` positions of every row: rows stay whole, so a batch sharded over
    devices by rows needs no exchange."""

    def __init__(self, mask: jax.Array, chunk: int) -> None:
        self.batch, self.length = mask.shape
        self.order = jnp.argsort(~mask, axis=1, stable=True)
        self.per_chunk = max(1, chunk // self.batch)
        self.padded = -(-self.length // self.per_chunk) * self.per_chunk

    def split(self, x: jax.Array) -> jax.Array:
        """[B, T, ...] -> [chunks, B, per_chunk, ...]"""
        x = _gather(x, self.order)
        x = jnp.pad(
            x, [(0, 0), (0, self.padded - self.length)] + [(0, 0)] * (x.ndim - 2)
        )
        x = x.reshape(self.batch, -1, self.per_chunk, *x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    def join(self, x: jax.Array) -> jax.Array:
        """[chunks, B, per_chunk, ...] -> [B, T, ...], undoing `split`."""
        x = jnp.moveaxis(x, 0, 1).reshape(self.batch, self.padded, *x.shape[3:])
        return _gather(x[:, : self.length], jnp.argsort(self.order, axis=1))


def _gather(x: jax.Array, order: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), 1)


def _picked_logprobs(
    h: jax.Array,  # [B, C, D]
    embedding: jax.Array,  # [V, D]
    t: jax.Array,  # [B, C]
    soft_cap_value: float | None,
    temperature: float,
) -> jax.Array:  # [B, C] float32
    logits = jnp.einsum(
        "BCD,VD->BCV", h, embedding.astype(h.dtype), preferred_element_type=jnp.float32
    )
    logits = soft_cap(logits, soft_cap_value) / temperature
    picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def token_logprobs(
    hidden: jax.Array,  # [B, T, D]
    embedding: jax.Array,  # [V, D]
    targets: jax.Array,  # [B, T] int32
    mask: jax.Array | None = None,  # [B, T]
    *,
    final_logit_soft_cap: float | None = None,
    temperature: float = 1.0,
    chunk: int = CHUNK,
) -> jax.Array:  # [B, T] float32
    """log p(targets[b, t] | the prefix that gave hidden[b, t]), a chunk at a time.

    Equal to `log_softmax(soft_cap(hidden @ embedding.T) / temperature)` picked at
    the targets, in float32, but with at most about `chunk` positions' logits alive
    in the forward pass and in the backward pass. Only masked-in positions cost
    anything: each row's are moved to its front, and chunks with none of them are
    skipped (an SFT batch's prompts and padding, often half its positions, never meet
    the vocabulary).

    Args:
        hidden: final hidden states (`hidden_states`).
        embedding: the tied embedding table, `params["embedder"]["input_embedding"]`.
        targets: the token whose log-probability each position gives (usually the
            next input token).
        mask: where false (or 0) the result is 0 and no gradient flows; None keeps all.
        final_logit_soft_cap: the config's soft cap of the output logits.
        temperature: the logits are divided by it (the distribution a sampler at
            this temperature draws from).
        chunk: positions per chunk (over all rows of the batch together).

    Returns:
        The log-probabilities, 0 where masked.
    """
    batch, length, _dim = hidden.shape
    mask = jnp.ones((batch, length), bool) if mask is None else mask.astype(bool)
    chunks = _Chunks(mask, chunk)

    @jax.checkpoint
    def chunk_logprobs(part: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        h, t, m = part  # [B, per_chunk, D], [B, per_chunk], [B, per_chunk]

        def compute(h: jax.Array, t: jax.Array) -> jax.Array:
            return _picked_logprobs(h, embedding, t, final_logit_soft_cap, temperature)

        def skip(h: jax.Array, t: jax.Array) -> jax.Array:
            return jnp.zeros(t.shape, jnp.float32)

        return jax.lax.cond(m.any(), compute, skip, h, t)

    logprobs = jax.lax.map(
        chunk_logprobs,
        (chunks.split(hidden), chunks.split(targets), chunks.split(mask)),
    )
    return jnp.where(mask, chunks.join(logprobs), 0.0)


def weighted_logprob_sum(
    hidden: jax.Array,  # [B, T, D]
    embedding: jax.Array,  # [V, D]
    targets: jax.Array,  # [B, T] int32
    weights: jax.Array,  # [B, T]
    *,
    final_logit_soft_cap: float | None = None,
    temperature: float = 1.0,
    chunk: int = WEIGHTED_CHUNK,
) -> jax.Array:  # [] float32
    """sum(weights * token_logprobs(hidden, embedding, targets)): a loss linear in
    the log-probs, as SFT's and REINFORCE's are, with the weights its constants
    (they get no gradient).

    Its gradient is made in the same pass over the vocabulary as its value: while a
    chunk's logits are alive they are multiplied back into the gradients of `hidden`
    and `embedding`, which the backward pass only scales. Three products with the
    embedding a chunk, where differentiating `token_logprobs` takes four (its chunks
    are recomputed); positions of weight 0 cost nothing.
    """
    return _weighted_sum(
        hidden, embedding, targets, weights, final_logit_soft_cap, temperature, chunk
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _weighted_sum(
    hidden, embedding, targets, weights, soft_cap_value, temperature, chunk
):
    return _sum_and_gradients(
        hidden, embedding, targets, weights, soft_cap_value, temperature, chunk
    )[0]


def _sum_and_gradients(
    hidden, embedding, targets, weights, soft_cap_value, temperature, chunk
):
    chunks = _Chunks(weights != 0, chunk)

    def step(d_embedding: jax.Array, part: tuple) -> tuple:
        def compute(h, t, w, d_embedding):
            def chunk_sum(h, embedding):
                logprobs = _picked_logprobs(
                    h, embedding, t, soft_cap_value, temperature
                )
                return jnp.sum(w * logprobs)

            value, pullback = jax.vjp(chunk_sum, h, embedding)
            d_h, d_e = pullback(jnp.ones_like(value))
            return value, d_h, d_embedding + d_e

        def skip(h, t, w, d_embedding):
            return jnp.zeros((), jnp.float32), jnp.zeros_like(h), d_embedding

        h, t, w = part
        value, d_h, d_embedding = jax.lax.cond(
            w.any(), compute, skip, h, t, w, d_embedding
        )
        return d_embedding, (value, d_h)

    d_embedding, (values, d_hidden) = jax.lax.scan(
        step,
        jnp.zeros_like(embedding),
        (chunks.split(hidden), chunks.split(targets), chunks.split(weights)),
    )
    return values.sum(), (chunks.join(d_hidden), d_embedding)


def _weighted_sum_backward(soft_cap_value, temperature, chunk, gradients, cotangent):
    d_hidden, d_embedding = gradients
    return (
        (cotangent * d_hidden).astype(d_hidden.dtype),
        cotangent * d_embedding,
        None,
        None,
    )


_weighted_sum.defvjp(_sum_and_gradients, _weighted_sum_backward)


def sequence_logprobs(
    config: TransformerConfig,
    params: dict[str, Any],
    tokens: jax.Array,  # [B, T] int32
    positions: jax.Array,  # [B, T] int32, -1 = padding
    targets: jax.Array,  # [B, T] int32
    mask: jax.Array,  # [B, T]
    *,
    dtype: jnp.dtype = jnp.float32,
    temperature: float = 1.0,
) -> jax.Array:  # [B, T] float32
    """`token_logprobs` of a forward pass: the model's log p(targets) at each position.

    Args:
        config: the model's config.
        params: its parameters.
        tokens: the input ids.
        positions: their positions; -1 marks padding.
        targets: the token to score at each position (for teacher forcing, the next
            input id).
        mask: which positions count; the others give 0.
        dtype: the activations' dtype.
        temperature: the logits are divided by it.

    Returns:
        The log-probabilities in float32, 0 where masked.
    """
    return _of_forward_pass(
        token_logprobs,
        config,
        params,
        tokens,
        positions,
        targets,
        mask,
        dtype,
        temperature,
    )


def sequence_logprob_sum(
    config: TransformerConfig,
    params: dict[str, Any],
    tokens: jax.Array,  # [B, T] int32
    positions: jax.Array,  # [B, T] int32, -1 = padding
    targets: jax.Array,  # [B, T] int32
    weights: jax.Array,  # [B, T]
    *,
    dtype: jnp.dtype = jnp.float32,
    temperature: float = 1.0,
) -> jax.Array:  # [] float32
    """`weighted_logprob_sum` of a forward pass: sum(weights * sequence_logprobs(...)),
    the weights constants of the gradient."""
    return _of_forward_pass(
        weighted_logprob_sum,
        config,
        params,
        tokens,
        positions,
        targets,
        weights,
        dtype,
        temperature,
    )


def _of_forward_pass(
    head, config, params, tokens, positions, targets, values, dtype, temperature
):
    """`head` (token_logprobs or weighted_logprob_sum) of the forward pass's final
    hidden states and the tied embedding."""
    hidden = hidden_states(config, params, tokens, positions, dtype=dtype)
    return head(
        hidden,
        params["embedder"]["input_embedding"],
        targets,
        values,
        final_logit_soft_cap=config.final_logit_soft_cap,
        temperature=temperature,
    )
