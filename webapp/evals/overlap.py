"""Adaptive overlap: an adaptive campaign's items start needing K min ratings, and an
item gets one more place, up to K max, after a rating that leaves its raters
disagreeing or its category's win-rate interval wider than the campaign's target
(`stats.needs_another_rating`).

The place is added by one conditional update, `needed = needed + 1` where `needed`
still equals the ratings the item has (`rated`) and is below K max: of several
raters' ratings arriving at once, only one adds the place their decision asks for,
and no item ever needs more than K max.
"""

from __future__ import annotations

import math

from django.core.cache import cache
from django.db.models import F, QuerySet

from webapp.evals import data, stats
from webapp.ratings.models import Campaign, Item, Rating

# A category's interval width is recomputed at most this often per campaign.
WIDTH_CACHE_SECONDS = 30


def queue_ratings(**where) -> QuerySet[Rating]:
    """The ratings the queue hands places out for: of every kind of rater (people,
    simulated raters, judges rating through it), swapped repeats and gold apart."""
    return data.counted(Rating.objects.filter(**where))


def category_ci_width(campaign_id: int, category: str) -> float:
    """The width of the category's win-rate interval, cached for
    `WIDTH_CACHE_SECONDS`; infinite, and not cached, while fewer than two of its
    prompts are rated: a bootstrap over one prompt cannot tell how much prompts
    differ."""
    key = f"evals:ci-width:{campaign_id}:{category}"
    width = cache.get(key)
    if width is None:
        found = queue_ratings(
            item__campaign_id=campaign_id, item__prompt__category=category
        )
        wins, ties, losses = data.prompt_counts(found)
        if len(wins) < 2:
            return math.inf
        rate = stats.win_rate_from_counts(wins, ties, losses)
        width = rate.ci_high - rate.ci_low
        cache.set(key, width, WIDTH_CACHE_SECONDS)
    return width


def after_rating(item_id: int) -> bool:
    """Gives the item of an adaptive campaign one more place if its ratings so far
    ask for it; returns whether it did."""
    item = Item.objects.select_related("campaign", "prompt").get(pk=item_id)
    campaign: Campaign = item.campaign
    if not campaign.adaptive or item.gold:
        return False
    scores = list(queue_ratings(item_id=item_id).values_list("score", flat=True))
    if not stats.needs_another_rating(
        scores,
        k_min=campaign.k_min,
        k_max=campaign.k_max,
        ci_width=category_ci_width(campaign.pk, item.prompt.category),
        target_width=campaign.target_ci_width,
    ):
        return False
    return bool(
        Item.objects.filter(
            pk=item_id, needed=F("rated"), needed__lt=campaign.k_max
        ).update(needed=F("needed") + 1)
    )
