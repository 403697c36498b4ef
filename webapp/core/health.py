"""The checks behind /healthz: each answers {"ok": bool, ...} and never raises.

Targets are read from settings at call time, and every check is bounded by a short
timeout, so a part that is down makes /healthz answer 503 quickly instead of hanging.
"""

from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connections

from model_service.client import GenerationClient
from webapp.celery import app as celery_app

Check = dict[str, Any]


def check_database() -> Check:
    connection = connections["default"]
    if pool := getattr(connection, "pool", None):
        # A request waits the pool's own 30 s for a connection, which is right under
        # load; a server that is down must make this check fail within its timeout.
        with pool.connection(timeout=settings.HEALTHZ_TIMEOUT) as conn:
            conn.execute("SELECT 1").fetchone()
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor}


def check_redis() -> Check:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.HEALTHZ_TIMEOUT,
        socket_connect_timeout=settings.HEALTHZ_TIMEOUT,
    )
    with client:
        client.ping()
    return {"ok": True}


def check_celery() -> Check:
    """A real `control.ping` broadcast: ok when at least one worker answers."""
    with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as connection:
        # Fail at once on a dead broker instead of retrying for minutes.
        connection.ensure_connection(max_retries=1, timeout=settings.HEALTHZ_TIMEOUT)
        replies = celery_app.control.ping(
            timeout=settings.HEALTHZ_TIMEOUT, connection=connection
        )
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return {"ok": False, "error": "no Celery worker answered the ping"}
    return {"ok": True, "workers": workers}


def check_generation() -> Check:
    client = GenerationClient(settings.REDIS_URL)
    try:
        workers = client.alive_workers()
    finally:
        client.redis.close()
    if not workers:
        return {"ok": False, "error": "no generation worker is alive"}
    models = sorted({model for info in workers.values() for model in info["models"]})
    return {"ok": True, "workers": len(workers), "models": models}


CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "redis": check_redis,
    "celery": check_celery,
    "generation": check_generation,
}


def run_check(check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as error:  # a health check reports failures, it never raises
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


def system_health() -> dict[str, Any]:
    """All parts' states, plus `ok` and the names of the parts that are `down`."""
    parts = {name: run_check(check) for name, check in CHECKS.items()}
    down = [name for name, state in parts.items() if not state["ok"]]
    return {"ok": not down, "down": down, "parts": parts}
