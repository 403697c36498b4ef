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
from webapp.core.text import text_problem

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
    for message in messages.values():  # Compare's first answers, without a query
        if message.compared_with_id:
            message.compared_with = messages[message.compared_with_id]
    leaf = messages.get(conversation.current_leaf_id)
    return [
        BranchItem(message, sorted(children[message.parent_id]))
        for message in _path(messages, leaf)
    ]


def branch_context(conversation: Conversation) -> dict:
    """What `chat/_branch.html` renders: the branch, and the vote buttons of a
    comparison on it."""
    from webapp.ratings.queue import CHOICES

    return {
        "branch": current_branch(conversation),
        "conversation": conversation,
        "vote_choices": CHOICES.items(),
    }


def _check_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValidationError("The message is empty.")
    if problem := text_problem(text):
        raise ValidationError(f"The message holds {problem}.")
    limit = max_message_chars()
    if len(text) > limit:
        raise ValidationError(
            f"The message is {len(text)} characters long; the limit is {limit}."
        )
    return text


def _new_answer(
    conversation: Conversation, history: list[Message], **fields
) -> Message:
    """Saves a streaming answer after `history` (its branch, oldest first) and shows
    it; after the commit it is submitted, its prompt built from `history` as it is in
    hand: nothing is read again on the way to the generation worker. `fields` set
    more of the answer (another model, for Compare)."""
    answer = Message.objects.create(
        conversation=conversation,
        parent=history[-1],
        role=Message.Role.MODEL,
        status=Message.Status.STREAMING,
        model_name=fields.pop("model_name", conversation.model_name),
        temperature=conversation.temperature,
        top_p=conversation.top_p,
        max_new_tokens=conversation.max_new_tokens,
        seed=secrets.randbelow(2**31),
        request_id=uuid.uuid4().hex,
        **fields,
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


def compare(answer: Message, model_name: str) -> Message:
    """Asks `model_name` (the same model gets another seed) for a second answer beside
    `answer`; the two are shown blind, in random order, until the user votes."""
    model_name = model_name.strip()
    if not answer.is_answer or answer.status == Message.Status.STREAMING:
        raise ValidationError("Compare a finished answer.")
    if answer.awaits_vote:
        raise ValidationError("Vote on this comparison first.")
    if not model_name or len(model_name) > 200:
        raise ValidationError("Choose a model to compare with.")
    with transaction.atomic():
        messages = _messages(answer.conversation)
        history = _path(messages, messages[answer.parent_id])
        return _new_answer(
            answer.conversation,
            history,
            model_name=model_name,
            compared_with=answer,
            compared_left=secrets.randbelow(2) == 0,
        )


def vote(second: Message, choice: int) -> None:
    """The user's 7-point vote (1 = left much better) on a comparison, into the
    rating store; the branch goes on from the answer they preferred."""
    from webapp.ratings.chat_votes import record_vote

    if not second.awaits_vote:
        raise ValidationError("There is no comparison to vote on here.")
    if choice not in range(1, 8):
        raise ValidationError("Choose one of the 7 points.")
    first = second.compared_with
    finished = (Message.Status.COMPLETE, Message.Status.STOPPED)
    if first.status not in finished or second.status not in finished:
        raise ValidationError("Wait for both answers to finish before voting.")
    conversation = second.conversation
    with transaction.atomic():
        messages = _messages(conversation)
        *before, question = _path(messages, messages[second.parent_id])
        record_vote(
            conversation.owner,
            key=f"chat-message-{second.pk}",
            history=[{"role": m.role, "content": m.content} for m in before],
            question=question.content,
            first=(first.model_name, first.content),
            second=(second.model_name, second.content),
            first_left=second.compared_left,
            choice=choice,
        )
        Message.objects.filter(pk=second.pk).update(vote=choice)
        shown = (first, second) if second.compared_left else (second, first)
        if choice != 4:
            _show(conversation, shown[0] if choice < 4 else shown[1])
