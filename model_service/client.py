"""Client of the generation worker, over Redis.

The protocol (the worker in `model_service.worker` is the other side):

- `gemma:worker:<worker_id>`: the worker's heartbeat, JSON `{models, load, max_batch,
  max_queue, pid, started}`, refreshed every second with a 5 s TTL. No key, no worker.
- `gemma:request:<request_id>`: a hash with the request (`model`, `payload` JSON) and,
  once a worker took it, `worker` (its id). Expires after `RESULT_TTL_S`.
- `gemma:queue:<model>`: a list of request ids waiting for a worker. `submit` pushes
  with a Lua script that checks the length first: a full queue answers `Busy` at once.
- `gemma:events:<request_id>`: a Redis Stream of events (`piece`, `done`, `error`),
  each entry one field `event` holding JSON. Readers start from the beginning, so a
  reader who joins late (a reloaded chat page) replays the whole answer. Expires after
  `RESULT_TTL_S`.
- `gemma:cancel:<request_id>`: set by `cancel`; the worker checks it at every step and
  ends the request with `finish_reason="cancelled"`, keeping the partial text.

A reader that waits on a request whose worker died (heartbeat gone), or that sits in a
queue no live worker serves, gets an `error` event instead of waiting forever.
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

from model_service.sampling import SamplingParams

WORKER_PREFIX = "gemma:worker:"
# The ids of the workers that sent a heartbeat lately, scored by its time: readers look
# up a handful of keys instead of scanning a keyspace that every request adds to.
WORKERS_KEY = "gemma:workers"
HEARTBEAT_TTL_S = 5
# A worker gone for this long (it crashed: a stopping worker leaves at once) is pruned
# from WORKERS_KEY by the next heartbeat of any worker.
FORGET_AFTER_S = 60
RESULT_TTL_S = 3600
# How long a reader blocks on the stream before it checks that a worker is still there.
POLL_MS = 1000

# Pushes the request id unless the queue already holds `max_queue` ids.
# KEYS: queue, request hash; ARGV: request id, max_queue, model, payload, ttl.
_SUBMIT_LUA = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], 'model', ARGV[3], 'payload', ARGV[4])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""


# The ids in WORKERS_KEY and each one's heartbeat (nil once expired), as [ids, values]:
# one round trip, on the way of every submit.
# KEYS: WORKERS_KEY; ARGV: WORKER_PREFIX.
_WORKERS_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local values = {}
for i, id in ipairs(ids) do values[i] = redis.call('GET', ARGV[1] .. id) end
return {ids, values}
"""


def worker_key(worker_id: str) -> str:
    return WORKER_PREFIX + worker_id


def beat(pipe: redis.client.Pipeline, worker_id: str, description: str) -> None:
    """Queues a worker's heartbeat on a pipeline: its key, its entry in WORKERS_KEY."""
    now = time.time()
    pipe.set(worker_key(worker_id), description, ex=HEARTBEAT_TTL_S)
    pipe.zadd(WORKERS_KEY, {worker_id: now})
    pipe.zremrangebyscore(WORKERS_KEY, "-inf", now - FORGET_AFTER_S)


def leave(pipe: redis.client.Pipeline, worker_id: str) -> None:
    """Queues a worker's departure on a pipeline."""
    pipe.delete(worker_key(worker_id))
    pipe.zrem(WORKERS_KEY, worker_id)


def queue_key(model: str) -> str:
    return f"gemma:queue:{model}"


def request_key(request_id: str) -> str:
    return f"gemma:request:{request_id}"


def events_key(request_id: str) -> str:
    return f"gemma:events:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"gemma:cancel:{request_id}"


class GenerationError(Exception):
    """A request failed (bad input, a worker error, or the worker died)."""


class WorkerUnavailable(GenerationError):
    """No live worker serves the model."""


class Busy(GenerationError):
    """The model's queue is full; try again later."""


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


def parse_workers(
    ids: list[str], values: list[str | None]
) -> dict[str, dict[str, Any]]:
    """Heartbeat values by worker id (keys that expired meanwhile are left out)."""
    return {
        worker_id: json.loads(value)
        for worker_id, value in zip(ids, values, strict=True)
        if value is not None
    }


def queue_capacity(workers: dict[str, dict[str, Any]], model: str) -> int:
    """How many requests may wait for `model`: summed over the workers serving it."""
    serving = [w for w in workers.values() if model in w.get("models", ())]
    if not serving:
        raise WorkerUnavailable(f"no live generation worker serves model {model!r}")
    return sum(int(w.get("max_queue", 0)) for w in serving)


def decode_entries(entries: list) -> tuple[str | None, list[dict[str, Any]]]:
    """XREAD reply -> (last entry id, events)."""
    last_id, events = None, []
    for _stream, items in entries or ():
        for entry_id, fields in items:
            last_id = entry_id
            events.append(json.loads(fields["event"]))
    return last_id, events


def is_last(event: dict[str, Any]) -> bool:
    """Whether the event ends its request's stream (`done` or `error`)."""
    return event["type"] in ("done", "error")


