"""Blindness: nothing a rater can see (bodies, headers, redirect URLs) names a model or
the campaign, or holds a database id of an answer, an item or the campaign, while
they rate through the page and the API with gold items and swapped repeats mixed in."""

import json
import re

import pytest
from django.db import connection
from django.test import Client

from tests.conftest import logged_in
from tests.ratings.factories import BASELINE, MODEL, make_campaign
from webapp.api.models import ApiKey
from webapp.ratings import answer_jobs
from webapp.ratings.models import Answer, Campaign, Item, Rating

pytestmark = pytest.mark.django_db

CAMPAIGN = "secret-campaign-k9"


def start_ids_at(model, first: int) -> None:
    """The next rows of `model` get ids from `first` on: long, distinctive numbers that
    a grep finds as whole words without matching a choice's 1 to 7."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DELETE FROM sqlite_sequence WHERE name = %s", [table])
            cursor.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)",
                [table, first - 1],
            )
        else:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                [table, first - 1],
            )


class Watcher:
    """Everything the rater's client received, checked as it comes."""

    def __init__(self) -> None:
        self.responses = 0
        self.secrets: list[str] = []
        self.ids: list[int] = []

    def check(self, response):
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        seen = f"{headers}\n{response.content.decode()}"
        for secret in self.secrets:
            assert secret not in seen, secret
        for pk in self.ids:
            assert not re.search(rf"\b{pk}\b", seen), pk
        self.responses += 1
        return response


def test_nothing_a_rater_sees_tells_the_models_apart(rater):
    for model, first in ((Campaign, 4_310_001), (Answer, 5_720_001), (Item, 6_930_001)):
        start_ids_at(model, first)
    campaign = make_campaign(
        CAMPAIGN,
        prompts=16,
        ratings_per_item=1,
        gold_rate=0.5,
        repeat_rate=0.5,
        guidelines="Pick the answer that helps the user most.",
    )
    for number, answer in enumerate(Answer.objects.filter(campaign=campaign)):
        Answer.objects.filter(pk=answer.pk).update(text=f"An answer, number {number}.")
    watcher = Watcher()
    watcher.secrets = [MODEL, BASELINE, CAMPAIGN, answer_jobs.GOLD_MODEL, "gold"]
    watcher.ids = [
        campaign.pk,
        *Answer.objects.values_list("pk", flat=True),
        *Item.objects.values_list("pk", flat=True),
    ]
    assert min(watcher.ids) > 4_000_000
    page = logged_in(rater)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ApiKey.objects.create_key(rater)[1]}")

    def api_post(url: str, body: dict):
        return watcher.check(
            api.post(url, json.dumps(body), content_type="application/json")
        )

    for turn in range(60):
        if turn % 2:  # through the API
            task = api_post("/api/rate/next", {})
            if task.json()["task"] is None:
                break
            token = task.json()["task"]["token"]
            if turn == 3:
                api_post("/api/rate/skip", {"token": token, "reason": "other"})
                continue
            api_post("/api/rate/submit", {"token": token, "choice": 1 + turn % 7})
            api_post("/api/rate/submit", {"token": token, "choice": 9})  # a 400
        else:  # through the page
            shown = watcher.check(page.get("/rate/"))
            found = re.search(r'action="(/rate/[^"]+/)"', shown.content.decode())
            if found is None:
                break
            answered = watcher.check(page.post(found[1], {"choice": str(turn % 7 + 1)}))
            assert answered["Location"] == "/rate/"
            watcher.check(page.post(found[1], {"choice": "2"}))  # sent twice
            watcher.check(page.get(answered["Location"]))
    watcher.check(api.get("/api/whoami"))
    watcher.check(page.get("/"))

    ratings = Rating.objects.filter(rater__user=rater)
    assert ratings.filter(gold=True).exists() and ratings.filter(repeat=True).exists()
    assert watcher.responses >= 48  # every item seen: at least 16 tasks, 3 calls each
