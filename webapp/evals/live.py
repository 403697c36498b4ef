"""Dashboards that follow the ratings as they arrive: when a rating is stored, the
pages of its campaign and the leaderboards hear of it through the channel layer
(`consumers.NumbersConsumer` tells each page, at most once every 2 s), a Celery
worker computes the campaign's numbers afresh (`tasks.refresh_campaign`), so that its
page is rarely cold when someone opens it, and an adaptive campaign's item may get
another place (`overlap.after_rating`).

Telling costs the rater's request nothing: it is handed to the process's
channel-layer loop, which sends one message per campaign for all the ratings of the
same `COALESCE_S`, and asks for one refresh for all those of `REFRESH_DELAY_S`."""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer
from django.core.cache import cache

from webapp.core.channel_layer import channel_layer_loop
from webapp.evals import overlap, tasks
from webapp.ratings.models import Campaign

logger = logging.getLogger(__name__)

# Every leaderboard page listens here: any rating may change one.
ALL_GROUP = "evals.all"
CHANGED = {"type": "ratings.changed"}
COALESCE_S = 0.5
# A refresh waits this long, and counts every rating that arrives meanwhile.
REFRESH_DELAY_S = 2.0
ADAPTIVE_CACHE_SECONDS = 60

_waiting: set[int] = set()  # campaigns with a message due; touched on the loop only


def campaign_group(campaign_id: int) -> str:
    return f"evals.campaign.{campaign_id}"


def rating_stored(campaign_id: int, item_id: int) -> None:
    """What follows a stored rating, once it is committed."""
    if is_adaptive(campaign_id):
        overlap.after_rating(item_id)
    notify(campaign_id)


def is_adaptive(campaign_id: int) -> bool:
    """Whether the campaign has adaptive overlap (kept a minute: not one more query
    per rating)."""
    return cache.get_or_set(
        f"evals:adaptive:{campaign_id}",
        lambda: Campaign.objects.filter(pk=campaign_id, adaptive=True).exists(),
        ADAPTIVE_CACHE_SECONDS,
    )


def notify(campaign_id: int) -> None:
    """Tells the open pages of the campaign and the leaderboards, within
    `COALESCE_S`, that its ratings changed."""
    loop = channel_layer_loop()
    loop.call_soon_threadsafe(_due, loop, campaign_id)


def _due(loop: asyncio.AbstractEventLoop, campaign_id: int) -> None:
    if campaign_id not in _waiting:
        _waiting.add(campaign_id)
        loop.call_later(COALESCE_S, lambda: loop.create_task(_send(campaign_id)))


async def _send(campaign_id: int) -> None:
    _waiting.discard(campaign_id)  # a rating from now on is told next time
    layer = get_channel_layer()
    try:
        for group in (campaign_group(campaign_id), ALL_GROUP):
            await layer.group_send(group, CHANGED)
        await asyncio.to_thread(refresh_soon, campaign_id)
    except Exception:  # the pages miss one refresh; the ratings are safe
        logger.exception("could not tell campaign %s's pages", campaign_id)


def refresh_soon(campaign_id: int) -> bool:
    """Asks a worker to compute the campaign's numbers in `REFRESH_DELAY_S`, unless
    that is asked already: one refresh counts every rating of those seconds. Returns
    whether it asked."""
    if not cache.add(f"evals:refresh-due:{campaign_id}", True, REFRESH_DELAY_S):
        return False
    tasks.refresh_campaign.apply_async((campaign_id,), countdown=REFRESH_DELAY_S)
    return True
