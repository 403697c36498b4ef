"""Dashboards that follow the ratings as they arrive: when a rating is stored, the
pages of its campaign and the leaderboards hear of it through the channel layer
(`consumers.NumbersConsumer` tells each page, at most once every 2 s), and an adaptive
campaign's item may get another place (`overlap.after_rating`)."""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer

from webapp.chat.answers import channel_layer_loop
from webapp.evals import overlap

# Every leaderboard page listens here: any rating may change one.
ALL_GROUP = "evals.all"
CHANGED = {"type": "ratings.changed"}


def campaign_group(campaign_id: int) -> str:
    return f"evals.campaign.{campaign_id}"


def rating_stored(campaign_id: int, item_id: int) -> None:
    """What follows a stored rating, once it is committed."""
    overlap.after_rating(item_id)
    notify(campaign_id)


def notify(campaign_id: int) -> None:
    """Tells the open pages of the campaign and the leaderboards that its ratings
    changed (on the process's channel-layer loop, which keeps its Redis pool)."""

    async def send() -> None:
        layer = get_channel_layer()
        for group in (campaign_group(campaign_id), ALL_GROUP):
            await layer.group_send(group, CHANGED)

    asyncio.run_coroutine_threadsafe(send(), channel_layer_loop()).result()
