"""The generation worker: a long-lived process that serves models to Redis clients.

    python -m model_service.worker --redis-url redis://127.0.0.1:6379/0 \
        --model gemma3-270m [--model tiny-random] [--max-batch 8] [--max-queue 256]

It loads each model once, announces itself with a heartbeat key, takes request ids from
the models' queues, runs them in one continuous batch per model (`model_service.engine`)
and writes every request's events to its Redis Stream. With `--catalog` it also serves
every model registered in the catalog (`gemma:catalog`), loading each as it appears:
policies to generate with, and reward models, whose requests score an answer (a `done`
event carrying `reward` and `normalized_reward`). The protocol is described in
`model_service.protocol`. One bad request is reported as failed and never stops the
worker; SIGINT / SIGTERM end the running requests with an error event, delete the
heartbeat key and exit.
"""

from __future__ import annotations

from model_service.xla_options import use_serving_flags

use_serving_flags()  # before the imports below bring in JAX

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402

from model_service import protocol as proto  # noqa: E402
from model_service.engine import Engine, Update  # noqa: E402
from model_service.memory import limit_arenas  # noqa: E402
from model_service.reward import RewardModel  # noqa: E402
from model_service.sampler import ContextTooLong  # noqa: E402
from model_service.sampling import SamplingParams  # noqa: E402

log = logging.getLogger("model_service.worker")

HEARTBEAT_EVERY_S = 1.0
IDLE_WAIT_S = 1
CATALOG_EVERY_S = 5.0
REWARD_BATCH = 16  # reward requests scored in one forward pass


