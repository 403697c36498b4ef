"""A campaign's ratings as preference pairs, in TRL's format, for reward models.

One JSON object a line, conversational form:
`{"prompt": [{"role": "user", "content"}], "chosen": [{"role": "assistant", ...}],
"rejected": [...], "margin": ...}` plus provenance: the campaign, both models, the
side each was shown on, a salted hash of the rater, active seconds, gold and repeat
flags, prompt id and category. `margin` is the score's strength over 3 (1/3 slightly,
2/3 better, 1 much better), as Llama 2's reward model used its raters' strengths.
`chosen_truncated` / `rejected_truncated` mark an answer cut at its token budget.
Ties are dropped by default or kept with `"label": 0.5`; `majority=True` writes one line
per item, from the mean of its ratings, instead of one per rating.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import IO, Any

from django.conf import settings
from django.db.models import Avg, Count

from webapp.ratings.models import Campaign, Item, Rating

TIES = ("drop", "label")


def rater_hash(name: str) -> str:
    """The rater, unrecognizable outside this deployment (salted with its secret)."""
    salted = f"{settings.SECRET_KEY}:preferences:{name}".encode()
    return hashlib.sha256(salted).hexdigest()[:16]


def _prompt(item: Item) -> list[dict[str, str]]:
    history = [
        {
            "role": "assistant" if t["role"] == "model" else t["role"],
            "content": t["content"],
        }
        for t in item.prompt.history
    ]
    return [*history, {"role": "user", "content": item.prompt.text}]


def _pair(item: Item, score: float, ties: str) -> dict[str, Any] | None:
    """The pair's columns for a score from A's side; None for a tie dropped."""
    if score == 0 and ties == "drop":
        return None
    a_wins = score >= 0
    chosen, rejected = (
        (item.answer_a, item.answer_b) if a_wins else (item.answer_b, item.answer_a)
    )
    line = {
        "prompt": _prompt(item),
        "chosen": [{"role": "assistant", "content": chosen.text}],
        "rejected": [{"role": "assistant", "content": rejected.text}],
        "margin": round(abs(score) / 3, 4),
        # Cut at the token budget: a reward model reads such an answer without its
        # end of turn, as a policy's sample that ran out of tokens looks.
        "chosen_truncated": chosen.finish_reason == "length",
        "rejected_truncated": rejected.finish_reason == "length",
        "model_chosen": chosen.model,
        "model_rejected": rejected.model,
        "model_a": item.answer_a.model,
        "model_b": item.answer_b.model,
        "prompt_id": item.prompt.external_id,
        "category": item.prompt.category,
        "gold": bool(item.gold),
    }
    if score == 0:
        line["label"] = 0.5
    return line


def preference_lines(
    campaign: Campaign, *, ties: str = "drop", majority: bool = False
) -> Iterator[dict[str, Any]]:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}")
    items = Item.objects.filter(campaign=campaign).select_related(
        "prompt", "answer_a", "answer_b"
    )
    if majority:
        means = items.filter(ratings__repeat=False).annotate(
            mean=Avg("ratings__score"), n=Count("ratings")
        )
        for item in means.iterator(chunk_size=500):
            if (line := _pair(item, item.mean, ties)) is not None:
                yield {**line, "campaign": campaign.name, "ratings": item.n}
        return
    ratings = (
        Rating.objects.filter(item__campaign=campaign)
        .select_related("item__prompt", "item__answer_a", "item__answer_b", "rater")
        .order_by("pk")
    )
    for rating in ratings.iterator(chunk_size=2000):
        line = _pair(rating.item, rating.score, ties)
        if line is None:
            continue
        yield {
            **line,
            "campaign": campaign.name,
            "shown_left": rating.left,
            "rater": rater_hash(rating.rater.name),
            "seconds": rating.active_seconds,
            "repeat": rating.repeat,
            "source": rating.source,
        }


def write_preferences(
    campaign: Campaign, out: IO[str], *, ties: str = "drop", majority: bool = False
) -> int:
    """Writes the lines to `out`; returns how many."""
    count = 0
    for line in preference_lines(campaign, ties=ties, majority=majority):
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        count += 1
    return count
