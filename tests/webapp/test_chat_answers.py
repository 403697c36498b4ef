"""Chat answers saved when they end: the persister, the sweep, and many at once.

The settling rules are checked on request streams written the way a worker writes
them, in the session's real Redis; the persister and the sweep run for real inside
the live Celery worker; many conversations go over real WebSockets to a real
generation worker whose batch is smaller than the crowd.
"""

import asyncio
import json
import time
import uuid

import pytest
import redis
from django.conf import settings

from model_service import protocol
from tests.conftest import make_user, start_copy_worker
from tests.webapp.test_chat_consumer import (
    receive_until_settled,
    session_cookie,
    socket,
)
from webapp.chat import answers, services
from webapp.chat.models import Conversation, Message
from webapp.chat.persister import STRANDED_AFTER_S, SWEEP_EVERY_S
from webapp.launcher import stop

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner():
    return make_user("olga")


@pytest.fixture
def conversation(owner) -> Conversation:
    return services.create_conversation(owner, model_name="tiny-random")


def streaming_answer(conversation: Conversation) -> Message:
    """A streaming answer whose request was never submitted (as after a web process
    died between its commit and the submit)."""
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content="Hi"
    )
    return Message.objects.create(
        conversation=conversation,
        parent=question,
        role=Message.Role.MODEL,
        status=Message.Status.STREAMING,
        model_name="tiny-random",
        request_id=uuid.uuid4().hex,
    )


def write(request_id: str, worker: str | None, *events: dict) -> None:
    """What a worker that took the request writes: its claim, then its events."""
    with redis.Redis.from_url(settings.REDIS_URL) as conn:
        fields = {"model": "tiny-random", "payload": "{}"}
        if worker:
            fields["worker"] = worker
        conn.hset(protocol.request_key(request_id), mapping=fields)
        for event in events:
            conn.xadd(protocol.events_key(request_id), {"event": json.dumps(event)})


def piece(text: str) -> dict:
    return {"type": "piece", "text": text, "token_ids": [1, 2], "logprobs": [0, 0]}


def done(text: str, reason: str) -> dict:
    return {"type": "done", "finish_reason": reason, "text": text, "token_ids": [1] * 3}


def test_an_ended_request_completes_its_answer(conversation, generation_worker):
    answer = streaming_answer(conversation)
    write(answer.request_id, generation_worker, piece("Hel"), done("Hello", "stop"))

    assert answers.settle_requests([answer.request_id]) == [answer.pk]

    answer.refresh_from_db()
    assert (answer.status, answer.content, answer.token_count) == (
        Message.Status.COMPLETE,
        "Hello",
        3,
    )
    assert answer.finish_reason == "stop"
    # Settling again changes nothing: the first save wins.
    assert answers.settle_requests([answer.request_id]) == []


def test_a_cancelled_request_stops_its_answer(conversation, generation_worker):
    answer = streaming_answer(conversation)
    write(answer.request_id, generation_worker, done("Hel", "cancelled"))

    answers.settle_requests([answer.request_id])

    answer.refresh_from_db()
    assert (answer.status, answer.content) == (Message.Status.STOPPED, "Hel")


def test_a_failed_request_keeps_the_text_it_made(conversation, generation_worker):
    answer = streaming_answer(conversation)
    error = protocol.error_event(protocol.INTERNAL_ERROR, "the decode step failed")
    write(answer.request_id, generation_worker, piece("Half "), piece("an"), error)

    answers.settle_requests([answer.request_id])

    answer.refresh_from_db()
    assert answer.status == Message.Status.FAILED
    assert answer.content == "Half an"
    assert answer.error == "Generation failed: the decode step failed"


def test_a_request_whose_worker_died_fails_with_its_text(conversation):
    answer = streaming_answer(conversation)
    write(answer.request_id, "a-worker-long-gone", piece("Once upon"))

    answers.settle([answer])

    answer.refresh_from_db()
    assert answer.status == Message.Status.FAILED
    assert answer.content == "Once upon"
    assert "a-worker-long-gone died" in answer.error


def test_a_request_still_running_or_queued_is_left_alone(
    conversation, generation_worker
):
    running, queued = streaming_answer(conversation), streaming_answer(conversation)
    write(running.request_id, generation_worker, piece("Still going"))
    write(queued.request_id, None)

    assert answers.settle([running, queued]) == []

    assert Message.objects.filter(status=Message.Status.STREAMING).count() == 2


@pytest.mark.slow
def test_the_sweep_fails_an_answer_never_handed_to_the_model(
    conversation, live_celery_worker
):
    answer = streaming_answer(conversation)  # the web process died before submitting
    Message.objects.filter(pk=answer.pk).update(
        created_at=answer.created_at.replace(year=2020)
    )

    deadline = time.monotonic() + 3 * SWEEP_EVERY_S + STRANDED_AFTER_S
    while time.monotonic() < deadline:
        answer.refresh_from_db()
        if answer.status != Message.Status.STREAMING:
            break
        time.sleep(0.5)

    assert answer.status == Message.Status.FAILED
    assert answer.error == answers.NEVER_SUBMITTED_ERROR


@pytest.fixture
def narrow_worker(redis_url, tmp_path):
    """A generation worker decoding two rows at a time; yields its model's name."""
    model, process = start_copy_worker(redis_url, tmp_path, "--max-batch", "2")
    yield model
    stop(process)


CROWD = 12  # more than the worker's batch and than the Celery worker's threads


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_crowd_chatting_at_once_is_served_in_turn_and_nothing_fails(
    owner, narrow_worker, live_celery_worker
):
    cookie = await asyncio.to_thread(session_cookie, owner)
    conversations = [
        await Conversation.objects.acreate(
            owner=owner, model_name=narrow_worker, temperature=1.0, max_new_tokens=200
        )
        for _ in range(CROWD)
    ]
    pages = [socket(c.pk, cookie) for c in conversations]
    for page in pages:
        assert (await page.connect())[0]
        await page.receive_json_from()  # the empty branch

    await asyncio.gather(
        *(page.send_json_to({"action": "send", "text": "Tell me"}) for page in pages)
    )
    received = await asyncio.gather(*(receive_until_settled(page) for page in pages))
    for page in pages:
        await page.disconnect()

    statuses = [a.status async for a in Message.objects.filter(role="model")]
    assert statuses == [Message.Status.COMPLETE] * CROWD
    waits = [m for messages, _ in received for m in messages if m["type"] == "queued"]
    assert waits, "no page was told its answer waits"
    assert max(m["ahead"] for m in waits) >= 1
