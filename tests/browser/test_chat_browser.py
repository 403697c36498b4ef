"""The chat page in a real Chromium, with real streaming from `tiny-random`."""

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from playwright.sync_api import Page, expect

from model_service import protocol as proto
from webapp.chat.models import Conversation, Message, conversation_group

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

# Long enough that "stop" has something to stop; the tiny model's context is 256.
LONG_ANSWER = 200
ANSWER = "article.message.model"
TIMEOUT_MS = 90_000

# Records every distinct text the streaming answer shows, as the user would see it.
RECORD_UPDATES = """() => {
  window.seenTexts = [];
  new MutationObserver(() => {
    const el = document.querySelector('article.model.streaming .answer-text');
    const text = el && el.textContent;
    if (text && text !== window.seenTexts.at(-1)) window.seenTexts.push(text);
  }).observe(document.getElementById('messages'),
             {subtree: true, childList: true, characterData: true});
}"""


def open_conversation(page: Page, user, max_new_tokens: int = LONG_ANSWER) -> None:
    conversation = Conversation.objects.create(
        owner=user,
        model_name="tiny-random",
        temperature=1.0,
        max_new_tokens=max_new_tokens,
    )
    page.goto(f"/chat/{conversation.pk}/")
    expect(page.locator("body[data-connected]")).to_have_count(1)


def send(page: Page, text: str) -> None:
    """Sends a message and waits for its answer to show (it is saved with it), so that
    a wait for "nothing streaming" cannot pass before the answer exists."""
    answers = page.locator(ANSWER).count()
    page.fill("#composer-text", text)
    page.click("#send")
    expect(page.locator(ANSWER)).to_have_count(answers + 1, timeout=TIMEOUT_MS)


def wait_until_settled(page: Page, selector: str = ANSWER) -> None:
    expect(page.locator(f"{selector}.streaming")).to_have_count(0, timeout=TIMEOUT_MS)


def test_it_starts_a_conversation_and_streams_the_answer(
    logged_in_page: Page, screenshot
):
    page = logged_in_page
    page.goto("/chat/")
    page.select_option("#id_model_name", "tiny-random")
    page.fill("#id_max_new_tokens", str(LONG_ANSWER))
    page.click("#new-conversation button[type=submit]")
    expect(page.locator("body[data-connected]")).to_have_count(1)
    page.evaluate(RECORD_UPDATES)

    send(page, "Tell me about the sea.")
    expect(page.locator(f"{ANSWER}.streaming")).to_have_count(1)
    screenshot("streaming")
    wait_until_settled(page)
    screenshot("complete")

    seen = page.evaluate("window.seenTexts")
    assert len(seen) >= 3, seen
    # Each update grows the same answer.
    assert all(
        later.startswith(earlier)
        for earlier, later in zip(seen, seen[1:], strict=False)
    )
    answer = Message.objects.get(role=Message.Role.MODEL)
    assert answer.status == Message.Status.COMPLETE
    expect(page.locator(f"{ANSWER}.complete")).to_have_count(1)
    expect(page.locator("article.message.user")).to_have_text(
        re.compile("Tell me about the sea.")
    )


def test_stop_keeps_the_partial_answer(logged_in_page: Page, user, screenshot):
    page = logged_in_page
    open_conversation(page, user)

    send(page, "Go on forever.")
    expect(page.locator(f"{ANSWER}.streaming .answer-text")).not_to_be_empty()
    page.click(f"{ANSWER} button.stop")
    expect(page.locator(f"{ANSWER}.stopped")).to_have_count(1, timeout=TIMEOUT_MS)
    screenshot("stopped")

    answer = Message.objects.get(role=Message.Role.MODEL)
    assert answer.status == Message.Status.STOPPED
    assert 0 < answer.token_count < LONG_ANSWER
    expect(page.locator(f"{ANSWER} .status-label")).to_have_text("Stopped")


def test_regenerate_keeps_both_answers_and_flips_between_them(
    logged_in_page: Page, user, screenshot
):
    page = logged_in_page
    open_conversation(page, user, max_new_tokens=24)
    send(page, "Hello")
    wait_until_settled(page)
    first = Message.objects.get(role=Message.Role.MODEL)

    page.click(f"{ANSWER} button.regenerate")
    expect(page.locator(".sibling-position")).to_have_text("2 / 2")
    wait_until_settled(page)
    second = Message.objects.exclude(pk=first.pk).get(role=Message.Role.MODEL)
    screenshot("second-answer")

    page.click(f"{ANSWER} button.switch.previous")
    expect(page.locator(".sibling-position")).to_have_text("1 / 2")
    expect(page.locator(ANSWER)).to_have_attribute("data-message-id", str(first.pk))
    screenshot("first-answer")
    page.click(f"{ANSWER} button.switch.next")
    expect(page.locator(ANSWER)).to_have_attribute("data-message-id", str(second.pk))


