"""What users do to conversations: every write goes through one of these functions.

Each function checks its input and changes the database in one transaction; a rejected
message leaves nothing behind. A new answer gets its generation request id with its row,
and only after the commit is it submitted to the generation worker, so the user's
message is saved before generation starts and nobody looks for a row that is not
there. Saving the answer when it ends is the persister's (`webapp.chat.answers`).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404

from webapp.chat.answers import cancel_request, submit_answer
from webapp.chat.models import Conversation, Message

log = logging.getLogger(__name__)


def max_message_chars() -> int:
    return settings.CHAT_MAX_MESSAGE_CHARS


def get_conversation(user, pk: int) -> Conversation:
    """The user's own conversation; anybody else's is a 404, as if it did not exist."""
    return get_object_or_404(Conversation, pk=pk, owner=user)


def create_conversation(user, **fields) -> Conversation:
    return Conversation.objects.create(owner=user, **fields)


@dataclasses.dataclass(frozen=True)
class BranchItem:
    """One message on the current branch, with its place among its siblings."""

    message: Message
    sibling_ids: list[int]

    @property
    def position(self) -> int:
        return self.sibling_ids.index(self.message.pk) + 1

    @property
    def previous_id(self) -> int | None:
        index = self.position - 1
        return self.sibling_ids[index - 1] if index > 0 else None

    @property
    def next_id(self) -> int | None:
        index = self.position - 1
        return (
            self.sibling_ids[index + 1] if index + 1 < len(self.sibling_ids) else None
        )


def _messages(conversation: Conversation) -> dict[int, Message]:
    """All the conversation's messages by id, in one query."""
    return {m.pk: m for m in conversation.messages.all()}


def _path(messages: dict[int, Message], leaf: Message | None) -> list[Message]:
    """From the first message down to `leaf`, oldest first."""
    path = []
    while leaf is not None:
        path.append(leaf)
        leaf = messages.get(leaf.parent_id)
    return path[::-1]


def current_branch(conversation: Conversation) -> list[BranchItem]:
    """The path from the first message to the current leaf, in one query."""
    messages = _messages(conversation)
    children: dict[int | None, list[int]] = {}
    for message in messages.values():
        children.setdefault(message.parent_id, []).append(message.pk)
    leaf = messages.get(conversation.current_leaf_id)
    return [
        BranchItem(message, sorted(children[message.parent_id]))
        for message in _path(messages, leaf)
    ]


def _check_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValidationError("The message is empty.")
    limit = max_message_chars()
    if len(text) > limit:
        raise ValidationError(
            f"The message is {len(text)} characters long; the limit is {limit}."
        )
    return text


def _new_answer(conversation: Conversation, history: list[Message]) -> Message:
    """Saves a streaming answer after `history` (its branch, oldest first) and shows
    it; after the commit it is submitted, its prompt built from `history` as it is in
    hand: nothing is read again on the way to the generation worker."""
    answer = Message.objects.create(
        conversation=conversation,
        parent=history[-1],
        role=Message.Role.MODEL,
        status=Message.Status.STREAMING,
        model_name=conversation.model_name,
        temperature=conversation.temperature,
        top_p=conversation.top_p,
        max_new_tokens=conversation.max_new_tokens,
        seed=secrets.randbelow(2**31),
        request_id=uuid.uuid4().hex,
    )
    _show(conversation, answer)
    transaction.on_commit(lambda: _start(answer, history))
    return answer


def _start(answer: Message, history: list[Message]) -> None:
    """Submits the answer; a refusal fails it now."""
    try:
        error = submit_answer(answer, history)
    except Exception as exc:  # whatever happens, the answer must not stay "streaming"
        log.exception("answer %s could not be submitted", answer.pk)
        error = f"Generation failed: {type(exc).__name__}: {exc}"
    if error is not None:
        Message.objects.filter(pk=answer.pk).update(
            status=Message.Status.FAILED, error=error
        )


def _show(conversation: Conversation, leaf: Message) -> None:
    conversation.current_leaf = leaf
    # The title too, so that a first message names the conversation in this update.
    conversation.save(update_fields=["current_leaf", "title", "updated_at"])


def _add_user_message(
    conversation: Conversation,
    messages: dict[int, Message],
    parent: Message | None,
    text: str,
) -> Message:
    """Saves `text` under `parent` and starts its answer; `messages` are all the
    conversation's, read in the same transaction."""
    message = Message.objects.create(
        conversation=conversation, parent=parent, role=Message.Role.USER, content=text
    )
    if parent is None and not messages:
        conversation.title = text[:60]
    return _new_answer(conversation, [*_path(messages, parent), message])


def send_message(conversation: Conversation, text: str) -> Message:
    """Saves the user's message under the current leaf and starts its answer."""
    text = _check_text(text)
    with transaction.atomic():
        messages = _messages(conversation)
        leaf = messages.get(conversation.current_leaf_id)
        if leaf is not None and leaf.status == Message.Status.STREAMING:
            raise ValidationError("Wait for the answer to finish, or stop it, first.")
        return _add_user_message(conversation, messages, leaf, text)


def edit_message(message: Message, text: str) -> Message:
    """Branches: a new user message beside `message`, with a new answer."""
    if message.role != Message.Role.USER:
        raise ValidationError("Only your own messages can be edited.")
    text = _check_text(text)
    with transaction.atomic():
        messages = _messages(message.conversation)
        parent = messages.get(message.parent_id)
        return _add_user_message(message.conversation, messages, parent, text)


def regenerate(answer: Message) -> Message:
    """A new sibling answer to the same user message; the old one is kept."""
    if not answer.is_answer:
        raise ValidationError("Only answers can be regenerated.")
    with transaction.atomic():
        messages = _messages(answer.conversation)
        history = _path(messages, messages[answer.parent_id])
        return _new_answer(answer.conversation, history)


def switch_to(message: Message) -> None:
    """Shows the branch through `message`, down to its most recent descendant."""
    leaf = message
    while (child := leaf.children.order_by("-created_at", "-id").first()) is not None:
        leaf = child
    _show(message.conversation, leaf)


def request_stop(answer: Message) -> None:
    """Asks the worker to stop; the answer is saved with its partial text.

    The request id is there from the answer's creation; a stop that comes before the
    worker took the request is honoured when it takes it.
    """
    if answer.status == Message.Status.STREAMING and answer.request_id:
        cancel_request(answer.request_id)
