"""What a rater sees of a task, for the rater page and the JSON API alike.

This is where blindness is kept: a task is shown as its assignment's token, the prompt
with its earlier turns, the two answers' texts by side, the campaign's guidelines and
the lease's end. No model name, campaign name, answer id or item id leaves here.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

from webapp.ratings import queue
from webapp.ratings.models import Assignment, Item

# A submit sooner than this per word of both answers is too fast to have read them.
SECONDS_PER_WORD = 1 / 20
MIN_SECONDS = 2


@dataclasses.dataclass(frozen=True)
class ShownTask:
    token: str
    prompt: str
    history: list[dict[str, str]]
    left: str
    right: str
    guidelines: str
    expires_at: datetime.datetime

    @property
    def min_seconds(self) -> int:
        """The least time in which both answers can have been read."""
        words = len(self.left.split()) + len(self.right.split())
        return max(MIN_SECONDS, math.ceil(words * SECONDS_PER_WORD))

    def as_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "prompt": self.prompt,
            "history": self.history,
            "left": self.left,
            "right": self.right,
            "guidelines": self.guidelines,
            "expires_at": self.expires_at.isoformat(),
            "choices": {str(value): label for value, label in queue.CHOICES.items()},
            "skip_reasons": queue.SKIP_REASONS,
        }


def shown_task(assignment: Assignment) -> ShownTask:
    """The assignment as its rater sees it (one query, loading only shown fields)."""
    item = (
        Item.objects.select_related("prompt", "answer_a", "answer_b", "campaign")
        .only(
            "prompt__text",
            "prompt__history",
            "answer_a__text",
            "answer_b__text",
            "campaign__guidelines",
        )
        .get(pk=assignment.item_id)
    )
    left, right = (
        (item.answer_a, item.answer_b)
        if assignment.left == "a"
        else (item.answer_b, item.answer_a)
    )
    return ShownTask(
        token=str(assignment.token),
        prompt=item.prompt.text,
        history=[
            {"role": turn["role"], "content": turn["content"]}
            for turn in item.prompt.history
        ],
        left=left.text,
        right=right.text,
        guidelines=item.campaign.guidelines,
        expires_at=assignment.expires_at,
    )
