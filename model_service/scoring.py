"""Teacher-forced scoring: what the model predicts after each prefix of a text."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from model_service.cache import init_cache
from model_service.config import TransformerConfig
from model_service.registry import LoadedModel
from model_service.sampler import logit_stats
from model_service.transformer import Transformer

CHUNK = 256


@dataclasses.dataclass(frozen=True)
class Score:
    """Teacher-forced predictions over `token_ids`.

    Attributes:
        token_ids: the scored ids (starting with BOS when the text was encoded so).
        top1: top1[i] is the argmax prediction after token_ids[: i + 1]; one per token,
            the last one predicting past the end.
        logprobs: logprobs[i] is log p(token_ids[i + 1] | token_ids[: i + 1]); one fewer
            than the tokens.
    """

    token_ids: list[int]
    top1: list[int]
    logprobs: list[float]

    @property
    def perplexity(self) -> float:
        """exp of the mean negative log-likelihood of the tokens after the first."""
        if not self.logprobs:
            return math.nan
        return math.exp(-sum(self.logprobs) / len(self.logprobs))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that `python -m model_service score --json` prints."""
        return {
            "token_ids": self.token_ids,
            "top1": self.top1,
            "logprobs": self.logprobs,
            # JSON has no NaN: a single token has no perplexity.
            "perplexity": self.perplexity if self.logprobs else None,
        }


def score(model: LoadedModel, token_ids: Sequence[int]) -> Score:
    """Scores a sequence with the model, teacher-forced.

    The sequence runs through the KV cache in chunks of `CHUNK` tokens, so memory holds
    logits for one chunk at a time (a whole text's would be tokens x 262,144 floats).

    Args:
        model: the loaded model.
        token_ids: at least one id; usually starting with BOS.

    Returns:
        The predictions and log-probabilities (float32 computations).
    """
    ids = [int(i) for i in token_ids]
    if not ids:
        raise ValueError("nothing to score: token_ids is empty")
    # Cache lengths are powers of two so texts of similar length share one compilation.
    length = CHUNK * 2 ** math.ceil(math.log2(math.ceil(len(ids) / CHUNK)))
    cache = init_cache(model.config, batch_size=1, length=length)
    padded = np.zeros(length + 1, np.int32)
    padded[: len(ids)] = ids
    top1, logprobs = [], []
    for start in range(0, len(ids), CHUNK):
        positions = np.arange(start, start + CHUNK)
        positions[positions >= len(ids)] = -1
        cache, chunk_top1, chunk_logprobs = _score_chunk(
            model.config,
            model.params,
            cache,
            padded[None, start : start + CHUNK],
            positions[None],
            padded[None, start + 1 : start + CHUNK + 1],
        )
        top1.extend(np.asarray(chunk_top1[0]).tolist())
        logprobs.extend(np.asarray(chunk_logprobs[0]).tolist())
    return Score(ids, top1[: len(ids)], logprobs[: len(ids) - 1])


@functools.partial(jax.jit, static_argnames="config")
def _score_chunk(
    config: TransformerConfig,
    params: dict[str, Any],
    cache: dict[str, Any],
    tokens: jax.Array,  # [1, CHUNK]
    positions: jax.Array,  # [1, CHUNK]
    targets: jax.Array,  # [1, CHUNK]: the token after each one
) -> tuple[dict[str, Any], jax.Array, jax.Array]:
    out = Transformer(config=config).apply(
        {"params": params}, tokens, positions, cache=cache
    )
    # One pass over each row's logits for its argmax and log-sum-exp (the C++ kernel
    # on a CPU): XLA's argmax and log-softmax read the chunk's 256 x 262,144 logits
    # several times over.
    logits = out.logits[0]
    top1, logsumexp = logit_stats(logits)
    picked = jnp.take_along_axis(logits, targets[0][:, None], axis=-1)[:, 0]
    return out.cache, top1[None], (picked - logsumexp)[None]
