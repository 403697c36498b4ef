"""Continuous batching: many requests share one decode state, joining and leaving it at
step boundaries.

A new request is prefilled on its own (a one-row cache) and its row is copied into a
free slot of the running batch; then every `step` decodes one token for all rows at
once, each row with its own position, settings and key. A finished, cancelled or
failed request frees its slot for the next one. The batch holds one row for one
request, two for two and `max_batch` rows otherwise (`Sampler.batch_sizes`): a step
costs about what its rows cost, busy or free. The engine knows nothing of Redis: the
worker (`model_service.worker`) feeds it and publishes what it returns.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from model_service.chat_format import format_conversation
from model_service.memory import release_freed_memory
from model_service.sampler import (
    PREFILL_PASS_COST,
    Generation,
    Piece,
    Sampler,
    serving_cache_dtype,
)
from model_service.sampling import SamplingParams
from model_service.transformer import stack_layers

log = logging.getLogger("model_service.engine")


@dataclasses.dataclass
class Update:
    """What one request got from an engine call.

    `text`, `token_ids`, `logprobs` are new since the last update; when the request
    ended (`finish_reason` or `error` set) `full_text`, `all_token_ids` and
    `all_logprobs` hold the whole answer.
    """

    request_id: str
    text: str = ""
    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    full_text: str = ""
    all_token_ids: list[int] = dataclasses.field(default_factory=list)
    all_logprobs: list[float] = dataclasses.field(default_factory=list)
    prompt_tokens: int = 0


class Engine:
    """Runs the requests of one model in one continuous batch.

    Args:
        model: a `LoadedModel` (config, params, tokenizer), its weights as they
            are to be served (on a CPU int8: `load_model(name, quantize="int8")`).
        max_batch: rows decoded together.
        max_length: positions per row (prompt and answer).
    """

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int = 8,
        max_length: int | None = None,
    ) -> None:
        self.tokenizer = model.tokenizer
        # Scanned over its layers: each compiled program holds a block per run of the
        # attention pattern instead of every layer (`stack_layers`).
        self.sampler = Sampler(
            model.config,
            stack_layers(model.params, model.config),
            max_batch=max_batch,
            max_length=max_length,
            cache_dtype=serving_cache_dtype(),
        )
        self.max_batch = max_batch
        self.state = self.sampler.init_state(self.sampler.batch_sizes[0])
        self.slots: dict[str, int] = {}
        self.generations: dict[str, Generation] = {}

    def warm_up(self) -> None:
        """Compiles start, step and resize for every batch size, then every prefill
        pass, before any request. What loading the weights and each part's
        compilations freed goes back to the operating system before the next part,
        which then compiles on a lower base (`release_freed_memory`).

        The batch of `max_batch` rows comes first: its step is the largest program,
        and compiling a program takes memory for a while, which on top of what the
        other programs hold once compiled would set the worker's peak.
        """
        release_freed_memory()
        warm_up = SamplingParams(max_new_tokens=2)
        bos = self.tokenizer.bos_id
        for i in range(self.sampler.batch_sizes[-1]):  # grows the batch to its largest
            self.add(f"warm-up-row-{i}", [bos], warm_up)
        while self.active:  # and shrinks it back
            self.step()
        release_freed_memory()
        for size in PREFILL_PASS_COST:  # a prompt of each pass size, one at a time
            if size < self.sampler.max_length:
                self.add(f"warm-up-{size}", [bos] * size, warm_up)
                while self.active:
                    self.step()
        release_freed_memory()

    @property
    def active(self) -> list[str]:
        return list(self.slots)

    @property
    def free_slots(self) -> int:
        return self.max_batch - len(self.slots)

    def prompt_ids(self, payload: dict[str, Any]) -> list[int]:
        """The prompt of a request payload: ids, chat messages or plain text."""
        if "prompt_ids" in payload:
            return list(payload["prompt_ids"])
        if "messages" in payload:
            return format_conversation(self.tokenizer, payload["messages"])
        return self.tokenizer.encode(payload["text"], add_bos=True)

    def add(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams
    ) -> Update:
        """Prefills a request into a free row and samples its first token.

        Raises:
            ValueError: the prompt or settings are not acceptable (nothing changed).
            RuntimeError: no free row.
        """
        if not self.free_slots:
            raise RuntimeError("no free row in the batch")
        params.validate()
        prefilled = self.sampler.prefill(prompt_ids)
        self._fit(len(self.slots) + 1)
        slot = min(set(range(self.rows)) - set(self.slots.values()))
        generation = Generation(
            self.tokenizer, params, len(prompt_ids), self.sampler.max_length
        )
        self.state, token, logprob = self.sampler.start(
            self.state, slot, prefilled, params
        )
        self.slots[request_id] = slot
        self.generations[request_id] = generation
        return self._update(request_id, generation.accept(token, logprob))

    def step(self) -> list[Update]:
        """Decodes one token for every active request."""
        self.state, tokens, logprobs = self.sampler.step(self.state)
        updates = []
        for request_id, slot in list(self.slots.items()):
            try:
                piece = self.generations[request_id].accept(
                    tokens[slot], logprobs[slot]
                )
                updates.append(self._update(request_id, piece))
            except Exception as exc:  # e.g. a token the tokenizer cannot show
                log.exception("request %s failed after a step", request_id)
                self.drop(request_id)
                updates.append(Update(request_id, error=f"{type(exc).__name__}: {exc}"))
        return updates

    def cancel(self, request_id: str) -> Update:
        """Ends a running request now, keeping its partial answer."""
        return self._update(request_id, self.generations[request_id].cancel())

    def drop(self, request_id: str) -> None:
        """Frees a request's row without an answer (it failed or the worker stops)."""
        self.state = self.sampler.free(self.state, self.slots.pop(request_id))
        self.generations.pop(request_id)
        self._fit(len(self.slots))

    @property
    def rows(self) -> int:
        """Rows of the running batch, free ones included."""
        return self.state.positions.shape[0]

    def _fit(self, requests: int) -> None:
        """Moves the requests into the smallest batch size that holds `requests`."""
        rows = min(size for size in self.sampler.batch_sizes if size >= requests)
        if rows == self.rows:
            return
        names = list(self.slots)
        self.state = self.sampler.resize(
            self.state, [self.slots[name] for name in names], rows
        )
        self.slots = {name: slot for slot, name in enumerate(names)}

    def _update(self, request_id: str, piece: Piece) -> Update:
        generation = self.generations[request_id]
        update = Update(
            request_id,
            text=piece.text,
            token_ids=piece.token_ids,
            logprobs=piece.logprobs,
            finish_reason=piece.finish_reason,
            prompt_tokens=generation.prompt_tokens,
        )
        if piece.finish_reason:
            self.drop(request_id)
            update.full_text = generation.text
            update.all_token_ids = generation.token_ids
            update.all_logprobs = generation.logprobs
        return update
