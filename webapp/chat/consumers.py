"""The chat page's WebSocket: user actions in, the current branch and tokens out.

Messages from the browser: `{"action": "send", "text"}`, `{"action": "edit",
"message_id", "text"}`, `{"action": "regenerate" | "switch" | "stop", "message_id"}`,
`{"action": "compare", "message_id", "model"}` (a second answer beside an answer,
shown blind) and `{"action": "vote", "message_id", "choice"}` (on the second answer).

Messages to the browser:
- `{"type": "branch", "html", "streaming": {id: text}}`: the messages on the current
  branch, and the text saved so far of the answers still streaming;
- `{"type": "token", "message_id", "offset", "text"}`: `text` goes at `offset` (UTF-16
  units) of that answer; the browser skips what it already has;
- `{"type": "queued", "message_id", "ahead"}`: the answer waits for the model with
  `ahead` requests before it (sent about every second while it waits);
- `{"type": "error", "message"}`: a rejected action (nothing was saved).

Tokens come straight from the request stream in Redis of each streaming answer on the
branch, which the generation worker writes (`model_service.client`): nothing between
the worker and the page waits for a save. A stream is read from its start, so a page
opened mid-answer replays it whole. The saved text that a branch carries may lag the
stream; after each branch the consumer sends again what it has read of each answer, so
no gap stays. An answer's end comes through the conversation's channel-layer group,
joined before the first branch is read, once the persister saved it
(`webapp.chat.answers`); a reader that learns its answer's request failed without an
end of its own (its worker died) settles the answer itself, at once.

An action and the branch after it are one trip to the database thread: during an
answer's prefill, every millisecond of CPU taken here is taken from the model.
"""

from __future__ import annotations

import asyncio
import dataclasses

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.template.loader import render_to_string

from webapp.chat import answers, services
from webapp.chat.models import Conversation, Message, conversation_group
from webapp.core import serving


def utf16_length(text: str) -> int:
    """Offsets sent to the browser count UTF-16 code units, as JavaScript strings do."""
    return len(text.encode("utf-16-le")) // 2


@database_sync_to_async
def owned_conversation(user, conversation_id: int) -> Conversation | None:
    return Conversation.objects.filter(pk=conversation_id, owner=user).first()


@dataclasses.dataclass(frozen=True)
class State:
    """The branch message for the page, and the generation request of each answer
    streaming on the branch (answer id -> request id)."""

    message: dict
    requests: dict[int, str]


def read_state(conversation: Conversation) -> State:
    context = services.branch_context(conversation)
    streaming = [
        item.message
        for item in context["branch"]
        if item.message.status == Message.Status.STREAMING
    ]
    html = render_to_string("chat/_branch.html", context)
    return State(
        message={
            "type": "branch",
            "html": html,
            "streaming": {m.pk: m.content for m in streaming},
        },
        requests={m.pk: m.request_id for m in streaming},
    )


@database_sync_to_async
def branch_state(conversation_id: int) -> State:
    return read_state(Conversation.objects.get(pk=conversation_id))


@database_sync_to_async
def perform(conversation_id: int, content: dict) -> State:
    """Runs one browser action; returns the state after it."""
    conversation = Conversation.objects.get(pk=conversation_id)
    act(conversation, content)
    # The actions keep `conversation` up to date (its leaf): no need to read it again.
    return read_state(conversation)


def act(conversation: Conversation, content: dict) -> Message | None:
    action = content.get("action")
    if action == "send":
        return services.send_message(conversation, str(content.get("text", "")))
    message = conversation.messages.get(pk=int(content.get("message_id", 0)))
    if action == "edit":
        return services.edit_message(message, str(content.get("text", "")))
    if action == "regenerate":
        return services.regenerate(message)
    if action == "compare":
        return services.compare(message, str(content.get("model", "")))
    if action == "vote":
        services.vote(message, int(content.get("choice", 0)))
    elif action == "switch":
        services.switch_to(message)
    elif action == "stop":
        services.request_stop(message)
    else:
        raise ValidationError(f"Unknown action {action!r}.")
    return None


@database_sync_to_async
def settle(answer_id: int) -> list[int]:
    return answers.settle(Message.objects.filter(pk=answer_id))


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.group = conversation_group(self.conversation_id)
        # Per streaming answer: the task reading its stream, and the text read so far.
        self.readers: dict[int, asyncio.Task] = {}
        self.streamed: dict[int, str] = {}
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4401)
            return
        conversation = await owned_conversation(user, self.conversation_id)
        if conversation is None:
            await self.close(code=4404)
            return
        self.generation = serving.async_client()
        # The first message of a process must not wait seconds for its tokenizer.
        asyncio.get_running_loop().run_in_executor(
            None, serving.warm_up, conversation.model_name
        )
        # Joined before the first branch is read: an answer that ends after that read
        # is announced here, one that ended before it is in the branch as saved.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_state(await branch_state(self.conversation_id))

    async def dispatch(self, message: dict) -> None:
        """Runs the message's handler, without Channels' check for stale database
        connections first: that check is a trip to the database thread before every
        message (about 2 ms from the frame's arrival to `receive_json`, measured), and
        every query here runs through `database_sync_to_async`, which makes the same
        check itself in the thread that queries."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        tasks = list(self.readers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def send_state(self, state: State) -> None:
        """Sends the branch as saved, then what has been read of each answer streaming
        on it, or starts reading it."""
        await self.send_json(state.message)
        for answer_id, request_id in state.requests.items():
            if answer_id in self.readers:
                await self.send_token(answer_id, 0, self.streamed[answer_id])
            elif request_id:
                self.streamed[answer_id] = ""
                self.readers[answer_id] = asyncio.create_task(
                    self.follow(answer_id, request_id)
                )

    async def follow(self, answer_id: int, request_id: str) -> None:
        """Sends the answer's pieces as the worker writes them, from the first, and
        its place in the queue while it waits."""
        async for event in self.generation.stream(request_id, queue_updates=True):
            if event["type"] == "queued":
                await self.send_json(
                    {"type": "queued", "message_id": answer_id, "ahead": event["ahead"]}
                )
            elif event["type"] == "piece":
                offset = utf16_length(self.streamed[answer_id])
                self.streamed[answer_id] += event["text"]
                await self.send_token(answer_id, offset, event["text"])
            elif event["type"] == "error":
                await settle(answer_id)  # its end, saved, comes as `chat.final`

    async def send_token(self, answer_id: int, offset: int, text: str) -> None:
        if text:
            await self.send_json(
                {
                    "type": "token",
                    "message_id": answer_id,
                    "offset": offset,
                    "text": text,
                }
            )

    async def receive_json(self, content: dict, **kwargs) -> None:
        try:
            state = await perform(self.conversation_id, content)
        except ValidationError as exc:
            await self.send_json({"type": "error", "message": " ".join(exc.messages)})
            return
        except (ObjectDoesNotExist, TypeError, ValueError):
            await self.send_json({"type": "error", "message": "No such message."})
            return
        await self.send_state(state)

    async def chat_final(self, event: dict) -> None:
        answer_id = event["message_id"]
        if (reader := self.readers.pop(answer_id, None)) is not None:
            reader.cancel()
        self.streamed.pop(answer_id, None)
        await self.send_state(await branch_state(self.conversation_id))
