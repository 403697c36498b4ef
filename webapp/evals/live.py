"""Dashboards that follow the ratings as they arrive: when a rating is stored, the
pages of its campaign and the leaderboards hear of it through the channel layer
(`consumers.NumbersConsumer` tells each page, at most once every 2 s), and an adaptive
campaign's item may get another place (`overlap.after_rating`).

Telling costs the rater's request nothing: it is handed to the process's
channel-layer loop, which sends one message per campaign for all the ratings of the
same `COALESCE_S`."""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer
from django.core.cache import cache

from webapp.core.channel_layer import channel_layer_loop
from webapp.evals import overlap
from webapp.ratings.models import Campaign

logger = logging.getLogger(__name__)

# Every leaderboard page listens here: any rating may change one.
ALL_GROUP = "evals.all"
CHANGED = {"type": "ratings.changed"}
COALESCE_S = 0.5
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
    except Exception:  # the pages miss one refresh; the ratings are safe
        logger.exception("could not tell campaign %s's pages", campaign_id)
