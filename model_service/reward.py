"""Reward models at inference: a Gemma backbone and a scalar head read at the answer's
last token, as `training.reward_model` trains them.

    reward_model = RewardModel.load("var/runs/rm/model")
    raw = reward_model.rewards([reward_model.answer_ids(turns, "Blue.")])

The generation worker serves registered reward models with it (a request to score an
answer), and REINFORCE scores its samples with it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from model_service.chat_format import format_training_example
from model_service.checkpoints import reward_head
from model_service.config import TransformerConfig
from model_service.logprobs import hidden_states
from model_service.tokenizer import Tokenizer

MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class RewardModel:
    """A loaded reward model.

    Attributes:
        name: what it was loaded by.
        config: the backbone's config.
        params: the backbone's float32 parameters.
        tokenizer: its tokenizer.
        head: the scalar head and the reward statistics stored with it.
    """

    name: str
    config: TransformerConfig
    params: dict[str, Any]
    tokenizer: Tokenizer
    head: reward_head.RewardHead

    @classmethod
    def load(cls, path: str | PathLike[str]) -> RewardModel:
        """Loads a reward model saved by `reward_head.save`.

        Raises:
            CheckpointError: not a reward model, or a bad checkpoint.
        """
        from model_service.registry import load_model

        head = reward_head.load(path)
        model = load_model(path)
        return cls(str(path), model.config, model.params, model.tokenizer, head)

    def answer_ids(self, turns: Sequence[Mapping[str, str]], answer: str) -> list[int]:
        return answer_ids(self.tokenizer, turns, answer)

    def rewards(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Raw rewards [N] of whole sequences (each read at its last token).

        Sequences are padded to a power-of-two length, so that a few compiled
        programs serve every length.
        """
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError("score at least one non-empty sequence")
        longest = max(len(s) for s in sequences)
        length = max(MIN_BUCKET, 1 << (longest - 1).bit_length())
        tokens = np.zeros((len(sequences), length), np.int32)
        positions = np.full((len(sequences), length), -1, np.int32)
        for row, sequence in enumerate(sequences):
            tokens[row, : len(sequence)] = sequence
            positions[row, : len(sequence)] = np.arange(len(sequence))
        last = np.asarray([len(s) - 1 for s in sequences], np.int32)
        weight = jnp.asarray(self.head.weight, jnp.float32)
        return np.asarray(
            _rewards(self.config, self.params, tokens, positions, last, weight)
        )

    def normalized(self, rewards: np.ndarray) -> np.ndarray:
        """Rewards in units of the held-out rewards' spread, centred on their mean."""
        return self.head.normalize(rewards)


def answer_ids(
    tokenizer: Tokenizer, turns: Sequence[Mapping[str, str]], answer: str
) -> list[int]:
    """The prompt turns and an answer in the chat format, up to and with the answer's
    `<end_of_turn>`, where a reward model reads its reward."""
    return conversation_ids(tokenizer, [*turns, {"role": "model", "content": answer}])


def conversation_ids(
    tokenizer: Tokenizer, turns: Sequence[Mapping[str, str]], truncated: bool = False
) -> list[int]:
    """A conversation ending in the model's answer, in the chat format, up to and
    with the answer's `<end_of_turn>`; for an answer cut at its token budget
    (`truncated`), up to its last token before it, as a sampled answer that ran out
    of tokens ends."""
    ids, mask = format_training_example(tokenizer, turns)
    last = max(i for i, written in enumerate(mask) if written)
    return ids[: last if truncated else last + 1]


@functools.partial(jax.jit, static_argnames=("config",))
def _rewards(
    config: TransformerConfig,
    params: dict[str, Any],
    tokens: jax.Array,  # [N, T]
    positions: jax.Array,  # [N, T]
    last: jax.Array,  # [N]
    weight: jax.Array,  # [D]
) -> jax.Array:  # [N]
    hidden = hidden_states(config, params, tokens, positions)
    at_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    return at_last.astype(jnp.float32) @ weight
