"""A run page's WebSocket: the run's metrics and status as the training worker sends
them (`webapp.runs.execution.notify`), so the page draws its curves live. Researchers
and staff only.

The page passes `?after=<id>`, the last metric it was rendered with; once the socket
has joined the run's group, the metrics logged since are sent first, so none falls
between the page and the socket (one may come twice: the page keeps one per step).

Messages to the browser: `{"type": "metrics", "record", "time"}` (a logged step's
values and when it was logged, in seconds since the epoch) and `{"type": "status",
"status"}` (sent once on connecting, then on each change).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.accounts.roles import is_researcher
from webapp.runs.execution import run_group
from webapp.runs.models import Metric, Run


def after_id(query_string: bytes) -> int:
    values = parse_qs(query_string.decode("latin-1")).get("after", ["0"])
    return int(values[0]) if values[0].isdigit() else 0


@database_sync_to_async
def may_follow(user, run_id: int) -> bool:
    return is_researcher(user) and Run.objects.filter(pk=run_id).exists()


@database_sync_to_async
def catch_up(run_id: int, after: int) -> list[dict]:
    """The run's status, then the metrics logged after the metric `after`."""
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    rows = Metric.objects.filter(run_id=run_id, pk__gt=after).order_by("pk")
    return [
        {"type": "status", "status": status},
        *(
            metrics_message(values, created_at.timestamp())
            for values, created_at in rows.values_list("values", "created_at")
        ),
    ]


def metrics_message(record: dict, logged_at: float) -> dict:
    return {"type": "metrics", "record": record, "time": logged_at}


class RunConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        self.group = run_group(run_id)
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await may_follow(user, run_id):
            await self.close(code=4403)
            return
        # Joined before the catch-up is read: what comes after it comes as events.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        after = after_id(self.scope["query_string"])
        for message in await catch_up(run_id, after):
            await self.send_json(message)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def run_metrics(self, event: dict) -> None:
        await self.send_json(metrics_message(event["record"], time.time()))

    async def run_status(self, event: dict) -> None:
        await self.send_json({"type": "status", "status": event["status"]})
