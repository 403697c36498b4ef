"""The Bradley-Terry reward model: a Gemma backbone with a scalar head.

The reward of an answer is the head applied to the backbone's final hidden state at
the answer's last token (its `<end_of_turn>`, or the last word's token of an answer
marked `chosen_truncated` / `rejected_truncated`: cut at its token budget, as the
policy's samples are), after the prompt in Gemma's chat format.
For a pair with label p (1 = chosen is better, 0.5 = a tie) and margin m, with
d = r(x, y_chosen) - r(x, y_rejected) - m, the loss is

    -(p log sigmoid(d) + (1 - p) log sigmoid(-d))

which is -log sigmoid(r+ - r- - m) for p = 1, plus, optionally, the reward-centering
term c (r+ + r-)^2 (TRL's `center_rewards_coefficient`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from model_service.checkpoints import reward_head
from model_service.config import TransformerConfig
from model_service.logprobs import hidden_states
from model_service.registry import load_model, load_tokenizer
from model_service.reward import conversation_ids
from model_service.tokenizer import Tokenizer
from training import loop
from training.config import RewardModelConfig
from training.data import (
    DataError,
    Turns,
    answer_turns,
    as_turns,
    bucket_length,
    freeze,
    load_examples,
    pad,
    positions_for,
)
from training.trainer import Batch, Metrics, Params, Sums

TIE = 0.5
SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One rated pair, encoded.

    Attributes:
        prompt: the prompt's turns (the held-out split's key).
        chosen: ids of the prompt and the chosen answer, ending at its last token.
        rejected: the same for the rejected answer.
        margin: subtracted from the reward difference (0 when not given).
        label: probability that `chosen` is the better answer (1, or 0.5 for a tie).
    """

    prompt: Turns
    chosen: np.ndarray
    rejected: np.ndarray
    margin: float
    label: float


def answer_ids(
    tokenizer: Tokenizer,
    prompt: list[dict[str, str]],
    answer: list[dict[str, str]],
    max_length: int,
    truncated: bool = False,
) -> np.ndarray:
    """A prompt and answer in the chat format, cut just after the answer's last token
    (its `<end_of_turn>`, or for an answer cut at its token budget the token before:
    the policy's sampled answer has none either, and the reward is read where it
    ends); when longer than `max_length`, the oldest ids after BOS go, so the
    answer's end stays."""
    ids = conversation_ids(tokenizer, prompt + answer, truncated)
    if len(ids) > max_length:
        ids = ids[:1] + ids[len(ids) - max_length + 1 :]
    return np.asarray(ids, np.int32)


def parse_pair(tokenizer: Tokenizer, max_length: int, record: Any) -> PreferencePair:
    """A JSONL record in TRL's preference form (strings or lists of messages), with
    optional `margin`, `label` and `chosen_truncated` / `rejected_truncated`.

    Raises:
        ValueError: a missing or malformed field.
    """
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    prompt = as_turns(record["prompt"], "prompt")
    margin, label = record.get("margin", 0.0), record.get("label", 1.0)
    if not _is_number(margin):
        raise ValueError("margin must be a number")
    if not _is_number(label) or not 0 <= label <= 1:
        raise ValueError("label must be a number from 0 to 1 (1: chosen is better)")
    truncated = {side: record.get(f"{side}_truncated", False) for side in SIDES}
    if not all(isinstance(value, bool) for value in truncated.values()):
        raise ValueError(
            "chosen_truncated and rejected_truncated must be true or false"
        )

    def encode(side: str) -> np.ndarray:
        turns = answer_turns(record[side], side)
        return answer_ids(tokenizer, prompt, turns, max_length, truncated[side])

    return PreferencePair(
        prompt=freeze(prompt),
        chosen=encode("chosen"),
        rejected=encode("rejected"),
        margin=float(margin),
        label=float(label),
    )


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def collate(
    pairs: Sequence[PreferencePair], rows: int, max_length: int
) -> dict[str, np.ndarray]:
    """A batch: `tokens`, `positions` [rows, 2, length] (chosen, rejected), `last`
    [rows, 2], `margin`, `label`, `weight` [rows] (0 on padding rows)."""
    sequences = [s for pair in pairs for s in (pair.chosen, pair.rejected)]
    lengths = [len(s) for s in sequences] + [1] * (2 * rows - len(sequences))
    length = bucket_length(max(lengths), max_length)
    padding = rows - len(pairs)
    return {
        "tokens": pad(sequences, length, 2 * rows).reshape(rows, 2, length),
        "positions": positions_for(lengths, length).reshape(rows, 2, length),
        "last": (np.asarray(lengths, np.int32) - 1).reshape(rows, 2),
        "margin": np.asarray([p.margin for p in pairs] + [0.0] * padding, np.float32),
        "label": np.asarray([p.label for p in pairs] + [1.0] * padding, np.float32),
        "weight": np.asarray([1.0] * len(pairs) + [0.0] * padding, np.float32),
    }


def pair_losses(
    chosen: jax.Array,  # [B]
    rejected: jax.Array,  # [B]
    margin: jax.Array,  # [B]
    label: jax.Array,  # [B]
    *,
    center_rewards_coefficient: float = 0.0,
) -> jax.Array:  # [B]
    """Each pair's Bradley-Terry loss (see the module's docstring) from its rewards."""
    diff = chosen - rejected - margin
    nll = -(label * jax.nn.log_sigmoid(diff) + (1 - label) * jax.nn.log_sigmoid(-diff))
    return nll + center_rewards_coefficient * (chosen + rejected) ** 2


