"""The rater queue under load: 32 raters at once through the JSON API, on PostgreSQL.

Needs: the project installed (`make install`) and a PostgreSQL server (default: the CI
one, postgres://127.0.0.1:5432/test; a database of its own is made there and dropped)
and a Redis server (default: REDIS_URL, else 127.0.0.1:6379).

    .venv/bin/python benchmarks/rater_queue.py [--raters 32] [--seconds 20]

Starts Daphne on a fresh database holding an open campaign (2,000 items, 3 ratings
each, gold and repeats on) and one API key per rater. Each rater is a loop of
`POST /api/rate/next` + `POST /api/rate/submit`, all at once, for `--seconds`. In the
same run, the same server answers a trivial authenticated JSON view
(`GET /api/whoami`) as fast as the same number of callers can ask: the stack's own
ceiling. Prints cycles/s, p50/p99 cycle latency, trivial requests/s, and from the
database afterwards: over-assigned items, duplicate ratings (an item twice by one
rater outside a swapped repeat) and lost ratings (accepted but not stored). Goals:
0, 0, 0, and cycles/s >= 0.5 x (trivial requests/s / 2). The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ITEMS = 2000


def setup_database(database_url: str, raters: int) -> list[str]:
    """Migrates, makes the campaign and the raters; returns their API keys."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from tests.conftest import make_user
    from tests.ratings.factories import make_campaign
    from webapp.accounts.roles import RATER
    from webapp.api.models import ApiKey

    call_command("migrate", "--noinput", verbosity=0)
    make_campaign(
        "load", prompts=ITEMS, ratings_per_item=3, gold_rate=0.05, repeat_rate=0.05
    )
    keys = []
    for index in range(raters):
        user = make_user(f"rater{index}", RATER)
        keys.append(ApiKey.objects.create_key(user)[1])
    return keys


async def rate(client, key: str, until: float, cycles: list, accepted: list) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while time.perf_counter() < until:
        start = time.perf_counter()
        task = (await client.post("/api/rate/next", headers=headers)).json()["task"]
        if task is None:
            return
        reply = await client.post(
            "/api/rate/submit",
            headers=headers,
            json={"token": task["token"], "choice": 3, "active_seconds": 12.0},
        )
        cycles.append(time.perf_counter() - start)
        if reply.status_code == 200:
            accepted.append(task["token"])


async def trivial(client, key: str, until: float, done: list) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while time.perf_counter() < until:
        if (await client.get("/api/whoami", headers=headers)).status_code == 200:
            done.append(1)


async def load(url: str, keys: list[str], seconds: float) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=len(keys))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        cycles, accepted = [], []
        until = time.perf_counter() + seconds
        await asyncio.gather(*(rate(client, k, until, cycles, accepted) for k in keys))
        done = []
        until = time.perf_counter() + seconds / 2
        await asyncio.gather(*(trivial(client, k, until, done) for k in keys))
    cycles.sort()
    return {
        "cycles_per_s": round(len(cycles) / seconds, 1),
        "p50_ms": round(1000 * statistics.median(cycles), 1),
        "p99_ms": round(1000 * cycles[int(0.99 * (len(cycles) - 1))], 1),
        "trivial_per_s": round(len(done) / (seconds / 2), 1),
        "accepted": accepted,
    }


def check(accepted: list[str]) -> dict[str, int]:
    """Over-assigned items, duplicate ratings and lost ones, from the database."""
    from django.db.models import Count, Q

    from webapp.ratings.models import Item, Rating

    over = (
        Item.objects.annotate(n=Count("ratings", filter=Q(ratings__repeat=False)))
        .filter(gold="", n__gt=3)
        .count()
    )
    duplicates = (
        Rating.objects.filter(repeat=False)
        .values("item", "rater")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    stored = {
        str(token)
        for token in Rating.objects.filter(assignment__isnull=False).values_list(
            "assignment__token", flat=True
        )
    }
    return {
        "over_assigned": over,
        "duplicates": duplicates,
        "lost": len(set(accepted) - stored),
        "ratings": len(stored),
    }


def postgres_database(base_url: str, name: str, create: bool) -> str:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if create:
            connection.execute(f"CREATE DATABASE {name}")
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raters", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--postgres", default="postgres://127.0.0.1:5432/test")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    database = postgres_database(args.postgres, "rater_queue_bench", create=True)
    from webapp.launcher import spawn, stop

    try:
        keys = setup_database(database, args.raters)
        server = spawn(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port),
             "webapp.asgi:application"],
            env={**os.environ, "DATABASE_URL": database},
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{args.port}"
            wait_for(url)
            result = asyncio.run(load(url, keys, args.seconds))
        finally:
            stop(server)
        result.update(check(result.pop("accepted")))
    finally:
        from django.db import connections

        connections.close_all()
        postgres_database(args.postgres, "rater_queue_bench", create=False)
    goal = 0.5 * result["trivial_per_s"] / 2
    result["goal_cycles_per_s"] = round(goal, 1)
    print(
        f"{args.raters} raters: {result['cycles_per_s']} cycles/s "
        f"(goal >= {goal:.1f}), p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
        f"trivial view {result['trivial_per_s']} requests/s; over-assigned "
        f"{result['over_assigned']}, duplicates {result['duplicates']}, lost "
        f"{result['lost']} ({result['ratings']} ratings stored)"
    )
    print(json.dumps(result))


def wait_for(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"daphne did not start on {url}")


if __name__ == "__main__":
    main()
