"""Clients of the generation worker over Redis (protocol: `model_service.protocol`).

`GenerationClient` is synchronous (Celery tasks, scripts, training), and
`AsyncGenerationClient` serves the web app's consumers and async views; both submit,
follow, cancel and wait the same way.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio

from model_service import protocol
from model_service.protocol import decode_entries, is_last, orphan_error
from model_service.sampling import SamplingParams

# How long a reader blocks on the stream before it checks that a worker is still there
# (and, when asked, where its request stands in the queue).
POLL_MS = 1000


class GenerationError(Exception):
    """A request failed; `code` says how (`model_service.protocol.ERROR_CODES`)."""

    def __init__(self, message: str, code: str = protocol.INTERNAL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class WorkerUnavailable(GenerationError):
    """No live worker serves the model."""

    def __init__(self, message: str) -> None:
        super().__init__(message, protocol.NO_WORKER)


class Busy(GenerationError):
    """The model's queue is full; try again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "busy")


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """The finished answer, with everything needed to reproduce it."""

    request_id: str
    model: str
    params: SamplingParams
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    prompt_tokens: int

    @property
    def seed(self) -> int:
        return self.params.seed


def build_request(
    model: str,
    prompt: Sequence[int] | Sequence[dict[str, str]] | str,
    params: SamplingParams | None,
    request_id: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Checks what the caller passed and returns (request_id, payload).

    A caller may choose the id (a fresh uuid4 hex, as here) to store it before it
    submits: then whoever reads the stored id can already follow the request.
    """
    params = params or SamplingParams()
    params.validate()
    payload: dict[str, Any] = {"model": model, "params": params.to_dict()}
    if isinstance(prompt, str):
        payload["text"] = prompt
    elif prompt and all(isinstance(t, int) for t in prompt):
        payload["prompt_ids"] = list(prompt)
    elif prompt and all(isinstance(m, dict) for m in prompt):
        payload["messages"] = [
            {"role": m["role"], "content": m["content"]} for m in prompt
        ]
    else:
        raise ValueError("prompt must be token ids, chat messages or text, not empty")
    request_id = request_id or uuid.uuid4().hex
    payload["request_id"] = request_id
    payload["submitted"] = time.time()
    return request_id, payload


def queue_capacity(workers: dict[str, dict[str, Any]], model: str) -> int:
    """How many requests may wait for `model`: summed over the workers serving it."""
    serving = protocol.serving(workers, model)
    if not serving:
        raise WorkerUnavailable(f"no live generation worker serves model {model!r}")
    return sum(int(w.get("max_queue", 0)) for w in serving)


def error_from_event(event: dict[str, Any]) -> GenerationError:
    return GenerationError(event["message"], event.get("code", protocol.INTERNAL_ERROR))


def collect_result(
    request_id: str, events: Iterator[dict[str, Any]] | list[dict[str, Any]]
) -> GenerationResult:
    for event in events:
        if event["type"] == "error":
            raise error_from_event(event)
        if event["type"] == "done":
            return result_from_done(request_id, event)
    raise GenerationError("event stream ended without a result")


def result_from_done(request_id: str, event: dict[str, Any]) -> GenerationResult:
    return GenerationResult(
        request_id=request_id,
        model=event["model"],
        params=SamplingParams.from_dict(event["params"]),
        text=event["text"],
        token_ids=list(event["token_ids"]),
        logprobs=list(event["logprobs"]),
        finish_reason=event["finish_reason"],
        prompt_tokens=event["prompt_tokens"],
    )


def queued_event(ahead: int | None) -> dict[str, Any] | None:
    """`{"type": "queued", "ahead": n}` for a request with n requests before it in
    its model's queue; None once a worker has taken it."""
    return None if ahead is None else {"type": "queued", "ahead": ahead}


class GenerationClient:
    """Synchronous client (training, Celery tasks, scripts).

    Args:
        redis_url: the Redis the workers listen on.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self._submit = self.redis.register_script(protocol.SUBMIT_LUA)
        self._workers = self.redis.register_script(protocol.WORKERS_LUA)

    def alive_workers(self) -> dict[str, dict[str, Any]]:
        ids, values = self._workers(
            keys=[protocol.WORKERS_KEY], args=[protocol.WORKER_PREFIX]
        )
        return protocol.parse_workers(ids, values)

    def submit(
        self,
        model: str,
        prompt: Sequence[int] | Sequence[dict[str, str]] | str,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        workers: dict[str, dict[str, Any]] | None = None,
    ) -> str:
        """Queues a request, returns its id; WorkerUnavailable or Busy come at once.

        `workers` (from `alive_workers`) saves a round trip to a caller who read them
        already, e.g. for the context length.
        """
        request_id, payload = build_request(model, prompt, params, request_id)
        capacity = queue_capacity(workers or self.alive_workers(), model)
        pushed = self._submit(
            keys=[protocol.queue_key(model), protocol.request_key(request_id)],
            args=[
                request_id, capacity, model, json.dumps(payload), protocol.RESULT_TTL_S
            ],
        )  # fmt: skip
        if not pushed:
            raise Busy(f"the queue of model {model!r} is full")
        return request_id

    def cancel(self, request_id: str) -> None:
        self.redis.set(protocol.cancel_key(request_id), "1", ex=protocol.RESULT_TTL_S)

    def stream(
        self, request_id: str, last_id: str = "0-0", *, queue_updates: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Yields the request's events from `last_id` until `done` or `error`; with
        `queue_updates`, also a `queued` event at each poll while it waits."""
        while True:
            reply = self.redis.xread(
                {protocol.events_key(request_id): last_id}, block=POLL_MS
            )
            new_last, events = decode_entries(reply)
            last_id = new_last or last_id
            for event in events:
                yield event
                if is_last(event):
                    return
            if not events:
                request = self.redis.hgetall(protocol.request_key(request_id))
                if error := orphan_error(request, self.alive_workers()):
                    yield error
                    return
                if queue_updates and (queued := self._queued(request_id, request)):
                    yield queued

    def _queued(self, request_id: str, request: dict[str, str]) -> dict | None:
        if request.get("worker"):
            return None
        key = protocol.queue_key(request["model"])
        return queued_event(self.redis.lpos(key, request_id))

    def wait(self, request_id: str) -> GenerationResult:
        return collect_result(request_id, self.stream(request_id))

    def generate(
        self,
        model: str,
        prompt: Sequence[int] | Sequence[dict[str, str]] | str,
        params: SamplingParams | None = None,
    ) -> GenerationResult:
        return self.wait(self.submit(model, prompt, params))

    def reward(self, model: str, ids: Sequence[int]) -> tuple[float, float]:
        """A reward model's (raw, normalized) reward of a prompt and answer in the
        chat format, up to the answer's `<end_of_turn>`."""
        for event in self.stream(self.submit(model, ids)):
            if event["type"] == "error":
                raise error_from_event(event)
            if event["type"] == "done":
                return event["reward"], event["normalized_reward"]
        raise GenerationError("event stream ended without a result")

    def close(self) -> None:
        self.redis.close()


class AsyncGenerationClient:
    """Asyncio client (the web app's consumers and views), same protocol."""

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        self._submit = self.redis.register_script(protocol.SUBMIT_LUA)
        self._workers = self.redis.register_script(protocol.WORKERS_LUA)

    async def alive_workers(self) -> dict[str, dict[str, Any]]:
        ids, values = await self._workers(
            keys=[protocol.WORKERS_KEY], args=[protocol.WORKER_PREFIX]
        )
        return protocol.parse_workers(ids, values)

    async def submit(
        self,
        model: str,
        prompt: Sequence[int] | Sequence[dict[str, str]] | str,
        params: SamplingParams | None = None,
        request_id: str | None = None,
        workers: dict[str, dict[str, Any]] | None = None,
    ) -> str:
        request_id, payload = build_request(model, prompt, params, request_id)
        capacity = queue_capacity(workers or await self.alive_workers(), model)
        pushed = await self._submit(
            keys=[protocol.queue_key(model), protocol.request_key(request_id)],
            args=[
                request_id, capacity, model, json.dumps(payload), protocol.RESULT_TTL_S
            ],
        )  # fmt: skip
        if not pushed:
            raise Busy(f"the queue of model {model!r} is full")
        return request_id

    async def cancel(self, request_id: str) -> None:
        await self.redis.set(
            protocol.cancel_key(request_id), "1", ex=protocol.RESULT_TTL_S
        )

    async def stream(
        self, request_id: str, last_id: str = "0-0", *, queue_updates: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        while True:
            reply = await self.redis.xread(
                {protocol.events_key(request_id): last_id}, block=POLL_MS
            )
            new_last, events = decode_entries(reply)
            last_id = new_last or last_id
            for event in events:
                yield event
                if is_last(event):
                    return
            if not events:
                request = await self.redis.hgetall(protocol.request_key(request_id))
                if error := orphan_error(request, await self.alive_workers()):
                    yield error
                    return
                if queue_updates and (
                    queued := await self._queued(request_id, request)
                ):
                    yield queued

    async def _queued(self, request_id: str, request: dict[str, str]) -> dict | None:
        if request.get("worker"):
            return None
        key = protocol.queue_key(request["model"])
        return queued_event(await self.redis.lpos(key, request_id))

    async def wait(self, request_id: str) -> GenerationResult:
        events = [event async for event in self.stream(request_id)]
        return collect_result(request_id, events)

    async def aclose(self) -> None:
        await self.redis.aclose()
