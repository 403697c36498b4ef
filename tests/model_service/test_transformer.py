"""The model on a tiny config: cached decoding equals the full forward pass, masks,
RoPE, shapes and gradients.

Shapes are few and fixed so that each jitted function compiles once per session.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_service import layers, modules
from model_service.cache import init_cache, stack_name
from model_service.config import GLOBAL, LOCAL, get_config
from model_service.transformer import Transformer, abstract_params

VOCAB = 97
LENGTH = 11  # tokens per row; more than twice the tiny sliding window (4)
CACHE = 16
PREFILL = 7


@pytest.fixture(scope="module")
def config():
    return dataclasses.replace(get_config("tiny"), vocab_size=VOCAB)


def lively_params(config, seed=0):
    """Random parameters large enough that attention is sharp and logits spread out
    (the official initializers give nearly uniform outputs, which hide mistakes)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(0.2 * rng.standard_normal(leaf.shape), jnp.float32),
        abstract_params(config),
    )


@pytest.fixture(scope="module")
def params(config):
    return lively_params(config)


@pytest.fixture(scope="module")
def forward(config):
    return jax.jit(Transformer(config=config).apply)


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(7), (2, LENGTH), 0, VOCAB)


@pytest.fixture(scope="module")
def full_logits(forward, params, tokens):
    positions = jnp.broadcast_to(jnp.arange(LENGTH), (2, LENGTH))
    return forward({"params": params}, tokens, positions).logits


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=2e-5)


def test_it_returns_float32_logits_over_the_vocabulary(full_logits):
    assert full_logits.shape == (2, LENGTH, VOCAB)
    assert full_logits.dtype == jnp.float32
    # Lively parameters: predictions spread out, so the equalities below mean something.
    assert float(jnp.std(full_logits)) > 0.5


def test_it_keeps_only_the_window_on_local_layers(config):
    cache = init_cache(config, batch_size=2, length=CACHE)
    assert config.attention_types == (LOCAL, GLOBAL, LOCAL, GLOBAL)
    # Each type's layers stacked: 2 layers of 2 rows.
    heads = (config.num_kv_heads, config.head_dim)
    local, global_ = cache[stack_name(LOCAL)], cache[stack_name(GLOBAL)]
    assert local["k"].shape == (2, 2, 4, *heads)
    assert local["v"].shape == (2, 2, *heads, 4)
    assert global_["k"].shape == (2, 2, CACHE, *heads)
    assert (global_["positions"] == -1).all()


def test_it_decodes_token_by_token_as_the_full_forward(
    config, forward, params, tokens, full_logits
):
    cache = init_cache(config, batch_size=2, length=CACHE)
    for t in range(LENGTH):
        step = forward(
            {"params": params}, tokens[:, t : t + 1], jnp.full((2, 1), t), cache=cache
        )
        cache = step.cache
        assert_close(step.logits[:, 0], full_logits[:, t])


def prefill_with_rows_at_different_positions(config, forward, params, tokens):
    """Row 0 prefills 7 tokens; row 1 prefills 4, left-padded with position -1."""
    row1 = jnp.concatenate([jnp.zeros(3, jnp.int32), tokens[1, :4]])
    prompt = jnp.stack([tokens[0, :PREFILL], row1])
    positions = jnp.array([list(range(PREFILL)), [-1, -1, -1, 0, 1, 2, 3]])
    cache = init_cache(config, batch_size=2, length=CACHE)
    return forward({"params": params}, prompt, positions, cache=cache)


def test_it_prefills_then_decodes_rows_at_different_positions_as_the_full_forward(
    config, forward, params, tokens, full_logits
):
    out = prefill_with_rows_at_different_positions(config, forward, params, tokens)
    assert_close(out.logits[0], full_logits[0, :PREFILL])
    assert_close(out.logits[1, 3:], full_logits[1, :4])

    cache = out.cache
    next_position = [PREFILL, 4]
    while next_position[1] < LENGTH:
        # Row 0 runs out first and then feeds padding, as a finished request would.
        positions = [p if p < LENGTH else -1 for p in next_position]
        step_tokens = jnp.array(
            [[tokens[row, p % LENGTH]] for row, p in enumerate(positions)]
        )
        step = forward(
            {"params": params},
            step_tokens,
            jnp.array([[p] for p in positions]),
            cache=cache,
        )
        cache = step.cache
        for row, p in enumerate(positions):
            if p >= 0:
                assert_close(step.logits[row, 0], full_logits[row, p])
        next_position = [p + 1 for p in next_position]