def init_head(key: jax.Array, embed_dim: int) -> dict[str, jax.Array]:
    """The scalar head, weight ~ N(0, 1/embed_dim); no bias, which the loss, a
    function of reward differences, could not learn."""
    weight = jax.random.normal(key, (embed_dim,), jnp.float32) / math.sqrt(embed_dim)
    return {"weight": weight}


@dataclasses.dataclass(frozen=True)
class RewardObjective:
    """The Bradley-Terry loss on pairs; parameters are {"backbone", "head"}.

    Attributes:
        model_config: the backbone's config.
        center_rewards_coefficient: weight of the reward-centering term.
        dtype: activations' dtype.
    """

    model_config: TransformerConfig
    center_rewards_coefficient: float = 0.0
    dtype: Any = jnp.float32

    def rewards(
        self,
        params: Params,
        tokens: jax.Array,  # [..., length]
        positions: jax.Array,  # [..., length]
        last: jax.Array,  # [...]
    ) -> jax.Array:  # [...]
        """Rewards [...] of sequences [..., length], read at index `last` [...]."""
        length = tokens.shape[-1]
        hidden = hidden_states(
            self.model_config,
            params["backbone"],
            tokens.reshape(-1, length),
            positions.reshape(-1, length),
            dtype=self.dtype,
        )
        at_last = jnp.take_along_axis(hidden, last.reshape(-1, 1, 1), axis=1)[:, 0]
        reward = at_last.astype(jnp.float32) @ params["head"]["weight"]
        return reward.reshape(last.shape)

    def loss(
        self, params: Params, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, Sums]:
        """(summed loss over the pairs, its sums); `rng` is unused."""
        del rng
        rewards = self.rewards(
            params, batch["tokens"], batch["positions"], batch["last"]
        )
        chosen, rejected = rewards[:, 0], rewards[:, 1]
        label, weight = batch["label"], batch["weight"]
        losses = pair_losses(
            chosen,
            rejected,
            batch["margin"],
            label,
            center_rewards_coefficient=self.center_rewards_coefficient,
        )
        loss = jnp.sum(weight * losses)
        decided = weight * (label != TIE)
        right = (chosen > rejected) == (label > TIE)
        return loss, {
            "loss": loss,
            "weight": weight.sum(),
            "decided": decided.sum(),
            "correct": jnp.sum(decided * right),
            "margin": jnp.sum(weight * (chosen - rejected)),
            "reward": jnp.sum(weight * (chosen + rejected)),
            "reward_squared": jnp.sum(weight * (chosen**2 + rejected**2)),
        }

    def summarize(self, sums: Sums) -> Metrics:
        """`loss`, `accuracy` (pairs not tied whose order the rewards get right),
        `reward_margin` (mean r+ - r-), `reward_mean` and `reward_std` (over all
        answers)."""
        pairs = jnp.maximum(sums["weight"], 1.0)
        mean = sums["reward"] / (2 * pairs)
        variance = sums["reward_squared"] / (2 * pairs) - mean**2
        return {
            "loss": sums["loss"] / pairs,
            "accuracy": sums["correct"] / jnp.maximum(sums["decided"], 1.0),
            "reward_margin": sums["margin"] / pairs,
            "reward_mean": mean,
            "reward_std": jnp.sqrt(jnp.maximum(variance, 0.0)),
        }


def read_data(
    config: RewardModelConfig,
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The encoded (train, held-out) pairs, ties dropped or kept as the config says.

    Raises:
        DataError: bad data (every bad line reported), or nothing left once ties
            are dropped.
    """
    train, held_out = load_examples(
        config,
        functools.partial(parse_pair, load_tokenizer(config.model), config.max_length),
        lambda pair: pair.prompt,
    )
    if config.ties == "drop":
        train = [pair for pair in train if pair.label != TIE]
        held_out = [pair for pair in held_out if pair.label != TIE]
        if not train or not held_out:
            raise DataError(
                "no training or no held-out pairs are left once ties are dropped "
                '(set "ties": "soft" to train on them)'
            )
    return train, held_out


def prepare(config: RewardModelConfig) -> loop.Job:
    """Reads and encodes the pairs (`read_data`), then loads the backbone and makes
    the head.

    Raises:
        DataError: bad data.
    """
    train, held_out = read_data(config)
    model = load_model(config.model)
    head = init_head(jax.random.key(config.seed), model.config.embed_dim)

    def export(directory: Path, params: Params, metrics: dict[str, float]) -> None:
        head = reward_head.RewardHead(
            weight=np.asarray(params["head"]["weight"]),
            reward_mean=metrics["reward_mean"],
            reward_std=metrics["reward_std"],
        )
        reward_head.save(directory, params["backbone"], model.config, head)

    objective = RewardObjective(
        model.config, config.center_rewards_coefficient, loop.activation_dtype(config)
    )
    return loop.Job(
        objective=objective,
        params={"backbone": model.params, "head": head},
        train=train,
        held_out=held_out,
        collate=functools.partial(collate, max_length=config.max_length),
        export=export,
    )
