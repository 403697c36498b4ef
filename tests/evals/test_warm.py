"""Dashboards warm across processes: the cache is the session's Redis (which Celery
and the channel layer share, and which clearing the cache leaves to them), a worker's
refresh computes a campaign's page so that the next view only reads it, ratings close
together ask for one refresh, and the commands still answer while Redis is down."""

import io
import json

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from tests.evals.studies import import_study
from webapp.evals import live, reports, tasks

pytestmark = pytest.mark.django_db


def test_the_cache_is_the_sessions_redis_and_clearing_it_keeps_other_keys(
    redis_url,
):
    client = redis.Redis.from_url(redis_url)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    client.set("a-celery-queue", b"kept")
    try:
        reports.cached("probe", (1,), lambda: "computed")
        assert list(client.scan_iter(match=f"{prefix}:*evals:probe:*"))

        assert reports.cached("probe", (1,), lambda: "again") == "computed"
        cache.clear()

        assert reports.cached("probe", (1,), lambda: "again") == "again"
        assert client.get("a-celery-queue") == b"kept"
    finally:
        client.delete("a-celery-queue")


def test_a_refresh_computes_the_page_so_that_the_next_view_only_reads_it(
    researcher_client, django_assert_max_num_queries
):
    campaign = import_study("study")
    page = reverse("evals:campaign", args=[campaign.pk])

    tasks.refresh_campaign(campaign.pk)

    # Session, user, roles (the view's and the header's), campaign, the ratings'
    # version: none of the numbers.
    with django_assert_max_num_queries(6):
        response = researcher_client.get(page)
    assert response.status_code == 200
    assert b"Table 5" in response.content


def test_ratings_close_together_ask_for_one_refresh():
    first, second = import_study("first"), import_study("second")

    asked = [live.refresh_soon(first.pk) for _ in range(3)]

    assert asked == [True, False, False]
    assert live.refresh_soon(second.pk)


def test_the_commands_answer_while_redis_is_down():
    import_study("worked")
    out = io.StringIO()
    down = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": "unix:///nonexistent/redis.sock?db=0",
        }
    }

    with override_settings(CACHES=down):
        call_command("win_rates", "--campaign", "worked", "--json", stdout=out)

    assert [row["win_rate"] for row in json.loads(out.getvalue())][:2] == [0.5, 0.5]
