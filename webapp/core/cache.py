"""The Django cache, on the project's Redis: shared by every web process and Celery
worker, so that numbers computed in one are read by all."""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache

# Keys deleted per command when the cache is cleared.
_CLEAR_BATCH = 1000


class PrefixedRedisCache(RedisCache):
    """Django's Redis cache whose `clear()` deletes only its own keys (those under
    its KEY_PREFIX): Django's empties the whole Redis database, where Celery's queues
    and the channel layer's groups live too."""

    def clear(self) -> bool:
        client = self._cache.get_client(None, write=True)
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{self.key_prefix}:*", count=_CLEAR_BATCH):
            batch.append(key)
            if len(batch) == _CLEAR_BATCH:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
        return True
