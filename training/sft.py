"""Supervised fine-tuning (SFT): next-token loss on the model's turns only.

Conversations are laid out in Gemma's chat format in token ids
(`model_service.chat_format.format_training_example`); the loss is the mean negative
log-likelihood of the tokens the model wrote (its turns' text and `<end_of_turn>`),
over every such token of a step's batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from model_service.chat_format import format_training_example
from model_service.checkpoints import flax_params
from model_service.config import TransformerConfig
from model_service.logprobs import sequence_logprob_sum
from model_service.registry import load_model, load_tokenizer
from model_service.tokenizer import Tokenizer
from training import loop
from training.config import SFTConfig
from training.data import (
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


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """One conversation, encoded.

    Attributes:
        prompt: the turns before the first model turn (the held-out split's key).
        tokens: input ids (all but the last).
        targets: the next id after each input.
        mask: which targets the model wrote.
    """

    prompt: Turns
    tokens: np.ndarray
    targets: np.ndarray
    mask: np.ndarray


def conversation_turns(record: Any) -> list[dict[str, str]]:
    """A JSONL record's turns: `{"messages": [...]}` or `{"prompt", "completion"}`.

    Raises:
        ValueError: neither form, or no model turn to learn from.
    """
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in record:
        turns = as_turns(record["messages"], "messages")
    elif {"prompt", "completion"} <= set(record):
        turns = as_turns(record["prompt"], "prompt")
        turns += answer_turns(record["completion"], "completion")
    else:
        raise ValueError("expected 'messages', or 'prompt' and 'completion'")
    if not any(turn["role"] == "model" for turn in turns):
        raise ValueError("no assistant turn to learn from")
    return turns


def encode(tokenizer: Tokenizer, max_length: int, record: Any) -> SFTExample:
    """A JSONL record as an `SFTExample` of at most `max_length` ids (cut at the end).

    Raises:
        ValueError: a malformed record or conversation.
    """
    turns = conversation_turns(record)
    ids, mask = format_training_example(tokenizer, turns)
    ids, mask = ids[:max_length], mask[:max_length]
    first_model = next(i for i, turn in enumerate(turns) if turn["role"] == "model")
    return SFTExample(
        prompt=freeze(turns[:first_model]),
        tokens=np.asarray(ids[:-1], np.int32),
        targets=np.asarray(ids[1:], np.int32),
        mask=np.asarray(mask[1:], bool),
    )


def collate(
    examples: Sequence[SFTExample], rows: int, max_length: int
) -> dict[str, np.ndarray]:
    """A batch [rows, length]; rows past the examples are all padding."""
    lengths = [len(e.tokens) for e in examples] + [0] * (rows - len(examples))
    length = bucket_length(max(lengths), max_length)
    return {
        "tokens": pad([e.tokens for e in examples], length, rows=rows),
        "positions": positions_for(lengths, length),
        "targets": pad([e.targets for e in examples], length, rows=rows),
        "mask": pad([e.mask for e in examples], length, rows=rows).astype(bool),
    }


@dataclasses.dataclass(frozen=True)
class SFTObjective:
    """The next-token loss on masked targets.

    Attributes:
        model_config: the model's config.
        dtype: activations' dtype.
    """

    model_config: TransformerConfig
    dtype: Any = jnp.float32

    def loss(
        self, params: Params, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, Sums]:
        """(summed negative log-likelihood, its sums); `rng` is unused."""
        del rng
        weight = batch["mask"].astype(jnp.float32)
        loss = -sequence_logprob_sum(
            self.model_config,
            params,
            batch["tokens"],
            batch["positions"],
            batch["targets"],
            weight,
            dtype=self.dtype,
        )
        return loss, {"loss": loss, "weight": batch["mask"].sum(dtype=jnp.float32)}

    def summarize(self, sums: Sums) -> Metrics:
        """`loss` (mean per model token), `perplexity`, `target_tokens`."""
        loss = sums["loss"] / jnp.maximum(sums["weight"], 1.0)
        return {
            "loss": loss,
            "perplexity": jnp.exp(loss),
            "target_tokens": sums["weight"],
        }


def read_data(config: SFTConfig) -> tuple[list[SFTExample], list[SFTExample]]:
    """The encoded (train, held-out) conversations.

    Raises:
        DataError: bad data (every bad line reported).
    """
    return load_examples(
        config,
        functools.partial(encode, load_tokenizer(config.model), config.max_length),
        lambda example: example.prompt,
    )


def prepare(config: SFTConfig) -> loop.Job:
    """Reads and encodes the data (every bad line reported), then loads the model.

    Raises:
        DataError: bad data.
    """
    train, held_out = read_data(config)
    model = load_model(config.model)

    def export(directory: Path, params: Params, metrics: dict[str, float]) -> None:
        del metrics
        flax_params.save(directory, params, model.config)

    return loop.Job(
        objective=SFTObjective(model.config, loop.activation_dtype(config)),
        params=model.params,
        train=train,
        held_out=held_out,
        collate=functools.partial(collate, max_length=config.max_length),
        export=export,
    )
