"""Runs one chat answer: prompt, submit to the generation worker, relay, save.

Called by the Celery task `webapp.chat.tasks.generate_answer`, never by the web process,
which only reads what this writes. The growing text is saved *before* each update is
sent to the answer's channel-layer group: whoever joins the group and then reads the row
can merge the two without a gap, which is what lets a reloaded page continue an answer.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from model_service.client import (
    Busy,
    GenerationClient,
    GenerationError,
    WorkerUnavailable,
)
from model_service.sampling import SamplingParams
from webapp.chat import prompts
from webapp.chat.models import Message, answer_group

# Pieces that arrive closer together than this are saved and sent as one update.
FLUSH_EVERY_S = 0.05


@functools.cache
def client() -> GenerationClient:
    return GenerationClient(settings.REDIS_URL)


def cancel_request(request_id: str) -> None:
    client().cancel(request_id)


def utf16_length(text: str) -> int:
    """Offsets sent to the browser count UTF-16 code units, as JavaScript strings do."""
    return len(text.encode("utf-16-le")) // 2


@functools.cache
def channel_layer_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process for the channel layer, on its own thread.

    `async_to_sync` would build a loop, and with it a new Redis connection pool, for
    every update: tens of milliseconds each. On one long-lived loop the pool stays.
    """
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="channel-layer", daemon=True).start()
    return loop


def send_to_group(answer_id: int, event: dict[str, Any]) -> None:
    """Sends and waits, so that updates arrive in the order they were saved."""
    send = get_channel_layer().group_send(answer_group(answer_id), event)
    asyncio.run_coroutine_threadsafe(send, channel_layer_loop()).result()


def claim(answer_id: int) -> Message | None:
    """Takes the answer for this task run; a second run of the same task gets None."""
    claimed = Message.objects.filter(
        pk=answer_id, status=Message.Status.STREAMING, claimed_at__isnull=True
    ).update(claimed_at=timezone.now())
    return Message.objects.get(pk=answer_id) if claimed else None


def sampling_params(answer: Message) -> SamplingParams:
    return SamplingParams(
        temperature=answer.temperature,
        top_p=answer.top_p,
        seed=answer.seed,
        max_new_tokens=answer.max_new_tokens,
    )


def run_answer(answer_id: int) -> None:
    answer = claim(answer_id)
    if answer is None:
        return
    relay = Relay(answer)
    try:
        generate(answer, relay)
    except Exception as exc:  # whatever happens, the answer must not stay "streaming"
        relay.fail(f"Generation failed: {type(exc).__name__}: {exc}")
        raise


def generate(answer: Message, relay: Relay) -> None:
    try:
        prompt = prompts.build_prompt(answer)
        request_id = client().submit(
            answer.model_name, prompt.token_ids, sampling_params(answer)
        )
    except Busy:
        relay.fail("The model is busy with other requests. Try again in a moment.")
        return
    except WorkerUnavailable as exc:
        relay.fail(f"The generation worker is not running: {exc}.")
        return
    except (GenerationError, prompts.PromptError) as exc:
        relay.fail(str(exc))
        return
    Message.objects.filter(pk=answer.pk).update(
        request_id=request_id, dropped_turns=prompt.dropped_turns
    )
    # A stop that came before the request id was stored is honoured here.
    if Message.objects.filter(pk=answer.pk, stop_requested=True).exists():
        cancel_request(request_id)
    for event in client().stream(request_id):
        if event["type"] == "piece":
            relay.add(event["text"], len(event["token_ids"]))
        elif event["type"] == "done":
            relay.finish(event)
        else:
            relay.fail(f"Generation failed: {event['message']}")


class Relay:
    """Collects an answer's pieces; saves, then sends, at most every FLUSH_EVERY_S."""

    def __init__(self, answer: Message) -> None:
        self.answer_id = answer.pk
        self.text = answer.content
        self.sent_length = utf16_length(self.text)
        self.pending = ""
        self.token_count = 0
        self.last_flush = 0.0

    def add(self, piece: str, tokens: int) -> None:
        self.pending += piece
        self.token_count += tokens
        if time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.text += self.pending
        Message.objects.filter(pk=self.answer_id).update(
            content=self.text, token_count=self.token_count
        )
        send_to_group(
            self.answer_id,
            {
                "type": "chat.token",
                "message_id": self.answer_id,
                "offset": self.sent_length,
                "text": self.pending,
            },
        )
        self.sent_length += utf16_length(self.pending)
        self.pending = ""
        self.last_flush = time.monotonic()

    def finish(self, done: dict[str, Any]) -> None:
        self.flush()
        cancelled = done["finish_reason"] == "cancelled"
        self.close(
            status=Message.Status.STOPPED if cancelled else Message.Status.COMPLETE,
            content=done["text"],
            token_count=len(done["token_ids"]),
            finish_reason=done["finish_reason"],
        )

    def fail(self, error: str) -> None:
        self.flush()
        self.close(status=Message.Status.FAILED, error=error)

    def close(self, **fields: Any) -> None:
        Message.objects.filter(pk=self.answer_id).update(**fields)
        send_to_group(
            self.answer_id, {"type": "chat.final", "message_id": self.answer_id}
        )
