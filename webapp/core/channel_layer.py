"""The channel layer from synchronous code (views, the answer persister, training
runs, rating hooks): one long-lived event loop per process sends to the pages'
groups."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

from channels.layers import get_channel_layer


@functools.cache
def channel_layer_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process for the channel layer, on its own thread.

    `async_to_sync` would build a loop, and with it a new Redis connection pool, for
    every update: tens of milliseconds each. On one long-lived loop the pool stays.
    """
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="channel-layer", daemon=True).start()
    return loop


def send_to_group(group: str, event: dict[str, Any]) -> None:
    """Sends and waits: the event leaves before the caller moves on."""
    send = get_channel_layer().group_send(group, event)
    asyncio.run_coroutine_threadsafe(send, channel_layer_loop()).result()
