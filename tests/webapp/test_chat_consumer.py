"""The chat WebSocket against a real Celery worker and a real generation worker.

Everything runs as in production except the browser: the project's ASGI application
(origin check, session auth), the Redis channel layer, the Celery task that relays the
worker's events, and the `tiny-random` model.
"""

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.conftest import make_user
from webapp.asgi import application
from webapp.chat import services
from webapp.chat.models import Conversation, Message

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
]

ORIGIN = b"http://127.0.0.1"
RECEIVE_TIMEOUT_S = 90


@pytest.fixture
def owner():
    return make_user("olga")


@pytest.fixture
def conversation(owner) -> Conversation:
    return services.create_conversation(
        owner, model_name="tiny-random", temperature=1.0, max_new_tokens=48
    )


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(conversation_id: int, cookie: bytes = b"", origin: bytes = ORIGIN):
    headers = [(b"origin", origin), (b"host", b"127.0.0.1"), (b"cookie", cookie)]
    return WebsocketCommunicator(
        application, f"/ws/chat/{conversation_id}/", headers=headers
    )


@pytest.fixture
def owner_cookie(owner) -> bytes:
    return session_cookie(owner)


@pytest.fixture
def stranger_cookie() -> bytes:
    return session_cookie(make_user("mallory"))


async def receive_until_settled(communicator) -> tuple[list[dict], dict]:
    """Every message up to the first branch with nothing streaming; and that branch."""
    received = []
    while True:
        message = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT_S)
        received.append(message)
        if message["type"] == "branch" and not message["streaming"]:
            return received, message


async def send_and_settle(conversation_id: int, cookie: bytes, text: str) -> dict:
    """Opens a socket, sends `text`, returns the branch once nothing streams."""
    communicator = socket(conversation_id, cookie)
    await communicator.connect()
    await communicator.receive_json_from()
    await communicator.send_json_to({"action": "send", "text": text})
    _received, final = await receive_until_settled(communicator)
    await communicator.disconnect()
    return final


async def receive_first_token(communicator) -> dict:
    while True:
        message = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT_S)
        if message["type"] == "token":
            return message


def streamed_text(received: list[dict], answer_id: int) -> str:
    """What a browser shows from the branch snapshots and tokens, merged by offset."""
    text = ""
    for message in received:
        if message["type"] == "branch" and str(answer_id) in message["streaming"]:
            text = message["streaming"][str(answer_id)]
        elif message["type"] == "token" and message["message_id"] == answer_id:
            assert message["offset"] <= len(text.encode("utf-16-le")) // 2
            text = text[: message["offset"]] + message["text"]
    return text


async def test_it_streams_an_answer_and_saves_it(
    conversation, owner_cookie, generation_worker, live_celery_worker
):
    communicator = socket(conversation.pk, owner_cookie)
    assert (await communicator.connect())[0]
    await communicator.receive_json_from()  # the (empty) branch

    await communicator.send_json_to({"action": "send", "text": "Tell me a story"})
    received, final = await receive_until_settled(communicator)
    await communicator.disconnect()

    answer = await Message.objects.aget(role=Message.Role.MODEL)
    assert answer.status == Message.Status.COMPLETE
    assert answer.finish_reason in ("stop", "length")
    assert answer.token_count > 0
    assert answer.content.strip()
    assert [m for m in received if m["type"] == "token"]
    # The saved answer is exactly what was streamed.
    assert streamed_text(received, answer.pk) == answer.content
    assert f'data-message-id="{answer.pk}"' in final["html"]


async def test_stop_keeps_the_partial_answer_marked_stopped(
    owner, owner_cookie, generation_worker, live_celery_worker
):
    conversation = await Conversation.objects.acreate(
        owner=owner, model_name="tiny-random", temperature=1.0, max_new_tokens=200
    )
    communicator = socket(conversation.pk, owner_cookie)
    await communicator.connect()
    await communicator.receive_json_from()
    await communicator.send_json_to({"action": "send", "text": "Go on and on"})
    message = await receive_first_token(communicator)

    await communicator.send_json_to(
        {"action": "stop", "message_id": message["message_id"]}
    )
    _received, final = await receive_until_settled(communicator)
    await communicator.disconnect()

    answer = await Message.objects.aget(pk=message["message_id"])
    assert answer.status == Message.Status.STOPPED
    assert answer.finish_reason == "cancelled"
    assert 0 < answer.token_count < 200
    assert answer.content.startswith(message["text"])
    assert "Stopped" in final["html"]


async def test_an_empty_message_is_refused_and_nothing_saved(
    conversation, owner_cookie
):
    communicator = socket(conversation.pk, owner_cookie)
    await communicator.connect()
    await communicator.receive_json_from()

    await communicator.send_json_to({"action": "send", "text": "   "})
    reply = await communicator.receive_json_from()
    await communicator.disconnect()

    assert reply == {"type": "error", "message": "The message is empty."}
    assert not await Message.objects.aexists()


async def test_a_model_no_worker_serves_fails_with_a_clear_message(
    owner, owner_cookie, generation_worker, live_celery_worker
):
    conversation = await Conversation.objects.acreate(
        owner=owner, model_name="gemma3-270m", max_new_tokens=16
    )
    final = await send_and_settle(conversation.pk, owner_cookie, "Hello?")

    answer = await Message.objects.aget(role=Message.Role.MODEL)
    assert answer.status == Message.Status.FAILED
    assert "no live generation worker serves model 'gemma3-270m'" in answer.error
    assert "Failed:" in final["html"]


async def test_a_busy_worker_fails_the_answer_with_a_clear_message(
    owner, owner_cookie, full_worker
):
    conversation = await Conversation.objects.acreate(
        owner=owner, model_name=full_worker, max_new_tokens=16
    )
    final = await send_and_settle(conversation.pk, owner_cookie, "Anyone there?")

    question = await Message.objects.aget(role=Message.Role.USER)
    answer = await Message.objects.aget(role=Message.Role.MODEL)
    assert question.content == "Anyone there?"  # saved all the same
    assert answer.status == Message.Status.FAILED
    assert answer.error == (
        "The model is busy with other requests. Try again in a moment."
    )
    assert "Failed: The model is busy" in final["html"]


async def refused(communicator) -> int | None:
    """Connects, expects a refusal, and lets the consumer end (it still listens)."""
    connected, code = await communicator.connect()
    await communicator.disconnect()
    assert not connected
    return code


async def test_it_refuses_anonymous_users(conversation):
    assert await refused(socket(conversation.pk)) == 4401


async def test_it_refuses_other_peoples_conversations(conversation, stranger_cookie):
    assert await refused(socket(conversation.pk, stranger_cookie)) == 4404


async def test_it_refuses_a_foreign_origin(conversation, owner_cookie):
    await refused(socket(conversation.pk, owner_cookie, origin=b"http://evil.example"))


async def test_it_refuses_actions_on_messages_of_other_conversations(
    owner, conversation, owner_cookie
):
    other = await Conversation.objects.acreate(owner=owner, model_name="tiny-random")
    foreign = await Message.objects.acreate(
        conversation=other, role=Message.Role.USER, content="elsewhere"
    )
    communicator = socket(conversation.pk, owner_cookie)
    await communicator.connect()
    await communicator.receive_json_from()

    await communicator.send_json_to(
        {"action": "edit", "message_id": foreign.pk, "text": "x"}
    )
    reply = await communicator.receive_json_from()
    await communicator.disconnect()

    assert reply == {"type": "error", "message": "No such message."}
    assert await Message.objects.acount() == 1