def orphan_error(
    request: dict[str, str], workers: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The error event for a request nobody will finish, or None while someone may."""
    if not request:
        return {"type": "error", "message": "unknown or expired request"}
    owner = request.get("worker")
    if owner:
        if owner in workers:
            return None
        return {"type": "error", "message": f"generation worker {owner} died"}
    try:
        queue_capacity(workers, request["model"])
    except WorkerUnavailable as exc:
        return {"type": "error", "message": str(exc)}
    return None


def collect_result(
    request_id: str, events: Iterator[dict[str, Any]] | list[dict[str, Any]]
) -> GenerationResult:
    for event in events:
        if event["type"] == "error":
            raise GenerationError(event["message"])
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


class GenerationClient:
    """Synchronous client (training, Celery tasks, scripts).

    Args:
        redis_url: the Redis the workers listen on.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self._submit = self.redis.register_script(_SUBMIT_LUA)
        self._workers = self.redis.register_script(_WORKERS_LUA)

    def alive_workers(self) -> dict[str, dict[str, Any]]:
        ids, values = self._workers(keys=[WORKERS_KEY], args=[WORKER_PREFIX])
        return parse_workers(ids, values)

    def submit(
        self,
        model: str,
        prompt: Sequence[int] | Sequence[dict[str, str]] | str,
        params: SamplingParams | None = None,
        request_id: str | None = None,
    ) -> str:
        """Queues a request, returns its id; WorkerUnavailable or Busy come at once."""
        request_id, payload = build_request(model, prompt, params, request_id)
        capacity = queue_capacity(self.alive_workers(), model)
        pushed = self._submit(
            keys=[queue_key(model), request_key(request_id)],
            args=[request_id, capacity, model, json.dumps(payload), RESULT_TTL_S],
        )
        if not pushed:
            raise Busy(f"the queue of model {model!r} is full")
        return request_id

    def cancel(self, request_id: str) -> None:
        self.redis.set(cancel_key(request_id), "1", ex=RESULT_TTL_S)

    def stream(self, request_id: str, last_id: str = "0-0") -> Iterator[dict[str, Any]]:
        """Yields the request's events from `last_id` until `done` or `error`."""
        while True:
            reply = self.redis.xread({events_key(request_id): last_id}, block=POLL_MS)
            new_last, events = decode_entries(reply)
            last_id = new_last or last_id
            for event in events:
                yield event
                if is_last(event):
                    return
            if not events:
                error = orphan_error(
                    self.redis.hgetall(request_key(request_id)), self.alive_workers()
                )
                if error:
                    yield error
                    return

    def wait(self, request_id: str) -> GenerationResult:
        return collect_result(request_id, self.stream(request_id))

    def wait_for_events(self, request_id: str, count: int, timeout_s: float) -> bool:
        """Blocks, without using the CPU, until the request's stream holds `count`
        events or its end, at most `timeout_s`; True if it does."""
        key = events_key(request_id)
        deadline = time.monotonic() + timeout_s
        last_id, seen = "0-0", 0
        while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            reply = self.redis.xread({key: last_id}, count=count - seen, block=left_ms)
            new_last, events = decode_entries(reply)
            last_id = new_last or last_id
            seen += len(events)
            if seen >= count or any(is_last(event) for event in events):
                return True
        return False

    def generate(
        self,
        model: str,
        prompt: Sequence[int] | Sequence[dict[str, str]] | str,
        params: SamplingParams | None = None,
    ) -> GenerationResult:
        return self.wait(self.submit(model, prompt, params))

    def close(self) -> None:
        self.redis.close()


class AsyncGenerationClient:
    """Asyncio client (the web app's consumers), same protocol as GenerationClient."""

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        self._submit = self.redis.register_script(_SUBMIT_LUA)
        self._workers = self.redis.register_script(_WORKERS_LUA)

    async def open(self) -> None:
        """Connects now, so that the first request does not pay for the connection
        (the handshake and the client's name: milliseconds of CPU, which a chat page
        would otherwise spend while its first answer is prefilled)."""
        await self.redis.ping()

    async def alive_workers(self) -> dict[str, dict[str, Any]]:
        ids, values = await self._workers(keys=[WORKERS_KEY], args=[WORKER_PREFIX])
        return parse_workers(ids, values)

    async def submit(
        self,
        model: str,
        prompt: Sequence[int] | Sequence[dict[str, str]] | str,
        params: SamplingParams | None = None,
        request_id: str | None = None,
    ) -> str:
        request_id, payload = build_request(model, prompt, params, request_id)
        capacity = queue_capacity(await self.alive_workers(), model)
        pushed = await self._submit(
            keys=[queue_key(model), request_key(request_id)],
            args=[request_id, capacity, model, json.dumps(payload), RESULT_TTL_S],
        )
        if not pushed:
            raise Busy(f"the queue of model {model!r} is full")
        return request_id

    async def cancel(self, request_id: str) -> None:
        await self.redis.set(cancel_key(request_id), "1", ex=RESULT_TTL_S)

    async def stream(
        self, request_id: str, last_id: str = "0-0"
    ) -> AsyncIterator[dict[str, Any]]:
        while True:
            reply = await self.redis.xread(
                {events_key(request_id): last_id}, block=POLL_MS
            )
            new_last, events = decode_entries(reply)
            last_id = new_last or last_id
            for event in events:
                yield event
                if is_last(event):
                    return
            if not events:
                error = orphan_error(
                    await self.redis.hgetall(request_key(request_id)),
                    await self.alive_workers(),
                )
                if error:
                    yield error
                    return

    async def wait(self, request_id: str) -> GenerationResult:
        events = [event async for event in self.stream(request_id)]
        return collect_result(request_id, events)

    async def aclose(self) -> None:
        await self.redis.aclose()
