"""The dashboards' WebSocket: it tells a page that its numbers changed, and the page
fetches them again. One group per campaign (`live.campaign_group`) and one for the
leaderboards (`live.ALL_GROUP`); researchers and staff only.

Messages to the browser: `{"type": "changed"}`, at most once every `DEBOUNCE_S`
seconds: ratings that arrive closer together are told as one, when the interval is
up, so that a busy campaign does not make each page recompute on every rating.
"""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.accounts.roles import is_researcher
from webapp.evals import live

DEBOUNCE_S = 2.0


class NumbersConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.pending: asyncio.Task | None = None
        self.last_told = -DEBOUNCE_S
        campaign_id = self.scope["url_route"]["kwargs"].get("campaign_id")
        self.group = (
            live.ALL_GROUP if campaign_id is None else live.campaign_group(campaign_id)
        )
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(is_researcher)(user):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.pending is not None:
            self.pending.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def ratings_changed(self, event: dict) -> None:
        if self.pending is not None:
            return  # told when the waiting one goes
        wait = self.last_told + DEBOUNCE_S - asyncio.get_running_loop().time()
        self.pending = asyncio.create_task(self.tell(max(0.0, wait)))

    async def tell(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self.pending = None  # a change from here on is told next time
        self.last_told = asyncio.get_running_loop().time()
        await self.send_json({"type": "changed"})
