"""Speed of the campaign dashboard (`/evals/campaigns/<id>/`) on a million ratings in
PostgreSQL: the page rendered cold (nothing cached), then again (cached).

Needs a PostgreSQL server (the default URL is the CI one,
postgres://127.0.0.1:5432/test); the script creates a database of its own there,
migrates it, loads the ratings and drops it at the end. The cache is Redis, as in
the site: REDIS_URL's, or a private redis-server the script starts and stops.

    .venv/bin/python benchmarks/dashboard.py [--runs 2] [--ratings 1000000]

The campaign is Table 5's shape at scale: a model under test against a baseline on
10,000 prompts in 4 categories (one item each, answers of 200-2,000 characters), each
item rated the same number of times (100 for a million) by distinct raters out of
1,000, scores leaning by prompt. The rows go in by COPY (`webapp.core.bulk`). Each run
empties the cache and asks for the page twice through Django's test client, signed in
as a researcher (URL resolution, the view, the queries, the statistics, the template);
the parts are timed cold as well: the version of the ratings (one COUNT and MAX), the
read (`data.campaign_items` and `data.campaign_ratings`: the items, then every
rating's columns), and all the numbers (`reports.campaign_numbers`: the read, then
Table 5, sides, length control, alpha and the rater table in NumPy). Goal: the page
in at most 2 s. The last line is JSON.
Never run inside the test suite: speed lives here, not in timed asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 10_000
N_RATERS = 1_000
CATEGORIES = ("coding", "creative_writing", "instructions", "safety")


def database(base_url: str, name: str, create: bool) -> str:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        if create:
            connection.execute(f"CREATE DATABASE {name}")
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def load(n_ratings: int, seed: int = 0) -> int:
    """A campaign of `n_ratings` ratings; returns its id."""
    from django.db import transaction

    from webapp.core.bulk import bulk_insert
    from webapp.ratings.models import (
        Answer,
        Campaign,
        Item,
        Prompt,
        PromptSet,
        Rater,
        Rating,
    )

    rng = np.random.default_rng(seed)
    per_item = n_ratings // N_PROMPTS
    with transaction.atomic():
        prompt_set = PromptSet.objects.create(name="bench")
        campaign = Campaign.objects.create(
            name="bench", prompt_set=prompt_set, model="model-x", baseline="base-y",
            ratings_per_item=per_item, status=Campaign.Status.CLOSED,
        )  # fmt: skip
        bulk_insert(
            Prompt,
            ["prompt_set_id", "external_id", "text", "category"],
            (
                (prompt_set.pk, f"p{i}", f"Question {i}?", CATEGORIES[i % 4])
                for i in range(N_PROMPTS)
            ),
        )
        prompts = list(prompt_set.prompts.order_by("pk").values_list("pk", flat=True))
        lengths = rng.integers(200, 2000, size=(N_PROMPTS, 2))
        bulk_insert(
            Answer,
            ["campaign_id", "prompt_id", "model", "text"],
            (
                (campaign.pk, prompt, model, "x" * int(lengths[i, side]))
                for i, prompt in enumerate(prompts)
                for side, model in enumerate(("model-x", "base-y"))
            ),
        )
        answers = _answer_ids(campaign)
        bulk_insert(
            Item,
            ["campaign_id", "prompt_id", "answer_a_id", "answer_b_id", "needed",
             "taken", "rated"],
            (
                (campaign.pk, prompt, *answers[prompt], per_item, per_item, per_item)
                for prompt in prompts
            ),
        )  # fmt: skip
        Rater.objects.bulk_create(
            [Rater(name=f"rater-{r}", kind=Rater.Kind.HUMAN) for r in range(N_RATERS)]
        )
        raters = np.array(
            Rater.objects.order_by("pk").values_list("pk", flat=True), dtype=np.int64
        )
        items = np.array(
            Item.objects.filter(campaign=campaign)
            .order_by("pk")
            .values_list("pk", flat=True),
            dtype=np.int64,
        )
        item = np.repeat(np.arange(N_PROMPTS), per_item)
        turn = np.tile(np.arange(per_item), N_PROMPTS)
        rater = raters[(item * 7 + turn * 13) % N_RATERS]  # distinct per item
        lean = rng.normal(0.2, 1.0, N_PROMPTS)
        score = np.clip(np.rint(lean[item] + rng.normal(0, 1.5, item.size)), -3, 3)
        left = np.where(rng.random(item.size) < 0.5, "a", "b")
        seconds = rng.gamma(4.0, 8.0, item.size).round(1)
        bulk_insert(
            Rating,
            ["item_id", "rater_id", "score", "left", "active_seconds"],
            zip(
                items[item].tolist(),
                rater.tolist(),
                score.astype(int).tolist(),
                left.tolist(),
                seconds.tolist(),
                strict=True,
            ),
        )
    return campaign.pk


def _answer_ids(campaign) -> dict[int, tuple[int, int]]:
    """(model's answer, baseline's answer) by prompt."""
    from webapp.ratings.models import Answer

    pairs: dict[int, dict[str, int]] = {}
    for prompt, model, pk in Answer.objects.filter(campaign=campaign).values_list(
        "prompt_id", "model", "pk"
    ):
        pairs.setdefault(prompt, {})[model] = pk
    return {p: (m["model-x"], m["base-y"]) for p, m in pairs.items()}


def seconds_of(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def measure(campaign_id: int, runs: int) -> dict[str, float]:
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.test import Client
    from django.urls import reverse

    from webapp.evals import data, reports
    from webapp.ratings.models import Campaign

    campaign = Campaign.objects.get(pk=campaign_id)
    client = Client()
    client.force_login(User.objects.create_user("bench", is_staff=True))
    url = reverse("evals:campaign", args=[campaign_id])
    times: dict[str, list[float]] = {}
    for run in range(runs):
        cache.clear()
        for name, part in (
            ("version_s", lambda: reports.campaign_version(campaign)),
            (
                "read_s",
                lambda: data.campaign_ratings(
                    campaign_id, data.campaign_items(campaign_id)
                ),
            ),
            ("numbers_cold_s", lambda: reports.campaign_numbers(campaign)),
        ):
            times.setdefault(name, []).append(seconds_of(part)[0])
        cache.clear()
        for name in ("page_cold_s", "page_cached_s"):
            seconds, response = seconds_of(lambda: client.get(url))
            assert response.status_code == 200, response.status_code
            times.setdefault(name, []).append(seconds)
        print(
            f"run {run + 1}: "
            + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()),
            flush=True,
        )
    return {k: round(statistics.median(v), 3) for k, v in times.items()}


@contextlib.contextmanager
def redis_server() -> Iterator[None]:
    """REDIS_URL's server, or a private one on a socket of its own."""
    if os.environ.get("REDIS_URL"):
        yield
        return
    from webapp.launcher import socket_url, start_redis, stop

    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as folder:
        process = start_redis(Path(folder) / "redis.sock")
        os.environ["REDIS_URL"] = socket_url(Path(folder) / "redis.sock")
        try:
            yield
        finally:
            stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--postgres", default="postgres://127.0.0.1:5432/test")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with redis_server():
        run(args)


def run(args: argparse.Namespace) -> None:
    name = f"dashboard_bench_{os.getpid()}"
    os.environ["DATABASE_URL"] = database(args.postgres, name, create=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections
    from django.test.utils import setup_test_environment

    setup_test_environment()
    try:
        call_command("migrate", verbosity=0)
        load_s, campaign_id = seconds_of(lambda: load(args.ratings))
        with connections["default"].cursor() as cursor:
            # What autovacuum does soon after a large insert: without statistics
            # the planner takes a million ratings for a few dozen.
            cursor.execute("ANALYZE")
        print(f"loaded {args.ratings:,} ratings in {load_s:.1f} s", flush=True)
        results = {"ratings": args.ratings, **measure(campaign_id, args.runs)}
    finally:
        connections.close_all()
        database(args.postgres, name, create=False)
    print(
        f"page: {results['page_cold_s']:.2f} s cold, {results['page_cached_s']:.3f} s "
        f"cached (medians of {args.runs}; goal <= 2 s)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
