"""Differentiable log-probabilities of given tokens, for training.

A full forward pass returns logits [B, T, vocab] in float32: with Gemma 3's 262,144
pieces a batch of 8 x 512 tokens would take 4 GiB, and its gradient as much again.
Here the final hidden states are multiplied by the (tied) embedding a chunk of
positions at a time, inside `jax.lax.map`, and each chunk is rematerialized
(`jax.checkpoint`) in the backward pass, so neither pass ever holds more than one
chunk's logits. Training differentiates through this plain-JAX path; the C++ CPU
kernels serve inference only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from model_service.config import TransformerConfig
from model_service.modules import soft_cap
from model_service.transformer import Transformer

# Positions whose logits are computed at once: 128 x 262,144 float32 logits are 128 MiB.
CHUNK = 128


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
    batch, length, dim = hidden.shape
    mask = jnp.ones((batch, length), bool) if mask is None else mask.astype(bool)
    # Each row's masked-in positions first, in order; rows stay whole, so a batch
    # sharded over devices by rows needs no exchange.
    order = jnp.argsort(~mask, axis=1, stable=True)
    per_chunk = max(1, chunk // batch)  # positions of each row in one chunk
    padded = -(-length // per_chunk) * per_chunk

    def arrange(
        x: jax.Array,
    ) -> jax.Array:  # [B, T, ...] -> [chunks, B, per_chunk, ...]
        x = jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), 1)
        x = jnp.pad(x, [(0, 0), (0, padded - length)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape(batch, padded // per_chunk, per_chunk, *x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    @jax.checkpoint
    def chunk_logprobs(part: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        h, t, m = part  # [B, per_chunk, D], [B, per_chunk], [B, per_chunk]

        def compute(h: jax.Array, t: jax.Array) -> jax.Array:
            logits = jnp.einsum(
                "BCD,VD->BCV",
                h,
                embedding.astype(h.dtype),
                preferred_element_type=jnp.float32,
            )
            logits = soft_cap(logits, final_logit_soft_cap) / temperature
            picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
            return picked - jax.nn.logsumexp(logits, axis=-1)

        def skip(h: jax.Array, t: jax.Array) -> jax.Array:
            return jnp.zeros(t.shape, jnp.float32)

        return jax.lax.cond(m.any(), compute, skip, h, t)

    logprobs = jax.lax.map(
        chunk_logprobs, (arrange(hidden), arrange(targets), arrange(mask))
    )
    logprobs = jnp.moveaxis(logprobs, 0, 1).reshape(batch, padded)[:, :length]
    logprobs = jnp.take_along_axis(logprobs, jnp.argsort(order, axis=1), axis=1)
    return jnp.where(mask, logprobs, 0.0)


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
    hidden = hidden_states(config, params, tokens, positions, dtype=dtype)
    return token_logprobs(
        hidden,
        params["embedder"]["input_embedding"],
        targets,
        mask,
        final_logit_soft_cap=config.final_logit_soft_cap,
        temperature=temperature,
    )
