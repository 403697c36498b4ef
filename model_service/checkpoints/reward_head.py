"""A reward model's scalar head, saved beside its Gemma backbone.

A reward model is a checkpoint directory that `flax_params.save` wrote (so
`registry.load_model(path)` loads its backbone like any model) plus `reward_head.json`:

    {"weight": [d_model floats], "reward_mean": float, "reward_std": float}

The reward of a sequence is `hidden[last] . weight`, with `hidden` the backbone's
final-normed hidden states and `last` the index of the answer's last token
(`<end_of_turn>`); `reward_mean` and `reward_std` are those of its rewards on held-out
answers at the end of training, for normalizing later. (The head has no bias: the
Bradley-Terry loss depends on reward differences only, so it could not learn one.)
"""

from __future__ import annotations

import dataclasses
import json
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from model_service.checkpoints import CheckpointError, flax_params
from model_service.config import TransformerConfig

HEAD_FILE = "reward_head.json"


@dataclasses.dataclass(frozen=True)
class RewardHead:
    """The scalar head of a reward model.

    Attributes:
        weight: float32 [d_model].
        reward_mean: mean reward on held-out answers.
        reward_std: standard deviation of those rewards.
    """

    weight: np.ndarray
    reward_mean: float
    reward_std: float

    def normalize(self, reward: Any) -> Any:
        """(reward - reward_mean) / reward_std, for numbers or arrays."""
        return (reward - self.reward_mean) / max(self.reward_std, 1e-6)


def save(
    directory: str | PathLike[str],
    params: dict[str, Any],
    config: TransformerConfig,
    head: RewardHead,
) -> None:
    """Writes a reward model: the backbone (`flax_params.save`) and its head.

    Args:
        directory: a new directory.
        params: the backbone's parameters.
        config: the backbone's config.
        head: the head; its weight must have `config.embed_dim` entries.
    """
    weight = np.asarray(head.weight, np.float32)
    if weight.shape != (config.embed_dim,):
        raise CheckpointError(
            f"reward head weight: expected shape ({config.embed_dim},), "
            f"found {weight.shape}"
        )
    flax_params.save(directory, params, config)
    fields = {
        # float32 -> Python float -> JSON is exact both ways.
        "weight": [float(w) for w in weight],
        "reward_mean": float(head.reward_mean),
        "reward_std": float(head.reward_std),
    }
    (Path(directory) / HEAD_FILE).write_text(json.dumps(fields))


def is_reward_model(directory: str | PathLike[str]) -> bool:
    """Whether a checkpoint directory holds a reward head."""
    return (Path(directory) / HEAD_FILE).is_file()


def load(directory: str | PathLike[str]) -> RewardHead:
    """Reads the head of a reward model saved by `save`.

    Raises:
        CheckpointError: no head file, or a field missing or of the wrong kind.
    """
    path = Path(directory) / HEAD_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {HEAD_FILE}; not a reward model")
    try:
        fields = json.loads(path.read_text())
        return RewardHead(
            weight=np.asarray(fields["weight"], np.float32),
            reward_mean=float(fields["reward_mean"]),
            reward_std=float(fields["reward_std"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: bad reward head ({error!r})") from None
