"""The generation worker's Redis protocol: key names, scripts, heartbeat and events.

The worker (`model_service.worker`) and its clients (`model_service.client`) both
speak it; nothing here does I/O of its own except through a Redis pipeline handed in.

- `gemma:worker:<worker_id>`: the worker's heartbeat, JSON `{models, load, max_batch,
  max_queue, pid, started}`, refreshed every second with a 5 s TTL. No key, no worker.
  `models` maps each served model to what a client needs to build its prompts:
  `{"context_length": positions a request may fill, prompt and answer together,
  "vocab_size": ...}`.
- `gemma:workers`: the ids of the workers that sent a heartbeat lately, scored by its
  time, so that readers look up a handful of keys instead of scanning the keyspace.
- `gemma:request:<request_id>`: a hash with the request (`model`, `payload` JSON) and,
  once a worker took it, `worker` (its id). Expires after `RESULT_TTL_S`.
- `gemma:queue:<model>`: a list of request ids waiting for a worker. `submit` pushes
  with a Lua script that checks the length first: a full queue answers `Busy` at once.
  A request's place in it is how many wait ahead of it.
- `gemma:events:<request_id>`: a Redis Stream of events, each entry one field `event`
  holding JSON. Readers start from the beginning, so a reader who joins late (a
  reloaded chat page) replays the whole answer. Expires after `RESULT_TTL_S`.
  - `{"type": "piece", "text", "token_ids", "logprobs"}`
  - `{"type": "done", "finish_reason": "stop" | "length" | "cancelled", "model",
    "params", "text", "token_ids", "logprobs", "prompt_tokens", "worker"}`
  - `{"type": "error", "code": one of ERROR_CODES, "message"}`
- `gemma:finished`: a Redis Stream with one entry `{"request_id"}` per request that
  ended (after its `done` or `error` event), for whoever saves results without
  following every request (the chat's answer persister reads it in a consumer group).
- `gemma:cancel:<request_id>`: set by `cancel`; the worker checks it at every step and
  ends the request with `finish_reason="cancelled"`, keeping the partial text.
- `gemma:catalog`: a hash of the models registered on the site, name -> JSON
  `{"path", "kind": "policy" | "reward_model"}`; workers started with `--catalog` load
  each as it appears. A reward model's requests are scored, not generated: their prompt
  ids are a prompt and an answer, and their `done` event carries `reward` and
  `normalized_reward` (its text and tokens empty).

A reader that waits on a request whose worker died (heartbeat gone), or that sits in a
queue no live worker serves, gets an `error` event instead of waiting forever
(`orphan_error`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

WORKER_PREFIX = "gemma:worker:"
CATALOG_KEY = "gemma:catalog"
POLICY = "policy"
REWARD_MODEL = "reward_model"
WORKERS_KEY = "gemma:workers"
FINISHED_KEY = "gemma:finished"
HEARTBEAT_TTL_S = 5
# A worker gone for this long (it crashed: a stopping worker leaves at once) is pruned
# from WORKERS_KEY by the next heartbeat of any worker.
FORGET_AFTER_S = 60
RESULT_TTL_S = 3600
# The finished stream keeps about this many entries: enough for any reader that is
# behind by minutes; a reader further behind finds the ended requests by a sweep.
FINISHED_MAX_LEN = 100_000

# Error codes of `error` events, so that clients map failures without parsing text.
INVALID_REQUEST = "invalid_request"  # bad prompt ids or settings: the caller's fault
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # the prompt leaves no room
INTERNAL_ERROR = "internal_error"  # the model failed on a valid request
WORKER_DIED = "worker_died"  # its worker's heartbeat is gone
WORKER_STOPPED = "worker_stopped"  # its worker shut down while it ran
NO_WORKER = "no_worker"  # queued for a model that no live worker serves
UNKNOWN_REQUEST = "unknown_request"  # never submitted, or expired
ERROR_CODES = (
    INVALID_REQUEST,
    CONTEXT_LENGTH_EXCEEDED,
    INTERNAL_ERROR,
    WORKER_DIED,
    WORKER_STOPPED,
    NO_WORKER,
    UNKNOWN_REQUEST,
)

# Pushes the request id unless the queue already holds `max_queue` ids.
# KEYS: queue, request hash; ARGV: request id, max_queue, model, payload, ttl.
SUBMIT_LUA = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], 'model', ARGV[3], 'payload', ARGV[4])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""

# The ids in WORKERS_KEY and each one's heartbeat (nil once expired), as [ids, values]:
# one round trip, on the way of every submit.
# KEYS: WORKERS_KEY; ARGV: WORKER_PREFIX.
WORKERS_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local values = {}
for i, id in ipairs(ids) do values[i] = redis.call('GET', ARGV[1] .. id) end
return {ids, values}
"""


def worker_key(worker_id: str) -> str:
    return WORKER_PREFIX + worker_id


def queue_key(model: str) -> str:
    return f"gemma:queue:{model}"


def request_key(request_id: str) -> str:
    return f"gemma:request:{request_id}"


def events_key(request_id: str) -> str:
    return f"gemma:events:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"gemma:cancel:{request_id}"


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


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def is_last(event: dict[str, Any]) -> bool:
    """Whether the event ends its request's stream (`done` or `error`)."""
    return event["type"] in ("done", "error")


def parse_workers(
    ids: list[str], values: list[str | None]
) -> dict[str, dict[str, Any]]:
    """Heartbeat values by worker id (keys that expired meanwhile are left out)."""
    return {
        worker_id: json.loads(value)
        for worker_id, value in zip(ids, values, strict=True)
        if value is not None
    }


def catalog_entry(path: str, kind: str) -> str:
    """A catalog value: where the model's checkpoint is, and what it does."""
    if kind not in (POLICY, REWARD_MODEL):
        raise ValueError(f"a catalog model is a {POLICY} or a {REWARD_MODEL}")
    return json.dumps({"path": path, "kind": kind})


def serving(workers: dict[str, dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The heartbeats of the workers that serve `model`."""
    return [w for w in workers.values() if model in w.get("models", ())]


def context_length(workers: dict[str, dict[str, Any]], model: str) -> int | None:
    """Positions a request of `model` may fill on any worker serving it (the least
    announced, since any of them may take it); None when no live worker serves it."""
    lengths = [w["models"][model]["context_length"] for w in serving(workers, model)]
    return min(lengths) if lengths else None


def events_of(items: list) -> list[dict[str, Any]]:
    """A stream's entries (an XRANGE reply) -> their events."""
    return [json.loads(fields["event"]) for _entry_id, fields in items]


def decode_entries(entries: list) -> tuple[str | None, list[dict[str, Any]]]:
    """XREAD reply -> (last entry id, events)."""
    last_id, events = None, []
    for _stream, items in entries or ():
        if items:
            last_id = items[-1][0]
            events.extend(events_of(items))
    return last_id, events


def orphan_error(
    request: dict[str, str], workers: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The error event for a request nobody will finish, or None while someone may."""
    if not request:
        return error_event(UNKNOWN_REQUEST, "unknown or expired request")
    owner = request.get("worker")
    if owner:
        if owner in workers:
            return None
        return error_event(WORKER_DIED, f"generation worker {owner} died")
    if not serving(workers, request["model"]):
        return error_event(
            NO_WORKER, f"no live generation worker serves model {request['model']!r}"
        )
    return None