def test_editing_a_message_branches_the_conversation(logged_in_page: Page, user):
    page = logged_in_page
    open_conversation(page, user, max_new_tokens=8)
    send(page, "First version")
    wait_until_settled(page)

    page.click("article.user button.edit")
    page.fill("article.user .edit-form textarea", "Second version")
    page.click("article.user .edit-form button[type=submit]")
    expect(page.locator("article.user .sibling-position")).to_have_text("2 / 2")
    expect(page.locator("article.user .user-text")).to_have_text("Second version")
    wait_until_settled(page)

    page.click("article.user button.switch.previous")
    expect(page.locator("article.user .user-text")).to_have_text("First version")


def test_reloading_mid_answer_shows_it_continuing(
    logged_in_page: Page, user, screenshot
):
    page = logged_in_page
    open_conversation(page, user)
    send(page, "A long story, please.")
    streaming = page.locator(f"{ANSWER}.streaming .answer-text")
    expect(streaming).not_to_be_empty()
    before = streaming.text_content()

    page.reload()
    screenshot("reloaded")
    wait_until_settled(page)

    answer = Message.objects.get(role=Message.Role.MODEL)
    assert answer.status == Message.Status.COMPLETE
    assert answer.content.startswith(before)
    assert len(answer.content) > len(before)
    expect(page.locator(f"{ANSWER}.complete")).to_have_attribute(
        "data-message-id", str(answer.pk)
    )


XSS = (
    "<script>window.pwned = 'script'</script>\n\n"
    "<img src=x onerror=\"window.pwned = 'img'\">\n\n"
    "[link](javascript:window.pwned='link')\n\n"
    "```python\nprint('code')\n```\n\n"
)


def worker_writes(request_id: str, worker_id: str, *pieces: str) -> None:
    """What a generation worker that took the request writes: pieces on its stream."""
    with redis.Redis.from_url(settings.REDIS_URL) as conn:
        conn.hset(
            proto.request_key(request_id),
            mapping={"model": "tiny-random", "worker": worker_id},
        )
        for text in pieces:
            event = {"type": "piece", "text": text, "token_ids": [], "logprobs": []}
            conn.xadd(proto.events_key(request_id), {"event": json.dumps(event)})


def group_send(conversation_id: int, event: dict) -> None:
    """What the persister sends; from another thread, as Playwright's loop runs
    on this one."""
    send = async_to_sync(get_channel_layer().group_send)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(send, conversation_group(conversation_id), event).result()


def test_model_output_with_html_runs_nothing(
    logged_in_page: Page, user, screenshot, generation_worker
):
    """The payload goes where model output goes: the request's stream, the saved row."""
    page = logged_in_page
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    conversation = Conversation.objects.create(owner=user, model_name="tiny-random")
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=XSS
    )
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role=Message.Role.MODEL,
        status=Message.Status.STREAMING,
        content=XSS,
        request_id=uuid.uuid4().hex,
    )
    conversation.current_leaf = answer
    conversation.save()
    worker_writes(answer.request_id, generation_worker, XSS)

    page.goto(f"/chat/{conversation.pk}/")
    expect(page.locator("body[data-connected]")).to_have_count(1)
    expect(page.locator(f"{ANSWER}.streaming .answer-text")).to_contain_text("<script>")
    worker_writes(answer.request_id, generation_worker, XSS)
    expect(page.locator(f"{ANSWER} .answer-text")).to_contain_text(
        re.compile(r"<script>[\s\S]*<script>")
    )
    screenshot("streamed")

    Message.objects.filter(pk=answer.pk).update(
        status=Message.Status.COMPLETE, content=XSS + XSS
    )
    group_send(conversation.pk, {"type": "chat.final", "message_id": answer.pk})
    expect(page.locator(f"{ANSWER}.complete .answer-text")).to_contain_text("<script>")
    screenshot("saved")

    # Code blocks of saved answers get a copy button.
    expect(page.locator(f"{ANSWER} .markdown pre button.copy")).to_have_count(2)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#messages script, #messages img").count() == 0
    assert page.locator('#messages a[href^="javascript"]').count() == 0
