"""The losses against values computed by hand."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_service.registry import load_model
from training.reward_model import RewardObjective, pair_losses
from training.sft import SFTObjective, collate, encode


def test_the_bradley_terry_loss_of_pairs() -> None:
    losses = pair_losses(
        chosen=jnp.array([2.0, 0.0, -1.0]),
        rejected=jnp.array([1.0, 0.0, 1.0]),
        margin=jnp.array([0.5, 0.0, 0.0]),
        label=jnp.array([1.0, 0.5, 1.0]),
    )
    expected = [
        -math.log(1 / (1 + math.exp(-0.5))),  # -log sigmoid(2 - 1 - 0.5)
        math.log(2),  # a tie with equal rewards
        -math.log(1 / (1 + math.exp(2))),  # the wrong order costs more
    ]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)


def test_reward_centering_adds_the_squared_sum_of_the_pair() -> None:
    losses = pair_losses(
        jnp.array([2.0]),
        jnp.array([1.0]),
        jnp.array([0.0]),
        jnp.array([1.0]),
        center_rewards_coefficient=0.01,
    )
    np.testing.assert_allclose(losses, [math.log(1 + math.exp(-1)) + 0.01 * 9])


def test_reward_metrics_from_their_sums() -> None:
    # pairs (r+, r-): (2, 1) right, (0, 3) wrong, (1, 1) a tie, not counted as either
    sums = {
        "loss": jnp.float32(3.0),
        "weight": jnp.float32(3.0),
        "decided": jnp.float32(2.0),
        "correct": jnp.float32(1.0),
        "margin": jnp.float32((2 - 1) + (0 - 3) + 0),
        "reward": jnp.float32(2 + 1 + 0 + 3 + 1 + 1),
        "reward_squared": jnp.float32(4 + 1 + 0 + 9 + 1 + 1),
    }
    metrics = RewardObjective(model_config=None).summarize(sums)
    rewards = np.array([2, 1, 0, 3, 1, 1], np.float32)
    assert float(metrics["loss"]) == 1.0
    assert float(metrics["accuracy"]) == 0.5
    assert float(metrics["reward_margin"]) == pytest.approx(-2 / 3)
    assert float(metrics["reward_mean"]) == pytest.approx(rewards.mean())
    assert float(metrics["reward_std"]) == pytest.approx(rewards.std(), rel=1e-5)


def test_the_sft_loss_of_a_model_that_knows_nothing(small_model: Path) -> None:
    """A zero embedding gives zero logits: every model token costs log(vocab), and
    only model tokens count."""
    model = load_model(small_model)
    params = jax.tree.map(jnp.asarray, model.params)
    params["embedder"]["input_embedding"] = jnp.zeros_like(
        params["embedder"]["input_embedding"]
    )
    conversation = {"messages": [
        {"role": "user", "content": "the cat sat on the mat"},
        {"role": "assistant", "content": "the dog"},
    ]}  # fmt: skip
    example = encode(model.tokenizer, 64, conversation)
    model_tokens = len(model.tokenizer.encode("the dog")) + 1  # and <end_of_turn>
    assert example.mask.sum() == model_tokens
    objective = SFTObjective(model.config)
    loss, sums = jax.jit(objective.loss)(
        params, collate([example], 2, 64), jax.random.key(0)
    )
    vocab = model.config.vocab_size
    assert float(sums["weight"]) == model_tokens
    assert float(loss) == pytest.approx(model_tokens * math.log(vocab), rel=1e-6)
    assert float(objective.summarize(sums)["loss"]) == pytest.approx(math.log(vocab))


def test_the_losses_in_bfloat16_are_those_in_float32(small_model: Path) -> None:
    """Activations in bfloat16 (what `dtype: auto` picks on GPU/TPU hosts), weights
    and log-probs in float32: the same loss to bfloat16's precision."""
    model = load_model(small_model)
    conversation = {"prompt": "the cat sat on", "completion": "the mat, the dog"}
    batch = collate([encode(model.tokenizer, 64, conversation)], 1, 64)
    losses = [
        jax.jit(SFTObjective(model.config, dtype).loss)(
            model.params, batch, jax.random.key(0)
        )[0]
        for dtype in (jnp.float32, jnp.bfloat16)
    ]
    assert float(losses[1]) == pytest.approx(float(losses[0]), rel=2e-2)
    assert float(losses[1]) != float(losses[0])  # bfloat16 did run
