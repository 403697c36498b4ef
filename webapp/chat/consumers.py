"""The chat page's WebSocket: user actions in, the current branch and tokens out.

Messages from the browser: `{"action": "send", "text"}`, `{"action": "edit",
"message_id", "text"}`, `{"action": "regenerate" | "switch" | "stop", "message_id"}`.

Messages to the browser:
- `{"type": "branch", "html", "streaming": {id: text}}`: the messages on the current
  branch, and the exact text so far of the answers still streaming;
- `{"type": "token", "message_id", "offset", "text"}`: `text` goes at `offset` (UTF-16
  units) of that answer; the browser skips what it already has;
- `{"type": "error", "message"}`: a rejected action (nothing was saved).

Before a branch is read from the database the consumer joins the groups of its streaming
answers, and the generation task saves text before it sends it, so the branch plus the
tokens that follow never leave a gap.
"""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.template.loader import render_to_string

from webapp.chat import services
from webapp.chat.models import Conversation, Message, answer_group


@database_sync_to_async
def owned_conversation(user, conversation_id: int) -> Conversation | None:
    return Conversation.objects.filter(pk=conversation_id, owner=user).first()


@database_sync_to_async
def streaming_answer_ids(conversation_id: int) -> set[int]:
    return set(
        Message.objects.filter(
            conversation_id=conversation_id, status=Message.Status.STREAMING
        ).values_list("pk", flat=True)
    )


@database_sync_to_async
def branch_state(conversation_id: int) -> dict:
    conversation = Conversation.objects.get(pk=conversation_id)
    branch = services.current_branch(conversation)
    return {
        "type": "branch",
        "html": render_to_string(
            "chat/_branch.html", {"branch": branch, "conversation": conversation}
        ),
        "streaming": {
            item.message.pk: item.message.content
            for item in branch
            if item.message.status == Message.Status.STREAMING
        },
    }


@database_sync_to_async
def perform(conversation_id: int, content: dict) -> Message | None:
    """Runs one browser action; returns the answer it started, if any."""
    conversation = Conversation.objects.get(pk=conversation_id)
    action = content.get("action")
    if action == "send":
        return services.send_message(conversation, str(content.get("text", "")))
    message = conversation.messages.get(pk=int(content.get("message_id", 0)))
    if action == "edit":
        return services.edit_message(message, str(content.get("text", "")))
    if action == "regenerate":
        return services.regenerate(message)
    if action == "switch":
        services.switch_to(message)
    elif action == "stop":
        services.request_stop(message)
    else:
        raise ValidationError(f"Unknown action {action!r}.")
    return None


@database_sync_to_async
def fail_unclaimed(conversation_id: int) -> list[int]:
    return services.fail_unclaimed(Conversation.objects.get(pk=conversation_id))


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.joined: set[int] = set()
        self.watchdogs: set[asyncio.Task] = set()
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4401)
            return
        if await owned_conversation(user, self.conversation_id) is None:
            await self.close(code=4404)
            return
        await self.accept()
        await self.send_state()

    async def disconnect(self, code: int) -> None:
        for task in self.watchdogs:
            task.cancel()
        for answer_id in self.joined:
            await self.channel_layer.group_discard(
                answer_group(answer_id), self.channel_name
            )

    async def send_state(self) -> None:
        """Joins the streaming answers' groups, then sends the branch as saved."""
        for answer_id in await streaming_answer_ids(self.conversation_id) - self.joined:
            await self.channel_layer.group_add(
                answer_group(answer_id), self.channel_name
            )
            self.joined.add(answer_id)
        await self.send_json(await branch_state(self.conversation_id))

    async def receive_json(self, content: dict, **kwargs) -> None:
        try:
            answer = await perform(self.conversation_id, content)
        except ValidationError as exc:
            await self.send_json({"type": "error", "message": " ".join(exc.messages)})
            return
        except (ObjectDoesNotExist, TypeError, ValueError):
            await self.send_json({"type": "error", "message": "No such message."})
            return
        if answer is not None:
            self.watch_claim()
        await self.send_state()

    def watch_claim(self) -> None:
        """Fails the answer if no generation task has claimed it in time."""

        async def watch() -> None:
            await asyncio.sleep(services.CLAIM_TIMEOUT_S + 0.5)
            for answer_id in await fail_unclaimed(self.conversation_id):
                await self.channel_layer.group_send(
                    answer_group(answer_id),
                    {"type": "chat.final", "message_id": answer_id},
                )

        task = asyncio.create_task(watch())
        self.watchdogs.add(task)
        task.add_done_callback(self.watchdogs.discard)

    async def chat_token(self, event: dict) -> None:
        await self.send_json(
            {
                "type": "token",
                "message_id": event["message_id"],
                "offset": event["offset"],
                "text": event["text"],
            }
        )

    async def chat_final(self, event: dict) -> None:
        answer_id = event["message_id"]
        await self.channel_layer.group_discard(
            answer_group(answer_id), self.channel_name
        )
        self.joined.discard(answer_id)
        await self.send_state()
