"""Sampling settings and policies.

`SamplingParams` is what a caller asks for (it travels as JSON between the web app,
the client and the worker). A policy turns one row's logits into one token; policies
are small frozen dataclasses so they are hashable and can be static arguments of `jit`.
The batched engine does not use the policies one by one: it calls `sample_rows`, which
applies each row's own temperature / top-k / top-p as arrays, so one compiled step
serves a batch of requests with different settings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

# Top-k and top-p choose among at most this many most likely tokens: sorting a 262k
# vocabulary every step would cost more than the model's own step.
MAX_TOP_K = 256

# Masked logits: a large negative, not -inf, so softmax of a masked row stays finite.
_NEG = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Settings of one generation request.

    Args:
        temperature: 0 means greedy; otherwise logits are divided by it.
        top_k: keep only the k most likely tokens (None: all).
        top_p: keep the smallest set of tokens whose probability reaches p (None: all).
        seed: integer seed; the same seed and settings give the same text.
        max_new_tokens: hard limit on generated tokens.
        stop: strings that end the generation; the text before them is kept.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        self.validate()

    def validate(self) -> None:
        """Raises ValueError on a setting no request may carry."""
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not math.isfinite(self.temperature):
            raise ValueError("temperature must be finite")
        if self.top_k is not None and not (
            isinstance(self.top_k, int) and 1 <= self.top_k <= MAX_TOP_K
        ):
            raise ValueError(
                f"top_k must be an int in 1..{MAX_TOP_K}, got {self.top_k!r}"
            )
        if self.top_p is not None and not (
            isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1
        ):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(
                f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}"
            )
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown sampling settings: {sorted(unknown)}")
        return cls(**data)

    def policy(self) -> SamplingPolicy:
        """The single-row policy these settings describe."""
        if self.greedy:
            return Greedy()
        if self.top_k is not None:
            return TopK(temperature=self.temperature, k=self.top_k)
        if self.top_p is not None:
            return TopP(temperature=self.temperature, p=self.top_p)
        return Temperature(temperature=self.temperature)


class SamplingPolicy:
    """Picks next tokens from logits `[B, V]` with a key; returns int32 `[B]`."""

    def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Greedy(SamplingPolicy):
    def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
        del key
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Temperature(SamplingPolicy):
    temperature: float = 1.0

    def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, logits / self.temperature).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TopK(SamplingPolicy):
    temperature: float = 1.0
    k: int = 40

    def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
        values, indices = jax.lax.top_k(logits, self.k)
        choice = jax.random.categorical(key, values / self.temperature)
        return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(
            jnp.int32
        )


@dataclasses.dataclass(frozen=True)
class TopP(SamplingPolicy):
    temperature: float = 1.0
    p: float = 0.9

    def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
        batch = logits.shape[0]
        return sample_rows(
            logits,
            jax.random.split(key, batch),
            temperature=jnp.full((batch,), self.temperature, jnp.float32),
            top_k=jnp.zeros((batch,), jnp.int32),
            top_p=jnp.full((batch,), self.p, jnp.float32),
        )


def sample_rows(
    logits: jax.Array,  # [B, V] float32
    keys: jax.Array,  # [B] keys, one per row
    *,
    temperature: jax.Array,  # [B] float32; 0 = greedy
    top_k: jax.Array,  # [B] int32; 0 = no limit
    top_p: jax.Array,  # [B] float32; 1 = no limit
    max_top_k: int = 0,
) -> jax.Array:  # [B] int32
    """Samples each row with its own settings, in one traced computation.

    Top-p needs the sorted distribution; a full sort of a 262k vocabulary costs more
    than the rest of a decode step, so rows are first cut to the `max_top_k` largest
    logits when the caller allows it (0: no cut, exact top-p over the whole vocabulary).
    """
    vocab = logits.shape[-1]
    greedy_tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if max_top_k:
        values, indices = jax.lax.top_k(logits, min(max_top_k, vocab))
    else:
        indices = jnp.argsort(-logits, axis=-1)
        values = jnp.take_along_axis(logits, indices, axis=-1)
    width = values.shape[-1]
    safe_temperature = jnp.where(temperature > 0, temperature, 1.0)[:, None]
    scaled = values / safe_temperature
    rank = jnp.arange(width)[None, :]
    k = jnp.where(top_k > 0, top_k, width)[:, None]
    scaled = jnp.where(rank < k, scaled, _NEG)
    probs = jax.nn.softmax(scaled, axis=-1)
    # Keep a token when the mass before it is still below p: the top token always stays.
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    scaled = jnp.where(mass_before < top_p[:, None], scaled, _NEG)
    choice = jax.vmap(jax.random.categorical)(keys, scaled)
    sampled = jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0]
    return jnp.where(temperature > 0, sampled.astype(jnp.int32), greedy_tokens)
