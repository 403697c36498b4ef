"""Votes from the chat's Compare, kept in the rating store beside campaign ratings.

Every vote is an item of its own in one campaign, `chat-votes` (source "chat", closed:
raters never get its items), with its prompt (the user's question and the turns
before it) and both answers, so that dashboards can count chat votes with, or apart
from, campaign ratings.
"""

from __future__ import annotations

from django.db import transaction

from webapp.evals.live import rating_stored
from webapp.ratings.models import Answer, Campaign, Item, Prompt, PromptSet, Rating
from webapp.ratings.queue import rater_for, score_for_a

CAMPAIGN = "chat-votes"
PROMPT_SET = "chat-prompts"


def chat_campaign() -> Campaign:
    prompt_set, _ = PromptSet.objects.get_or_create(
        name=PROMPT_SET,
        defaults={"description": "Questions from the chat's Compare votes."},
    )
    campaign, _ = Campaign.objects.get_or_create(
        name=CAMPAIGN,
        defaults={
            "source": Campaign.Source.CHAT,
            "status": Campaign.Status.CLOSED,
            "prompt_set": prompt_set,
            "gold_rate": 0,
            "repeat_rate": 0,
        },
    )
    return campaign


def record_vote(
    user,
    *,
    key: str,
    history: list[dict[str, str]],
    question: str,
    first: tuple[str, str],
    second: tuple[str, str],
    first_left: bool,
    choice: int,
) -> Rating:
    """Stores a chat vote: `first` and `second` are (model, text) of the two answers
    (A and B), `first_left` whether A was shown on the left, `choice` the 7-point
    choice as shown (1 = left much better); `key` names the comparison, once."""
    with transaction.atomic():
        campaign = chat_campaign()
        prompt = Prompt.objects.create(
            prompt_set=campaign.prompt_set,
            external_id=key,
            text=question,
            category="chat",
            history=history,
        )
        a, b = (
            Answer.objects.create(
                campaign=campaign, prompt=prompt, model=model, variant=side, text=text
            )
            for side, (model, text) in (("a", first), ("b", second))
        )
        item = Item.objects.create(
            campaign=campaign,
            prompt=prompt,
            answer_a=a,
            answer_b=b,
            needed=1,
            taken=1,
            rated=1,
        )
        left = "a" if first_left else "b"
        rating = Rating.objects.create(
            item=item,
            rater=rater_for(user),
            score=score_for_a(choice, left),
            left=left,
            source=Rating.Source.CHAT,
        )
        # The dashboards follow chat votes as they follow campaign ratings.
        transaction.on_commit(lambda: rating_stored(campaign.pk, item.pk), robust=True)
    return rating
