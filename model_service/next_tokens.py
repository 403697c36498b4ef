"""The batched sampling of next tokens.

`sample_rows` applies each row's own temperature / top-k / top-p as arrays, so one
compiled step serves a batch of requests with different settings (`SamplingParams`),
and gives each token's log-probability under the distribution it was drawn from (what
REINFORCE needs of its samples).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Masked logits: a large negative, not -inf, so softmax of a masked row stays finite.
_NEG = -1e30


def sample_rows(
    logits: jax.Array,  # [B, V] float32
    keys: jax.Array,  # [B] keys, one per row
    *,
    temperature: jax.Array,  # [B] float32; 0 = greedy
    top_k: jax.Array,  # [B] int32; 0 = no limit
    top_p: jax.Array,  # [B] float32; 1 = no limit
    max_top_k: int = 0,
) -> tuple[jax.Array, jax.Array]:  # [B] int32, [B] float32
    """Samples each row with its own settings, in one traced computation.

    Rows that ask for neither top-k nor top-p are drawn from the whole tempered
    distribution, exactly (`_sample_whole`). Top-k and top-p need the sorted
    distribution, and a full sort of a 262k vocabulary costs more than the rest of a
    decode step, so those rows are first cut to the `max_top_k` largest logits when
    the caller allows it (0: no cut, exact top-p over the whole vocabulary).

    Returns:
        The tokens, and their log-probabilities under the distribution each was drawn
        from: softmax(logits / temperature) renormalized over the tokens that top-k
        and top-p keep; 0 for greedy rows, whose choice is certain.
    """
    sampling = temperature > 0
    truncated = (top_k > 0) | (top_p < 1)
    none = (jnp.zeros(keys.shape, jnp.int32), jnp.zeros(keys.shape, jnp.float32))

    def whole() -> tuple[jax.Array, jax.Array]:
        safe_temperature = jnp.where(sampling, temperature, 1.0)[:, None]
        return _sample_whole(logits / safe_temperature, keys)

    def cut() -> tuple[jax.Array, jax.Array]:
        return _sample_truncated(logits, keys, temperature, top_k, top_p, max_top_k)

    # Each branch costs a pass over the vocabulary: run it only if some row needs it.
    whole_tokens, whole_logprobs = jax.lax.cond(
        jnp.any(sampling & ~truncated), whole, lambda: none
    )
    cut_tokens, cut_logprobs = jax.lax.cond(
        jnp.any(sampling & truncated), cut, lambda: none
    )
    greedy_tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    tokens = jnp.where(truncated, cut_tokens, whole_tokens)
    logprobs = jnp.where(truncated, cut_logprobs, whole_logprobs)
    logprobs = jnp.where(sampling, logprobs, 0.0)
    return jnp.where(sampling, tokens, greedy_tokens), logprobs


def _sample_whole(
    scaled: jax.Array,  # [B, V] tempered logits
    keys: jax.Array,  # [B] keys
) -> tuple[jax.Array, jax.Array]:
    """Exact draws from softmax(scaled) over the whole vocabulary, in two stages: a
    block of about sqrt(V) tokens by the block's mass, then a token of that block.

    One pass over the logits and two draws among about sqrt(V) values a row, where
    `jax.random.categorical` over all 262k tokens would make 262k Gumbel numbers a row
    (over 100 times slower on a CPU than this).
    """
    batch, vocab = scaled.shape
    size = math.isqrt(vocab - 1) + 1
    blocks = -(-vocab // size)
    padded = jnp.pad(scaled, ((0, 0), (0, blocks * size - vocab)), constant_values=_NEG)
    padded = padded.reshape(batch, blocks, size)
    block_logsumexp = jax.nn.logsumexp(padded, axis=-1)  # [B, blocks]
    block_keys, token_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    block = jax.vmap(jax.random.categorical)(block_keys, block_logsumexp)
    within = jnp.take_along_axis(padded, block[:, None, None], axis=1)[:, 0]
    offset = jax.vmap(jax.random.categorical)(token_keys, within)
    chosen = jnp.take_along_axis(within, offset[:, None], axis=-1)[:, 0]
    logprob = chosen - jax.nn.logsumexp(block_logsumexp, axis=-1)
    return (block * size + offset).astype(jnp.int32), logprob


def _sample_truncated(
    logits: jax.Array,  # [B, V]
    keys: jax.Array,  # [B] keys
    temperature: jax.Array,  # [B]
    top_k: jax.Array,  # [B]
    top_p: jax.Array,  # [B]
    max_top_k: int,
) -> tuple[jax.Array, jax.Array]:
    """Draws among the tokens that top-k and top-p keep, with their log-probabilities
    under that renormalized distribution."""
    vocab = logits.shape[-1]
    if max_top_k:
        values, indices = jax.lax.top_k(logits, min(max_top_k, vocab))
    else:
        indices = jnp.argsort(-logits, axis=-1)
        values = jnp.take_along_axis(logits, indices, axis=-1)
    width = values.shape[-1]
    safe_temperature = jnp.where(temperature > 0, temperature, 1.0)[:, None]
    scaled = values / safe_temperature
    rank = jnp.arange(width)[None, :]
    k = jnp.where(top_k > 0, top_k, width)[:, None]
    scaled = jnp.where(rank < k, scaled, _NEG)
    probs = jax.nn.softmax(scaled, axis=-1)
    # Keep a token when the mass before it is still below p: the top token always stays.
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    scaled = jnp.where(mass_before < top_p[:, None], scaled, _NEG)
    choice = jax.vmap(jax.random.categorical)(keys, scaled)
    sampled = jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0]
    chosen = jnp.take_along_axis(scaled, choice[:, None], axis=-1)[:, 0]
    logprob = chosen - jax.nn.logsumexp(scaled, axis=-1)
    return sampled.astype(jnp.int32), logprob
