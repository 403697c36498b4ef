"""Sampling settings: what a caller asks for of a generation.

`SamplingParams` travels as JSON between the web app, the client and the worker, so
this module imports no JAX: the web app's processes never load it
(`model_service.next_tokens` draws the tokens).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# Top-k and top-p choose among at most this many most likely tokens: sorting a 262k
# vocabulary every step would cost more than the model's own step.
MAX_TOP_K = 256


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