def test_it_never_writes_padding_to_the_cache(config, forward, params, tokens):
    out = prefill_with_rows_at_different_positions(config, forward, params, tokens)
    # layer 0 is local and layer 1 global, the first of each type's stack
    global_positions = np.asarray(out.cache[stack_name(GLOBAL)]["positions"][0])
    assert global_positions[0].tolist() == list(range(PREFILL)) + [-1] * (
        CACHE - PREFILL
    )
    assert global_positions[1].tolist() == [0, 1, 2, 3] + [-1] * (CACHE - 4)
    # The ring keeps the last window of each row, each at slot position % 4.
    local_positions = np.asarray(out.cache[stack_name(LOCAL)]["positions"][0])
    assert local_positions[0].tolist() == [4, 5, 6, 3]
    assert local_positions[1].tolist() == [0, 1, 2, 3]


def test_it_ignores_what_a_row_held_before_when_it_starts_over(
    config, forward, params, tokens, full_logits
):
    used = prefill_with_rows_at_different_positions(
        config, forward, params, tokens
    ).cache
    # Row 0 starts a new sequence (row 1's tokens) at position 0 in the used cache.
    prompt = jnp.stack([tokens[1, :PREFILL], tokens[1, :PREFILL]])
    positions = jnp.stack([jnp.arange(PREFILL), jnp.full(PREFILL, -1)])
    out = forward({"params": params}, prompt, positions, cache=used)
    assert_close(out.logits[0], full_logits[1, :PREFILL])


def test_it_attends_only_inside_the_window_on_local_layers():
    positions = jnp.array([[3, 4, 5, -1]])
    mask = modules.attention_mask(
        positions, jnp.array([[0, 1, 2, 3, 4, 5, -1]]), sliding_window=3
    )
    assert np.asarray(mask[0]).astype(int).tolist() == [
        [0, 1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    causal = modules.attention_mask(positions, positions, sliding_window=None)
    assert np.asarray(causal[0, 2]).astype(int).tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize(
    "attn_type, sees_the_first_token", [(LOCAL, False), (GLOBAL, True)]
)
def test_a_single_layer_sees_the_first_token_only_when_global(
    config, attn_type, sees_the_first_token
):
    one_layer = dataclasses.replace(
        config, num_layers=1, attention_pattern=(attn_type,)
    )
    params = lively_params(one_layer)
    tokens = jnp.array([[5, 6, 7, 8, 9, 10], [50, 6, 7, 8, 9, 10]])
    forward = jax.jit(Transformer(config=one_layer).apply)
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
    logits = forward({"params": params}, tokens, positions).logits
    # Position 5 is 5 back from position 0: outside a window of 4.
    changed = not np.allclose(logits[0, 5], logits[1, 5], atol=1e-6)
    assert changed == sees_the_first_token
    assert not np.allclose(logits[0, 3], logits[1, 3], atol=1e-6)


def test_rope_rotates_without_changing_lengths_and_depends_on_relative_position():
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 16))

    def rotate(x, p):
        return layers.apply_rope(x, jnp.array([[p]]), base_frequency=10_000)

    np.testing.assert_allclose(
        jnp.linalg.norm(rotate(q, 9)), jnp.linalg.norm(q), rtol=1e-5
    )
    assert float(jnp.sum(rotate(q, 0) * rotate(k, 0))) == pytest.approx(
        float(jnp.sum(q * k)), rel=1e-5
    )
    score_a = jnp.sum(rotate(q, 7) * rotate(k, 3))
    score_b = jnp.sum(rotate(q, 104) * rotate(k, 100))
    assert float(score_a) == pytest.approx(float(score_b), rel=1e-4)
    assert float(score_a) != pytest.approx(float(jnp.sum(q * k)), rel=1e-2)


def test_rope_pairs_each_dimension_with_the_one_half_a_head_away():
    x = jnp.zeros((1, 1, 1, 4)).at[..., 0].set(1.0)
    # Position 1 at base 1: the first pair turns by 1 radian, into dimension 2.
    rotated = layers.apply_rope(x, jnp.array([[1]]), base_frequency=1.0)
    np.testing.assert_allclose(
        rotated[0, 0, 0], [np.cos(1), 0, np.sin(1), 0], atol=1e-6
    )


def test_it_soft_caps_logits_when_the_config_says_so():
    x = jnp.array([-1000.0, 0.0, 3.0])
    np.testing.assert_allclose(
        modules.soft_cap(x, 30.0), [-30.0, 0.0, 30 * np.tanh(0.1)], rtol=1e-6
    )
    assert modules.soft_cap(x, None) is x


def test_its_gradients_are_finite_even_with_padding(config, params, tokens):
    model = Transformer(config=config)
    positions = jnp.array([list(range(LENGTH)), [-1] * 3 + list(range(LENGTH - 3))])

    def loss(p):
        logits = model.apply({"params": p}, tokens, positions).logits
        logprobs = jax.nn.log_softmax(logits[:, :-1])
        picked = jnp.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1)
        return -jnp.mean(picked)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert all(float(jnp.abs(g).max()) > 0 for g in leaves)