class Heartbeat(threading.Thread):
    """Refreshes the worker's key every second, with the current load."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.worker = worker
        self.stopped = threading.Event()

    def run(self) -> None:
        conn = redis.Redis.from_url(self.worker.redis_url)
        worker_id = self.worker.worker_id
        while not self.stopped.is_set():
            try:
                with conn.pipeline() as pipe:
                    proto.beat(pipe, worker_id, json.dumps(self.worker.describe()))
                    pipe.execute()
            except redis.RedisError:
                log.exception("heartbeat failed; retrying")
            self.stopped.wait(HEARTBEAT_EVERY_S)
        with conn.pipeline() as pipe:
            proto.leave(pipe, worker_id)
            pipe.execute()
        conn.close()


class Worker:
    """Takes requests from Redis and drives one engine per model.

    Args:
        redis_url: where the queues and streams live.
        engines: model name -> its engine.
        max_queue: how many requests may wait per model before clients get `Busy`.
        worker_id: the heartbeat key's suffix (default: host-pid-random).
        load_engine: given, the models registered in the catalog are served too:
            policies through the engines it makes from a checkpoint path, reward
            models as scorers.
    """

    def __init__(
        self,
        redis_url: str,
        engines: dict[str, Engine],
        *,
        max_queue: int,
        worker_id: str | None = None,
        load_engine: Callable[[str], Engine] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.engines = engines
        self.scorers: dict[str, RewardModel] = {}
        self.load_engine = load_engine
        self.catalog_checked = 0.0
        self.unloadable: set[str] = set()
        self.max_queue = max_queue
        self.worker_id = worker_id or (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        # No read timeout (redis-py 8 sets 5 s by default): a worker paused for longer
        # (SIGSTOP, a suspended VM) with a reply waiting would raise on resuming and
        # exit; its one blocking command (BLPOP) has its own timeout.
        self.redis = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=None
        )
        self.started = time.time()
        self.stopping = threading.Event()
        # request id -> (model, payload): what the "done" event repeats back.
        self.requests: dict[str, tuple[str, dict[str, Any]]] = {}

    def describe(self) -> dict[str, Any]:
        """The heartbeat: what this worker serves, for clients to fit prompts to."""
        models = {
            name: {
                "kind": proto.POLICY,
                "context_length": engine.sampler.max_length,
                "vocab_size": engine.sampler.config.vocab_size,
            }
            for name, engine in self.engines.items()
        }
        for name, scorer in self.scorers.items():
            models[name] = {
                "kind": proto.REWARD_MODEL,
                "context_length": scorer.config.max_seq_len,
                "vocab_size": scorer.config.vocab_size,
            }
        return {
            "models": dict(sorted(models.items())),
            "load": sum(len(e.active) for e in self.engines.values()),
            "max_batch": max(
                (e.max_batch for e in self.engines.values()), default=REWARD_BATCH
            ),
            "max_queue": self.max_queue,
            "pid": os.getpid(),
            "started": self.started,
        }

    # The loop ---------------------------------------------------------------------

    def run(self) -> None:
        heartbeat = Heartbeat(self)
        heartbeat.start()
        log.info("worker %s serving %s", self.worker_id, sorted(self.engines))
        try:
            while not self.stopping.is_set():
                self.sync_catalog()
                self.admit()
                self.score_waiting()
                if any(e.active for e in self.engines.values()):
                    self.check_cancels()
                    self.step()
                else:
                    self.wait_for_work()
        finally:
            self.shutdown()
            heartbeat.stopped.set()
            heartbeat.join()
            log.info("worker %s stopped", self.worker_id)

    def wait_for_work(self) -> None:
        """Blocks (at most a second, to notice signals) until a request arrives."""
        models = {proto.queue_key(m): m for m in [*self.engines, *self.scorers]}
        if not models:  # nothing loaded yet: the catalog may bring something
            self.stopping.wait(IDLE_WAIT_S)
            return
        popped = self.redis.blpop(list(models), timeout=IDLE_WAIT_S)
        if popped:
            queue, request_id = popped
            model = models[queue]
            if model in self.scorers:
                self.score(model, [request_id])
            else:
                self.start_request(model, self.engines[model], request_id)

    # The catalog and reward models ------------------------------------------------

    def sync_catalog(self) -> None:
        """Loads the models registered since the last look (every CATALOG_EVERY_S);
        one that fails to load is logged and left alone."""
        now = time.monotonic()
        if self.load_engine is None or now - self.catalog_checked < CATALOG_EVERY_S:
            return
        self.catalog_checked = now
        served = {*self.engines, *self.scorers, *self.unloadable}
        for name, raw in self.redis.hgetall(proto.CATALOG_KEY).items():
            if name in served:
                continue
            entry = json.loads(raw)
            log.info("loading catalog model %s from %s", name, entry["path"])
            try:
                if entry["kind"] == proto.REWARD_MODEL:
                    self.scorers[name] = RewardModel.load(entry["path"])
                else:
                    self.engines[name] = self.load_engine(entry["path"])
            except Exception:  # a bad checkpoint never stops the worker
                log.exception("catalog model %s cannot be served", name)
                self.unloadable.add(name)

    def score_waiting(self) -> None:
        for model in self.scorers:
            waiting = self.redis.lpop(proto.queue_key(model), REWARD_BATCH)
            if waiting:
                self.score(model, waiting)

    def score(self, model: str, request_ids: list[str]) -> None:
        """Scores requests for a reward model in one pass: each request's prompt ids
        are a prompt and an answer, read at their last token."""
        scorer = self.scorers[model]
        pipe = self.redis.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.hset(proto.request_key(request_id), "worker", self.worker_id)
            pipe.hget(proto.request_key(request_id), "payload")
        replies = pipe.execute()[1::2]
        sequences = {}
        for request_id, raw_payload in zip(request_ids, replies, strict=True):
            try:
                payload = json.loads(raw_payload)
                sequences[request_id] = check_ids(payload["prompt_ids"], scorer.config)
                self.requests[request_id] = (model, payload)
            except Exception as exc:
                self.fail(request_id, rejection_code(exc), str(exc))
        if not sequences:
            return
        try:
            rewards = scorer.rewards(list(sequences.values()))
        except Exception:
            log.exception("scoring with %s failed", model)
            for request_id in sequences:
                self.fail(request_id, proto.INTERNAL_ERROR, "scoring failed")
            return
        for (request_id, ids), reward in zip(sequences.items(), rewards, strict=True):
            _model, payload = self.requests.pop(request_id)
            self.emit(
                request_id,
                {
                    "type": "done",
                    "finish_reason": "stop",
                    "model": model,
                    "params": payload["params"],
                    "text": "",
                    "token_ids": [],
                    "logprobs": [],
                    "prompt_tokens": len(ids),
                    "reward": float(reward),
                    "normalized_reward": float(scorer.normalized(reward)),
                    "worker": self.worker_id,
                },
            )

    def admit(self) -> None:
        """Moves waiting requests into free batch rows (prefill happens here)."""
        for model, engine in self.engines.items():
            while engine.free_slots > 0 and not self.stopping.is_set():
                request_id = self.redis.lpop(proto.queue_key(model))
                if request_id is None:
                    break
                self.start_request(model, engine, request_id)

    def start_request(self, model: str, engine: Engine, request_id: str) -> None:
        # One round trip: the prefill waits for it.
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(proto.request_key(request_id), "worker", self.worker_id)
        pipe.hget(proto.request_key(request_id), "payload")
        pipe.exists(proto.cancel_key(request_id))
        _, raw_payload, cancelled = pipe.execute()
        try:
            payload = json.loads(raw_payload)
            self.requests[request_id] = (model, payload)
            if cancelled:
                self.finish(Update(request_id, finish_reason="cancelled"))
                return
            params = SamplingParams.from_dict(payload["params"])
            prompt_ids = engine.prompt_ids(payload)
            log.info(
                "request %s: %d prompt tokens, %s", request_id, len(prompt_ids), params
            )
            update = engine.add(request_id, prompt_ids, params)
        except Exception as exc:  # one bad request never stops the worker
            log.warning("request %s rejected: %s", request_id, exc)
            self.fail(request_id, rejection_code(exc), str(exc))
            return
        self.publish(update)

    def check_cancels(self) -> None:
        for engine in self.engines.values():
            active = list(engine.active)
            flags = self.redis.mget([proto.cancel_key(r) for r in active])
            for request_id, flag in zip(active, flags, strict=True):
                if flag:
                    self.finish(engine.cancel(request_id))

    def step(self) -> None:
        for model, engine in self.engines.items():
            if not engine.active:
                continue
            try:
                updates = engine.step()
            except Exception:
                # The whole batched step failed: fail the rows it held, keep serving.
                log.exception("decode step of %s failed", model)
                for request_id in list(engine.active):
                    engine.drop(request_id)
                    self.fail(
                        request_id, proto.INTERNAL_ERROR, "the decode step failed"
                    )
                continue
            for update in updates:
                self.publish(update)

    # Events -----------------------------------------------------------------------

    def publish(self, update: Update) -> None:
        if update.error:
            self.fail(update.request_id, proto.INTERNAL_ERROR, update.error)
        elif update.finish_reason:
            self.finish(update)
        elif update.token_ids:
            self.emit(update.request_id, piece_event(update))

    def finish(self, update: Update) -> None:
        model, payload = self.requests.pop(update.request_id)
        if update.token_ids:
            self.emit(update.request_id, piece_event(update))
        self.emit(
            update.request_id,
            {
                "type": "done",
                "finish_reason": update.finish_reason,
                "model": model,
                "params": payload["params"],
                "text": update.full_text,
                "token_ids": update.all_token_ids,
                "logprobs": update.all_logprobs,
                "prompt_tokens": update.prompt_tokens,
                "worker": self.worker_id,
            },
        )
        log.info(
            "request %s done (%s, %d tokens)",
            update.request_id,
            update.finish_reason,
            len(update.all_token_ids),
        )

    def fail(self, request_id: str, code: str, message: str) -> None:
        self.requests.pop(request_id, None)
        self.emit(request_id, proto.error_event(code, message))

    def emit(self, request_id: str, event: dict[str, Any]) -> None:
        """Appends the event to the request's stream; a last one also goes on the
        finished stream, in the same round trip."""
        key = proto.events_key(request_id)
        pipe = self.redis.pipeline()
        pipe.xadd(key, {"event": json.dumps(event)})
        pipe.expire(key, proto.RESULT_TTL_S)
        if proto.is_last(event):
            pipe.xadd(
                proto.FINISHED_KEY,
                {"request_id": request_id},
                maxlen=proto.FINISHED_MAX_LEN,
                approximate=True,
            )
        pipe.execute()

    def shutdown(self) -> None:
        for engine in self.engines.values():
            for request_id in list(engine.active):
                engine.drop(request_id)
                self.fail(
                    request_id, proto.WORKER_STOPPED, "the generation worker shut down"
                )


def check_ids(ids: Any, config) -> list[int]:
    """A reward request's ids, or ValueError (ContextTooLong past the context)."""
    vocab = config.vocab_size
    if not isinstance(ids, list) or not ids:
        raise ValueError("prompt_ids must be a non-empty list of token ids")
    if not all(isinstance(t, int) and 0 <= t < vocab for t in ids):
        raise ValueError(f"token ids outside the vocabulary (0..{vocab - 1})")
    if len(ids) > config.max_seq_len:
        raise ContextTooLong(
            f"{len(ids)} tokens; the model reads at most {config.max_seq_len}"
        )
    return ids


