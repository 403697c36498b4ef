"""Chat services: what a message send, an edit, a regenerate and a switch change."""

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404

from tests.conftest import make_user
from webapp.chat import services
from webapp.chat.models import Conversation, Message


@pytest.fixture
def owner(db):
    return make_user("olga")


@pytest.fixture
def conversation(owner) -> Conversation:
    return services.create_conversation(owner, model_name="tiny-random")


def send(conversation: Conversation, text: str, capture) -> Message:
    with capture(execute=False) as callbacks:
        answer = services.send_message(conversation, text)
    assert len(callbacks) == 1  # the submission, after the commit
    conversation.refresh_from_db()
    return answer


def test_it_saves_the_message_and_a_streaming_answer(
    conversation, django_capture_on_commit_callbacks
):
    answer = send(conversation, "  Hello there  ", django_capture_on_commit_callbacks)

    assert answer.status == Message.Status.STREAMING
    assert answer.parent.content == "Hello there"
    assert answer.parent.role == Message.Role.USER
    assert (answer.model_name, answer.temperature, answer.top_p) == (
        "tiny-random",
        conversation.temperature,
        conversation.top_p,
    )
    assert answer.seed is not None
    assert len(answer.request_id) == 32  # chosen with the row, submitted after commit
    assert conversation.current_leaf == answer
    assert conversation.title == "Hello there"


@pytest.mark.parametrize("text", ["", "   \n "])
def test_it_rejects_an_empty_message_and_saves_nothing(conversation, text):
    with pytest.raises(ValidationError, match="empty"):
        services.send_message(conversation, text)
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "text, error", [("a\x00b", "a NUL character"), ("a\ud800b", "a lone surrogate")]
)
def test_it_rejects_text_no_database_column_holds(conversation, text, error):
    # Both arrive over the WebSocket as JSON escapes. PostgreSQL refuses NUL, which
    # SQLite would store; neither stores a lone surrogate.
    with pytest.raises(ValidationError, match=error):
        services.send_message(conversation, text)
    assert not Message.objects.exists()


def test_it_rejects_a_message_over_the_configured_length(conversation, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    with pytest.raises(ValidationError, match="limit is 10"):
        services.send_message(conversation, "x" * 11)
    assert not Message.objects.exists()


def finish(answer: Message) -> None:
    Message.objects.filter(pk=answer.pk).update(status=Message.Status.COMPLETE)


def test_it_refuses_a_message_while_the_last_answer_streams(
    conversation, django_capture_on_commit_callbacks
):
    send(conversation, "one", django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError, match="Wait for the answer"):
        services.send_message(conversation, "two")
    assert Message.objects.count() == 2


def test_it_answers_each_message_under_the_previous_answer(
    conversation, django_capture_on_commit_callbacks
):
    first = send(conversation, "one", django_capture_on_commit_callbacks)
    finish(first)
    second = send(conversation, "two", django_capture_on_commit_callbacks)

    branch = services.current_branch(conversation)
    assert [item.message for item in branch] == [
        first.parent,
        first,
        second.parent,
        second,
    ]


def test_a_message_reaches_the_worker_after_one_read_of_the_messages(
    conversation,
    generation_worker,
    django_capture_on_commit_callbacks,
    django_assert_num_queries,
):
    """Every query here is on the way to the first token."""
    finish(send(conversation, "one", django_capture_on_commit_callbacks))
    fresh = Conversation.objects.get(pk=conversation.pk)  # as the WebSocket has it
    # The savepoint, the messages, the two new rows, the new leaf, the release; the
    # prompt is built from the messages already read, then submitted.
    with (
        django_assert_num_queries(6),
        django_capture_on_commit_callbacks(execute=True),
    ):
        answer = services.send_message(fresh, "two")
    answer.refresh_from_db()
    assert (answer.status, answer.error) == (Message.Status.STREAMING, "")


def test_regenerate_adds_a_sibling_and_keeps_the_old_answer(
    conversation, django_capture_on_commit_callbacks
):
    old = send(conversation, "hi", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        new = services.regenerate(old)
    assert len(callbacks) == 1

    conversation.refresh_from_db()
    assert new.parent == old.parent
    assert new.seed is not None
    assert Message.objects.filter(pk=old.pk).exists()
    last = services.current_branch(conversation)[-1]
    assert last.message == new
    assert (last.position, last.sibling_ids, last.previous_id) == (
        2,
        [old.pk, new.pk],
        old.pk,
    )


def test_switch_to_shows_the_siblings_branch_down_to_its_newest_leaf(
    conversation, django_capture_on_commit_callbacks
):
    first = send(conversation, "hi", django_capture_on_commit_callbacks)
    finish(first)
    follow_up = send(conversation, "more", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        services.regenerate(first)

    services.switch_to(first)

    conversation.refresh_from_db()
    assert conversation.current_leaf == follow_up


def test_editing_a_message_branches_the_conversation(
    conversation, django_capture_on_commit_callbacks
):
    first = send(conversation, "hi", django_capture_on_commit_callbacks)
    finish(first)
    send(conversation, "more", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        edited_answer = services.edit_message(first.parent, "hello instead")

    conversation.refresh_from_db()
    branch = [item.message for item in services.current_branch(conversation)]
    assert [m.content for m in branch] == ["hello instead", ""]
    assert branch[0].parent is None
    assert branch[1] == edited_answer
    assert Message.objects.count() == 6  # the old branch is kept


def test_only_user_messages_can_be_edited_and_only_answers_regenerated(
    conversation, django_capture_on_commit_callbacks
):
    answer = send(conversation, "hi", django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError):
        services.edit_message(answer, "x")
    with pytest.raises(ValidationError):
        services.regenerate(answer.parent)
    assert Message.objects.count() == 2


def test_the_branch_is_read_in_one_query(
    conversation, django_capture_on_commit_callbacks, django_assert_num_queries
):
    for text in ["a", "b", "c"]:
        finish(send(conversation, text, django_capture_on_commit_callbacks))
    with django_assert_num_queries(1):
        assert len(services.current_branch(conversation)) == 6


def test_it_checks_ownership(conversation):
    with pytest.raises(Http404):
        services.get_conversation(make_user("mallory"), conversation.pk)
