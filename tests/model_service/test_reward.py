"""Reward models at inference (`model_service.reward`): the head read at the answer's
last token, whatever the padding and batch."""

import numpy as np
import pytest

from model_service.checkpoints import reward_head
from model_service.registry import load_model
from model_service.reward import RewardModel
from model_service.transformer import Transformer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tiny = load_model("tiny-random")
    head = reward_head.RewardHead(
        weight=np.random.default_rng(0).normal(size=tiny.config.embed_dim),
        reward_mean=0.5,
        reward_std=2.0,
    )
    path = tmp_path_factory.mktemp("rm") / "model"
    reward_head.save(path, tiny.params, tiny.config, head)
    return path, tiny, head


def by_hand(tiny, weight, ids) -> float:
    """One sequence alone, no padding: the hidden state at its last token · weight."""
    tokens = np.asarray([ids], np.int32)
    positions = np.arange(len(ids), dtype=np.int32)[None]
    out = Transformer(config=tiny.config).apply(
        {"params": tiny.params}, tokens, positions
    )
    return float(np.asarray(out.hidden)[0, -1] @ np.asarray(weight, np.float32))


def test_rewards_are_the_head_at_the_last_token_in_any_batch(saved):
    path, tiny, head = saved
    model = RewardModel.load(path)
    turns = [{"role": "user", "content": "Name a colour."}]
    short = model.answer_ids(turns, "Blue.")
    long = model.answer_ids(turns, "My favourite colour is a deep ocean blue.")
    assert short[-1] == model.tokenizer.end_of_turn_id

    together = model.rewards([short, long])
    alone = [model.rewards([ids])[0] for ids in (short, long)]

    expected = [by_hand(tiny, head.weight, ids) for ids in (short, long)]
    np.testing.assert_allclose(together, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(alone, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.normalized(together), (together - 0.5) / 2.0)


def test_a_model_without_a_head_is_refused(tmp_path):
    from model_service.checkpoints import CheckpointError, flax_params

    tiny = load_model("tiny-random")
    flax_params.save(tmp_path / "plain", tiny.params, tiny.config)
    with pytest.raises(CheckpointError, match="not a reward model"):
        RewardModel.load(tmp_path / "plain")