def rejection_code(exc: Exception) -> str:
    """The error code of a request that could not start: a prompt too long for the
    context, a malformed request, or a failure of ours."""
    if isinstance(exc, ContextTooLong):
        return proto.CONTEXT_LENGTH_EXCEEDED
    if isinstance(exc, ValueError | TypeError | KeyError):
        return proto.INVALID_REQUEST
    return proto.INTERNAL_ERROR


def piece_event(update: Update) -> dict[str, Any]:
    return {
        "type": "piece",
        "text": update.text,
        "token_ids": update.token_ids,
        "logprobs": update.logprobs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--model", action="append", default=[], dest="models")
    parser.add_argument(
        "--catalog",
        action="store_true",
        help="also serve every model registered in the catalog, as it appears",
    )
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default=None,
        help="weights in int8 or as loaded (default: int8 on a CPU, none elsewhere)",
    )
    parser.add_argument("--worker-id", default=None)
    args = parser.parse_args(argv)
    if not args.models and not args.catalog:
        parser.error("serve at least one --model, or the --catalog")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    limit_arenas()  # before XLA's threads allocate
    from model_service.quantize import default_quantization  # heavy: JAX
    from model_service.registry import load_model  # and the weights

    def load_engine(name: str) -> Engine:
        log.info("loading model %s", name)
        engine = Engine(
            load_model(name, quantize=args.quantize or default_quantization()),
            max_batch=args.max_batch,
            max_length=args.max_length,
        )
        engine.warm_up()
        return engine

    worker = Worker(
        args.redis_url,
        {name: load_engine(name) for name in args.models},
        max_queue=args.max_queue,
        worker_id=args.worker_id,
        load_engine=load_engine if args.catalog else None,
    )

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        worker.stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    worker.run()


if __name__ == "__main__":
    main()
