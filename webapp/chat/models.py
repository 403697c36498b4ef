"""Conversations as trees of messages.

Every message points at its parent; regenerating an answer or editing a user message
adds a sibling instead of overwriting, so nothing a user saw is ever lost. The
conversation remembers the leaf of the branch the user looks at; the page shows the path
from the root to that leaf.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def conversation_group(conversation_id: int) -> str:
    """The channel-layer group of the pages open on a conversation: the ends of its
    answers go there."""
    return f"chat.conversation.{conversation_id}"


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, default="New conversation")
    model_name = models.CharField(max_length=200)
    temperature = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    top_p = models.FloatField(
        default=0.95, validators=[MinValueValidator(0.01), MaxValueValidator(1.0)]
    )
    max_new_tokens = models.PositiveIntegerField(
        default=256, validators=[MinValueValidator(1), MaxValueValidator(4096)]
    )
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        MODEL = "model"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        FAILED = "failed"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.COMPLETE
    )
    error = models.TextField(blank=True)
    # What produced an answer, so it can be reproduced (empty on user messages).
    model_name = models.CharField(max_length=200, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    max_new_tokens = models.PositiveIntegerField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    # The generation request (chosen with the row, submitted after the commit); the
    # persister finds the answer by it when the request ends.
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    token_count = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=20, blank=True)
    # How many of the oldest turns did not fit the model's context for this answer.
    dropped_turns = models.PositiveIntegerField(default=0)
    # Compare: this answer was asked for beside `compared_with` (a sibling), shown
    # blind, `compared_with` on the left or not; `vote` is the user's 7-point choice
    # as shown (1 = left much better), null until they vote.
    compared_with = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    compared_left = models.BooleanField(null=True, blank=True)
    vote = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def is_answer(self) -> bool:
        return self.role == self.Role.MODEL

    @property
    def awaits_vote(self) -> bool:
        """A Compare answer shown blind beside its first answer until the vote."""
        return self.compared_with_id is not None and self.vote is None

    @property
    def compared_pair(self) -> tuple[Message, Message]:
        """The two answers of a comparison as shown: (left, right)."""
        first = self.compared_with
        return (first, self) if self.compared_left else (self, first)
