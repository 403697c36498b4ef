"""Training data: JSONL files read and checked whole, split by prompt, batched.

Every bad line of a file is reported, with its number, in one `DataError` before
anything trains. Examples are held out by prompt (all examples of one prompt on the
same side), never one by one, so held-out metrics measure prompts the model never saw.
The order of training examples is a pure function of the seed and the position in the
data, which is what a checkpoint stores to resume exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from os import PathLike
from typing import Any, TypeVar

import numpy as np

from model_service.chat_format import turns_from_messages
from training.config import TrainConfig

Example = TypeVar("Example")
Turns = tuple[tuple[tuple[str, str], ...], ...]
# Errors listed in one DataError before the rest are only counted.
MAX_REPORTED = 50
# The shortest padded length of a batch (see `bucket_length`).
MIN_BUCKET = 16


class DataError(ValueError):
    """A data file with bad lines; the message lists them (`path:line: why`)."""


def read_jsonl(
    path: str | PathLike[str], parse: Callable[[Any], Example]
) -> list[Example]:
    """Parses every line of a JSONL file, collecting all errors before raising.

    Args:
        path: the file; blank lines are skipped.
        parse: turns one decoded JSON value into an example; raises ValueError (or
            KeyError / TypeError) with a message for a bad one.

    Returns:
        The examples, in file order.

    Raises:
        DataError: the file has bad lines (all listed) or no examples.
    """
    examples, errors = [], []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                examples.append(parse(json.loads(line)))
            except json.JSONDecodeError as error:
                errors.append(f"{path}:{number}: not JSON ({error.msg})")
            except (ValueError, KeyError, TypeError) as error:
                errors.append(f"{path}:{number}: {_reason(error)}")
    if errors:
        listed = errors[:MAX_REPORTED]
        if len(errors) > MAX_REPORTED:
            listed.append(f"... and {len(errors) - MAX_REPORTED} more bad lines")
        raise DataError(f"{len(errors)} bad line(s):\n" + "\n".join(listed))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing key {error.args[0]!r}"
    return str(error)


# --- conversations ------------------------------------------------------------------


def as_turns(value: Any, what: str) -> list[dict[str, str]]:
    """A string (one user turn's text) or a list of chat messages, as Gemma turns."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return turns_from_messages(value)
    raise ValueError(f"{what} must be a string or a list of messages")


def answer_turns(value: Any, what: str) -> list[dict[str, str]]:
    """An answer: a string, or a list of assistant messages, as model turns."""
    if isinstance(value, str):
        return [{"role": "model", "content": value}]
    turns = as_turns(value, what)
    if not turns or any(turn["role"] != "model" for turn in turns):
        raise ValueError(f"{what} must be assistant messages")
    return turns


def freeze(turns: Sequence[Mapping[str, str]]) -> Turns:
    """Turns as a hashable, comparable value."""
    return tuple(tuple(sorted(turn.items())) for turn in turns)


def thaw(turns: Turns) -> list[dict[str, str]]:
    """The inverse of `freeze`."""
    return [dict(turn) for turn in turns]


# --- splitting and ordering ---------------------------------------------------------


def load_examples(
    config: TrainConfig,
    parse: Callable[[Any], Example],
    prompt_of: Callable[[Example], Hashable],
) -> tuple[list[Example], list[Example]]:
    """A run's (train, held-out) examples: `eval_data` when given, else the training
    file split by prompt.

    Raises:
        DataError: bad lines in either file (all of them listed), or too few prompts.
    """
    train = read_jsonl(config.train_data, parse)
    if config.eval_data is not None:
        return train, read_jsonl(config.eval_data, parse)
    return split_by_prompt(train, prompt_of, config.eval_fraction, config.seed)


def split_by_prompt(
    examples: Sequence[Example],
    prompt_of: Callable[[Example], Hashable],
    fraction: float,
    seed: int,
) -> tuple[list[Example], list[Example]]:
    """Splits examples into (train, held-out) by prompt.

    The prompts are put in an order fixed by the seed, and the first
    `ceil(fraction * prompts)` of them (at least one, and never all) are held out
    with every example that has them.

    Args:
        examples: the examples.
        prompt_of: an example's prompt (anything hashable with a stable `repr`).
        fraction: share of prompts held out.
        seed: fixes the order.

    Returns:
        (train, held-out), each in the original order.

    Raises:
        DataError: fewer than two distinct prompts.
    """
    prompts = sorted({prompt_of(e) for e in examples}, key=lambda p: _rank(p, seed))
    if len(prompts) < 2:
        raise DataError("holding out prompts needs at least two distinct prompts")
    count = min(max(1, math.ceil(fraction * len(prompts))), len(prompts) - 1)
    held_out = set(prompts[:count])
    train = [e for e in examples if prompt_of(e) not in held_out]
    return train, [e for e in examples if prompt_of(e) in held_out]


def _rank(prompt: Hashable, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{prompt!r}".encode()).digest()


def example_order(count: int, seed: int, start: int, size: int) -> np.ndarray:
    """Indices of the examples at data positions [start, start + size).

    Each pass over the data (epoch) is a permutation fixed by (seed, epoch), so the
    examples that follow a position depend on nothing but the position.

    Args:
        count: examples in the data.
        seed: the run's seed.
        start: data position of the first one (examples consumed so far).
        size: how many.

    Returns:
        int64 [size] indices into the data.
    """
    positions = np.arange(start, start + size)
    epochs = positions // count
    order = np.empty(size, np.int64)
    for epoch in np.unique(epochs):
        permutation = np.random.default_rng([seed, int(epoch)]).permutation(count)
        where = epochs == epoch
        order[where] = permutation[positions[where] % count]
    return order


# --- batching -----------------------------------------------------------------------


def bucket_length(longest: int, max_length: int) -> int:
    """The padded length of a batch, at most max_length: the least of 16, 24, 32, 48,
    64, 96, ... (powers of two and one and a half times them) that holds the longest
    row. Few lengths, so few compilations; at most a third of a batch is padding."""
    length = MIN_BUCKET
    while length < longest:
        length = length * 3 // 2 if length & (length - 1) == 0 else length * 4 // 3
    return min(length, max_length)


def pad(sequences: Sequence[Sequence[int]], length: int, rows: int) -> np.ndarray:
    """Sequences of different lengths as an int32 [rows, length] array, zero-padded
    (rows past the sequences are all zeros)."""
    out = np.zeros((rows, length), np.int32)
    for i, sequence in enumerate(sequences):
        out[i, : len(sequence)] = sequence
    return out


def positions_for(lengths: Sequence[int], length: int) -> np.ndarray:
    """int32 [rows, length]: 0, 1, ... for each row's tokens, -1 on its padding."""
    positions = np.tile(np.arange(length, dtype=np.int32), (len(lengths), 1))
    positions[positions >= np.asarray(lengths)[:, None]] = -1
    return positions
