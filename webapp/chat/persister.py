"""The chat's answer persister: one thread that saves every answer that ends.

It reads the generation workers' finished stream (`model_service.protocol`) in a Redis
consumer group, so that any number of persisters share the work and an entry one of
them took but did not save (it died) goes to another: entries are acknowledged only
after the answers are saved, and ones left pending for `RECLAIM_IDLE_MS` are claimed
again. Every `SWEEP_EVERY_S` one persister (a Redis lock) also sweeps the answers
streaming for longer than `STRANDED_AFTER_S` and settles those whose request has ended
or never will (`webapp.chat.answers.settle`).

It runs inside every Celery worker that consumes the `generation` queue, as a worker
bootstep (`webapp.celery.AnswerPersisterStep`): `make run` and production get it
without a process of their own.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.db import close_old_connections

from model_service import protocol
from webapp.chat import answers

log = logging.getLogger(__name__)

GROUP = "chat-answers"
BATCH = 100
BLOCK_MS = 1000
RECLAIM_IDLE_MS = 30_000
SWEEP_EVERY_S = 10.0
# An answer streaming this long is checked by the sweep; every answer that ends
# normally was saved long before from the finished stream.
STRANDED_AFTER_S = 30.0
SWEEP_LOCK = "gemma:chat:sweep-lock"


class Persister(threading.Thread):
    """Saves the chat answers whose requests end, until `stop()`.

    Args:
        redis_url: the Redis of the generation workers.
        name: this consumer's name in the group (unique per process).
    """

    def __init__(self, redis_url: str, name: str) -> None:
        super().__init__(name="answer-persister", daemon=True)
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.consumer = name
        self.stopped = threading.Event()
        self.next_sweep = 0.0

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=BLOCK_MS / 1000 + 5)

    def run(self) -> None:
        log.info("answer persister %s started", self.consumer)
        while not self.stopped.is_set():
            try:
                self.ensure_group()
                if time.monotonic() >= self.next_sweep:
                    self.next_sweep = time.monotonic() + SWEEP_EVERY_S
                    self.reclaim()
                    self.sweep()
                self.save(self.read())
            except Exception:  # keep saving answers whatever one round did
                log.exception("answer persister round failed; retrying")
                self.stopped.wait(1.0)
            finally:
                close_old_connections()
        self.redis.close()

    def ensure_group(self) -> None:
        """Creates the group once; from the stream's start, so that answers that
        ended before any persister ran are saved too."""
        try:
            self.redis.xgroup_create(
                protocol.FINISHED_KEY, GROUP, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self) -> list[tuple[str, str]]:
        """Up to BATCH new entries as (entry id, request id), waiting for them."""
        reply = self.redis.xreadgroup(
            GROUP,
            self.consumer,
            {protocol.FINISHED_KEY: ">"},
            count=BATCH,
            block=BLOCK_MS,
        )
        return [
            (entry_id, fields["request_id"])
            for _stream, items in reply or ()
            for entry_id, fields in items
        ]

    def reclaim(self) -> None:
        """Saves the entries that a persister took and never acknowledged."""
        # [next id, entries] (Redis 6.2) or [next id, entries, deleted ids] (7+)
        items = self.redis.xautoclaim(
            protocol.FINISHED_KEY, GROUP, self.consumer, RECLAIM_IDLE_MS, count=BATCH
        )[1]
        self.save([(entry_id, fields["request_id"]) for entry_id, fields in items])

    def save(self, entries: list[tuple[str, str]]) -> None:
        if not entries:
            return
        answers.settle_requests([request_id for _entry, request_id in entries])
        self.redis.xack(
            protocol.FINISHED_KEY, GROUP, *[entry for entry, _request in entries]
        )

    def sweep(self) -> None:
        if self.redis.set(SWEEP_LOCK, self.consumer, nx=True, ex=int(SWEEP_EVERY_S)):
            if stranded := answers.settle_stranded(STRANDED_AFTER_S):
                log.info("the sweep settled stranded answers %s", stranded)
