"""The chat pages: lists, ownership, settings and how saved answers are rendered."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import logged_in, make_user
from webapp.chat import services
from webapp.chat.models import Conversation, Message

XSS = (
    "<script>alert(1)</script>\n\n"
    '<img src=x onerror="alert(2)">\n\n'
    "[x](javascript:alert(3))"
)


@pytest.fixture
def owner(db):
    return make_user("olga")


@pytest.fixture
def conversation(owner) -> Conversation:
    return services.create_conversation(owner, model_name="tiny-random", title="Mine")


def add_exchange(conversation: Conversation, question: str, answer: str) -> Message:
    user_message = Message.objects.create(
        conversation=conversation,
        parent=conversation.current_leaf,
        role=Message.Role.USER,
        content=question,
    )
    reply = Message.objects.create(
        conversation=conversation,
        parent=user_message,
        role=Message.Role.MODEL,
        content=answer,
        model_name="tiny-random",
    )
    conversation.current_leaf = reply
    conversation.save()
    return reply


def test_the_list_shows_only_the_users_own_conversations(owner, conversation):
    services.create_conversation(make_user("mallory"), model_name="x", title="Theirs")

    response = logged_in(owner).get(reverse("chat:list"))

    assert response.status_code == 200
    assert b"Mine" in response.content
    assert b"Theirs" not in response.content


def test_anonymous_people_are_sent_to_login(conversation):
    response = Client().get(reverse("chat:detail", args=[conversation.pk]))
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_it_checks_ownership(conversation):
    stranger = logged_in(make_user("mallory"))
    assert (
        stranger.get(reverse("chat:detail", args=[conversation.pk])).status_code == 404
    )
    response = stranger.post(
        reverse("chat:settings", args=[conversation.pk]), {"temperature": 0}
    )
    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.temperature == 0.7


def test_it_saves_valid_settings_and_rejects_bad_ones(owner, conversation):
    client = logged_in(owner)
    url = reverse("chat:settings", args=[conversation.pk])

    client.post(url, {"temperature": 0.2, "top_p": 0.5, "max_new_tokens": 64})
    conversation.refresh_from_db()
    assert (conversation.temperature, conversation.top_p) == (0.2, 0.5)

    response = client.post(
        url, {"temperature": 9, "top_p": 0.5, "max_new_tokens": 64}, follow=True
    )
    assert b"Settings not saved" in response.content
    conversation.refresh_from_db()
    assert conversation.temperature == 0.2


def test_new_conversations_pick_a_served_model(owner, generation_worker):
    client = logged_in(owner)
    form = {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 32}

    refused = client.post(reverse("chat:create"), {**form, "model_name": "nope"})
    assert refused.status_code == 400
    assert not Conversation.objects.exists()

    response = client.post(
        reverse("chat:create"), {**form, "model_name": "tiny-random"}
    )
    conversation = Conversation.objects.get()
    assert response["Location"] == reverse("chat:detail", args=[conversation.pk])
    assert (conversation.owner, conversation.model_name) == (owner, "tiny-random")


def test_a_saved_answer_is_markdown_and_model_html_stays_text(owner, conversation):
    add_exchange(
        conversation, "code please", "Here:\n\n```python\nprint(1)\n```\n\n" + XSS
    )

    response = logged_in(owner).get(reverse("chat:detail", args=[conversation.pk]))

    html = response.content.decode()
    assert '<pre><code class="language-python">print(1)' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html
    assert "<img" not in html
    assert 'href="javascript:' not in html


def test_the_page_shows_dropped_turns(owner, conversation):
    answer = add_exchange(conversation, "q", "a")
    Message.objects.filter(pk=answer.pk).update(dropped_turns=4)

    response = logged_in(owner).get(reverse("chat:detail", args=[conversation.pk]))

    assert b"the 4 oldest turns were left out" in response.content


def test_the_conversation_page_costs_the_same_queries_however_long(
    owner, conversation, django_assert_num_queries
):
    client = logged_in(owner)
    url = reverse("chat:detail", args=[conversation.pk])
    for index in range(5):
        add_exchange(conversation, f"question {index}", f"answer {index}")
    # session, user, the user's roles (the header's links), conversation, messages
    with django_assert_num_queries(5):
        assert client.get(url).status_code == 200
