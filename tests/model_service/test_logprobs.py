"""Chunked log-probabilities of given tokens: equal to a full log-softmax, with the
same gradients, and never a [batch, length, vocab] array; their weighted sum, with
its gradient made in the forward pass, equal to the full one's."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_service.config import get_config
from model_service.logprobs import (
    hidden_states,
    sequence_logprob_sum,
    sequence_logprobs,
    token_logprobs,
    weighted_logprob_sum,
)
from model_service.transformer import Transformer, abstract_params, init_params

# The tiny config with a small vocabulary: the equalities need no real one.
VOCAB = 1000


def small_config(**changes):
    return dataclasses.replace(get_config("tiny"), vocab_size=VOCAB, **changes)


@pytest.fixture(scope="module")
def params():
    return init_params(small_config(), seed=1)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (2, 9)).astype(np.int32)
    positions = np.tile(np.arange(9, dtype=np.int32), (2, 1))
    positions[1, 6:] = -1  # a padded row
    targets = rng.integers(0, VOCAB, (2, 9)).astype(np.int32)
    # Scattered targets: rows reordered, and the chunks after them skipped.
    mask = np.zeros((2, 9), bool)
    mask[0, [2, 3, 7]] = True
    mask[1, :6] = True
    return tokens, positions, targets, mask


def chunked_logprobs(config, params, tokens, positions, targets, mask, temperature=1.0):
    """With chunks of 4 positions: two of each row's, five chunks, the last two with
    nothing to compute."""
    return chunked(
        token_logprobs, config, params, tokens, positions, targets, mask, temperature
    )


def chunked(head, config, params, tokens, positions, targets, values, temperature):
    return head(
        hidden_states(config, params, tokens, positions),
        params["embedder"]["input_embedding"],
        targets,
        values,
        final_logit_soft_cap=config.final_logit_soft_cap,
        temperature=temperature,
        chunk=4,
    )


def full_logprobs(config, params, tokens, positions, targets, mask, temperature=1.0):
    logits = Transformer(config=config).apply({"params": params}, tokens, positions)
    logprobs = jax.nn.log_softmax(logits.logits / temperature, axis=-1)
    picked = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    return jnp.where(mask, picked, 0.0)


@pytest.mark.parametrize(
    "soft_cap, temperature", [(None, 1.0), (3.0, 1.0), (None, 0.7)]
)
def test_chunked_logprobs_equal_a_full_log_softmax(
    params, batch, soft_cap, temperature
) -> None:
    config = small_config(final_logit_soft_cap=soft_cap)
    chunked = jax.jit(chunked_logprobs, static_argnums=(0, 6))(
        config, params, *batch, temperature
    )
    full = jax.jit(full_logprobs, static_argnums=(0, 6))(
        config, params, *batch, temperature
    )
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(chunked)[~batch[3]] == 0.0)


def test_chunked_logprobs_have_the_gradients_of_the_full_ones(params, batch) -> None:
    config = small_config()
    chunked = jax.jit(jax.grad(lambda p: chunked_logprobs(config, p, *batch).sum()))
    full = jax.jit(jax.grad(lambda p: full_logprobs(config, p, *batch).sum()))
    chunked, full = chunked(params), full(params)
    for got, want in zip(
        jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(full), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def chunked_weighted_sum(config, params, tokens, positions, targets, weights, t=1.0):
    return chunked(
        weighted_logprob_sum, config, params, tokens, positions, targets, weights, t
    )


@pytest.mark.parametrize(
    "soft_cap, temperature", [(None, 1.0), (3.0, 1.0), (None, 0.7)]
)
def test_the_weighted_sum_and_its_gradient_equal_the_full_ones(
    params, batch, soft_cap, temperature
) -> None:
    config = small_config(final_logit_soft_cap=soft_cap)
    tokens, positions, targets, mask = batch
    # Signed weights, as REINFORCE's advantages are; 0 outside the mask.
    weights = np.where(mask, np.linspace(-2.0, 3.0, mask.size).reshape(mask.shape), 0)
    weights = weights.astype(np.float32)

    def full(p):
        logprobs = full_logprobs(
            config, p, tokens, positions, targets, mask, temperature
        )
        return jnp.sum(weights * logprobs)

    def chunked(p):
        return chunked_weighted_sum(
            config, p, tokens, positions, targets, weights, temperature
        )

    got_value, got = jax.jit(jax.value_and_grad(chunked))(params)
    want_value, want = jax.jit(jax.value_and_grad(full))(params)
    assert float(got_value) == pytest.approx(float(want_value), rel=1e-5)
    for got_leaf, want_leaf in zip(
        jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
    ):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=1e-5)


def test_the_weighted_sums_gradient_scales_with_what_comes_after(params, batch):
    """The forward pass's gradient times the cotangent: a loss of 3 times the sum."""
    config = small_config()
    tokens, positions, targets, mask = batch
    weights = mask.astype(np.float32)

    def loss(p, scale):
        return scale * chunked_weighted_sum(
            config, p, tokens, positions, targets, weights
        )

    once = jax.grad(loss)(params, 1.0)
    thrice = jax.grad(loss)(params, 3.0)
    for one, three in zip(
        jax.tree_util.tree_leaves(once), jax.tree_util.tree_leaves(thrice), strict=True
    ):
        np.testing.assert_allclose(three, 3 * one, rtol=1e-4, atol=1e-5)


def test_no_batch_by_length_by_vocab_array_is_ever_held() -> None:
    """The gradient of 8 x 512 tokens over the 262,144-piece vocabulary, compiled, not
    run: the log-probs add far less to the backbone's own temporaries than the 4 GiB
    of one [8, 512, 262144] float32 array."""
    config = get_config("tiny")
    params = abstract_params(config)
    ids = jax.ShapeDtypeStruct((8, 512), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(512, dtype=jnp.int32), (8, 512))

    def logprobs(p, tokens):
        return sequence_logprobs(config, p, tokens, positions, tokens, tokens >= 0)

    def hidden(p, tokens):
        return hidden_states(config, p, tokens, positions)

    def temporaries(forward) -> int:
        grad = jax.grad(lambda p, tokens: forward(p, tokens).sum())
        compiled = jax.jit(grad).lower(params, ids).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    def weighted_sum(p, tokens):
        return sequence_logprob_sum(
            config, p, tokens, positions, tokens, (tokens >= 0).astype(jnp.float32)
        )

    full_logits = 8 * 512 * config.vocab_size * 4
    assert temporaries(logprobs) - temporaries(hidden) < full_logits / 8
    # bigger chunks, a chunk's logits and their gradient alive at once
    assert temporaries(weighted_sum) - temporaries(hidden) < full_logits / 2
