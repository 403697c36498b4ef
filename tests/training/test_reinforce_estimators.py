"""REINFORCE's pieces against hand-computed values: the leave-one-out baseline, the
policy-gradient loss and its gradient, the KL estimates and the adaptive beta."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.reinforce import (
    adapt_beta,
    kl_estimates,
    leave_one_out_baselines,
    policy_gradient_weights,
)


def test_the_baseline_is_the_mean_reward_of_the_other_answers() -> None:
    rewards = np.asarray([[1.0, 2.0, 3.0, 6.0], [0.0, 4.0, 0.0, 0.0]])
    valid = np.ones_like(rewards, bool)

    baselines = leave_one_out_baselines(rewards, valid)

    np.testing.assert_allclose(
        baselines, [[11 / 3, 10 / 3, 3.0, 2.0], [4 / 3, 0.0, 4 / 3, 4 / 3]]
    )
    # so each prompt's advantages add up to zero
    np.testing.assert_allclose((rewards - baselines).sum(axis=1), 0.0, atol=1e-12)


def test_masked_answers_set_no_baseline() -> None:
    rewards = np.asarray([[1.0, 2.0, 3.0, 6.0], [5.0, 7.0, 9.0, 9.0]])
    valid = np.asarray([[True, False, True, True], [False, True, False, False]])

    baselines = leave_one_out_baselines(rewards, valid)

    np.testing.assert_allclose(baselines[0], [4.5, 10 / 3, 3.5, 2.0])
    # alone among its siblings: its own reward, no advantage
    assert baselines[1, 1] == 7.0


def test_the_loss_is_minus_the_advantage_times_the_log_prob() -> None:
    # Each answer's token log-probs (two tokens, the third answer's second masked).
    logprobs = jnp.asarray([[-0.25, -0.75], [-1.5, -0.5], [-3.0, 0.0]])
    mask = jnp.asarray([[True, True], [True, True], [True, False]])
    advantages = jnp.asarray([0.5, -1.0, 2.0])
    weights = jnp.asarray([1.0, 1.0, 0.0])  # the third left out

    def loss(logprobs, advantages):
        token_weights = policy_gradient_weights(advantages, weights, mask)
        return jnp.sum(token_weights * logprobs)

    value, (d_logprobs, d_advantages) = jax.value_and_grad(loss, argnums=(0, 1))(
        logprobs, advantages
    )

    # -(0.5 * log pi(y1) + -1.0 * log pi(y2)), log pi(y) the sum of its tokens'
    assert float(value) == pytest.approx(-(0.5 * -1.0 + -1.0 * -2.0))
    np.testing.assert_allclose(d_logprobs, [[-0.5, -0.5], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(d_advantages, 0.0)  # a constant of the gradient


def test_the_kl_estimates() -> None:
    logprobs = np.log([0.5, 0.25, 0.1])
    reference = np.log([0.25, 0.25, 0.2])

    k1, k3 = kl_estimates(logprobs, reference)

    np.testing.assert_allclose(k1, [math.log(2), 0.0, -math.log(2)])
    np.testing.assert_allclose(
        k3, [(0.5 - 1) + math.log(2), 0.0, (2 - 1) - math.log(2)]
    )


def test_beta_moves_toward_the_target_kl_by_at_most_two_percent() -> None:
    assert adapt_beta(0.1, kl=2.0, target_kl=1.0) == pytest.approx(0.102)
    assert adapt_beta(0.1, kl=1.1, target_kl=1.0) == pytest.approx(0.101)
    assert adapt_beta(0.1, kl=1.0, target_kl=1.0) == pytest.approx(0.1)
    assert adapt_beta(0.1, kl=-3.0, target_kl=1.0) == pytest.approx(0.098)
