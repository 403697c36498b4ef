"""One chat answer: submitted to the generation worker, then followed and saved.

The web process submits the answer right after it saves the user's message
(`submit_answer`): the Celery hop is not on the way to the first token. Pages read
the tokens straight from the request's Redis Stream (`webapp.chat.consumers`). The
Celery task `webapp.chat.tasks.generate_answer` follows the same stream from its start
(`run_answer`) and saves the answer as it grows and when it ends, so an answer is kept
whether or not any page is open; its end goes to the conversation's channel-layer
group.
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
from webapp.chat.models import Message, conversation_group

# Pieces that arrive closer together than this are saved as one update.
FLUSH_EVERY_S = 0.05


@functools.cache
def client() -> GenerationClient:
    return GenerationClient(settings.REDIS_URL)


def cancel_request(request_id: str) -> None:
    client().cancel(request_id)


@functools.cache
def channel_layer_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process for the channel layer, on its own thread.

    `async_to_sync` would build a loop, and with it a new Redis connection pool, for
    every update: tens of milliseconds each. On one long-lived loop the pool stays.
    """
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="channel-layer", daemon=True).start()
    return loop


def send_to_group(conversation_id: int, event: dict[str, Any]) -> None:
    """Sends and waits: the event leaves before the task moves on."""
    send = get_channel_layer().group_send(conversation_group(conversation_id), event)
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


def submit_answer(answer: Message, history: list[Message]) -> str | None:
    """Builds the answer's prompt from `history` (its branch before it, oldest first)
    and queues it under the answer's request id.

    Returns None once queued, else why it was refused (the answer's error message).
    """
    try:
        prompt = prompts.build_prompt(answer, history)
        client().submit(
            answer.model_name,
            prompt.token_ids,
            sampling_params(answer),
            request_id=answer.request_id,
        )
    except Busy:
        return "The model is busy with other requests. Try again in a moment."
    except WorkerUnavailable as exc:
        return f"The generation worker is not running: {exc}."
    except (GenerationError, prompts.PromptError) as exc:
        return str(exc)
    if prompt.dropped_turns:
        Message.objects.filter(pk=answer.pk).update(dropped_turns=prompt.dropped_turns)
    return None


def run_answer(answer_id: int) -> None:
    """Saves a submitted answer as its request's events come (the Celery task)."""
    answer = claim(answer_id)
    if answer is None:
        return
    saver = AnswerSaver(answer)
    try:
        for event in client().stream(answer.request_id):
            if event["type"] == "piece":
                saver.add(event["text"], len(event["token_ids"]))
            elif event["type"] == "done":
                saver.finish(event)
            else:
                saver.fail(f"Generation failed: {event['message']}")
    except Exception as exc:  # whatever happens, the answer must not stay "streaming"
        saver.fail(f"Generation failed: {type(exc).__name__}: {exc}")
        raise


class AnswerSaver:
    """Collects an answer's pieces; saves them at most every FLUSH_EVERY_S."""

    def __init__(self, answer: Message) -> None:
        self.answer_id = answer.pk
        self.conversation_id = answer.conversation_id
        self.text = answer.content
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
        self.pending = ""
        self.last_flush = time.monotonic()

    def finish(self, done: dict[str, Any]) -> None:
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
            self.conversation_id, {"type": "chat.final", "message_id": self.answer_id}
        )
