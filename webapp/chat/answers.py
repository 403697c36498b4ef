"""A chat answer outside the page: handed to the generation worker, saved when it ends.

The web process submits an answer right after it saves the user's message
(`submit_answer`). Pages read its tokens straight from the request's Redis Stream
(`webapp.chat.consumers`); nothing follows an answer while it streams, so a streaming
answer costs no thread and no task slot anywhere. When it ends, the worker records the
request on its finished stream, and the persister (`webapp.chat.persister`) saves the
answer from the request's events (`settle`) and tells the conversation's pages. The
persister's periodic sweep settles, the same way, the answers whose end nobody
recorded: a worker that died mid-answer, a web process killed before it handed the
answer over.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from model_service import protocol
from model_service.client import Busy, GenerationError, WorkerUnavailable
from model_service.sampling import SamplingParams
from webapp.chat.models import Message, conversation_group
from webapp.core import serving
from webapp.core.channel_layer import send_to_group

NEVER_SUBMITTED_ERROR = (
    "This answer was never handed to the model (the web server stopped before it "
    "could). Regenerate it."
)


def cancel_request(request_id: str) -> None:
    serving.client().cancel(request_id)


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
    client = serving.client()
    try:
        workers = client.alive_workers()  # also gives the context to fit the prompt to
        prompt = serving.chat_prompt(
            answer.model_name,
            [{"role": m.role, "content": m.content} for m in history],
            max_new_tokens=answer.max_new_tokens,
            workers=workers,
        )
        client.submit(
            answer.model_name,
            prompt.token_ids,
            sampling_params(answer),
            request_id=answer.request_id,
            workers=workers,
        )
    except Busy:
        return "The model is busy with other requests. Try again in a moment."
    except WorkerUnavailable as exc:
        return f"The generation worker is not running: {exc}."
    except (GenerationError, serving.PromptError) as exc:
        return str(exc)
    if prompt.dropped_turns:
        Message.objects.filter(pk=answer.pk).update(dropped_turns=prompt.dropped_turns)
    return None


# --- saving answers that ended -----------------------------------------------------


def ending(
    events: list[dict[str, Any]],
    request: dict[str, str],
    workers: dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    """The fields that close an answer, from its request's events and state; None
    while the request may still produce more."""
    last = events[-1] if events else None
    if last is not None and last["type"] == "done":
        cancelled = last["finish_reason"] == "cancelled"
        return {
            "status": Message.Status.STOPPED if cancelled else Message.Status.COMPLETE,
            "content": last["text"],
            "token_count": len(last["token_ids"]),
            "finish_reason": last["finish_reason"],
        }
    if last is None or last["type"] != "error":
        last = protocol.orphan_error(request, workers)
        if last is None:
            return None
    pieces = [event for event in events if event["type"] == "piece"]
    never_started = not events and last["code"] == protocol.UNKNOWN_REQUEST
    return {
        "status": Message.Status.FAILED,
        "content": "".join(piece["text"] for piece in pieces),
        "token_count": sum(len(piece["token_ids"]) for piece in pieces),
        "error": (
            NEVER_SUBMITTED_ERROR
            if never_started
            else f"Generation failed: {last['message']}"
        ),
    }


def settle(answers: Iterable[Message]) -> list[int]:
    """Saves each streaming answer whose request has ended or never will, and tells
    its pages; returns the ids of the answers saved.

    Safe to run anywhere at any time: the persister, the sweep and a page that saw its
    answer's stream fail may settle the same answer; the first save wins.
    """
    answers = [a for a in answers if a.status == Message.Status.STREAMING]
    if not answers:
        return []
    redis = serving.client().redis
    with redis.pipeline(transaction=False) as pipe:
        for answer in answers:
            pipe.xrange(protocol.events_key(answer.request_id))
            pipe.hgetall(protocol.request_key(answer.request_id))
        replies = pipe.execute()
    workers = serving.client().alive_workers()
    saved = []
    for answer, entries, request in zip(
        answers, replies[::2], replies[1::2], strict=True
    ):
        fields = ending(protocol.events_of(entries), request, workers)
        if fields is None:
            continue
        # The status again in the update: whoever saved it first wins.
        if Message.objects.filter(pk=answer.pk, status=Message.Status.STREAMING).update(
            **fields
        ):
            saved.append(answer.pk)
            send_to_group(
                conversation_group(answer.conversation_id),
                {"type": "chat.final", "message_id": answer.pk},
            )
    return saved


def settle_requests(request_ids: list[str]) -> list[int]:
    """Settles the streaming answers of these generation requests (the others are
    not chat answers, or were saved already)."""
    return settle(
        Message.objects.filter(
            request_id__in=request_ids, status=Message.Status.STREAMING
        )
    )


def settle_stranded(older_than_s: float) -> list[int]:
    """Settles the answers streaming for longer than `older_than_s` (the sweep)."""
    cutoff = timezone.now() - datetime.timedelta(seconds=older_than_s)
    return settle(
        Message.objects.filter(status=Message.Status.STREAMING, created_at__lt=cutoff)
    )
