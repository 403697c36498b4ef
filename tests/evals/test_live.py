"""Pages follow the ratings live: a rating stored through the queue, or a chat
vote, tells the campaign's open pages and the leaderboards over their WebSocket (the
project's ASGI application, the Redis channel layer), at most once every 2 s, and the
numbers they fetch again have changed. Researchers only."""

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from tests.conftest import make_user
from tests.evals.studies import chat_votes
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER, RESEARCHER
from webapp.asgi import application
from webapp.evals import live
from webapp.ratings import queue
from webapp.ratings.chat_votes import chat_campaign

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

ORIGIN = b"http://127.0.0.1"
CHANGED = {"type": "changed"}


def signed_in(user) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    return client, f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(path: str, cookie: bytes = b"") -> WebsocketCommunicator:
    headers = [(b"origin", ORIGIN), (b"host", b"127.0.0.1"), (b"cookie", cookie)]
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.fixture(autouse=True)
def roles():
    """The role groups, which a migration makes and a transactional test's flush
    removes."""
    for name in (RATER, RESEARCHER):
        Group.objects.get_or_create(name=name)


@pytest.fixture
def campaign():
    return make_campaign(prompts=2, ratings_per_item=1)


@pytest.fixture
def researcher_session():
    return signed_in(make_user("rosa", RESEARCHER))


def rate_one() -> None:
    """A rater's rating through the queue, committed as in a request."""
    rater = queue.rater_for(make_user("alice", RATER))
    task = queue.next_task(rater)
    queue.submit(rater, task.token, queue.Verdict(choice=2))


async def test_a_stored_rating_refreshes_the_campaigns_page(
    campaign, researcher_session
):
    client, cookie = researcher_session
    fragment = reverse("evals:campaign-numbers", args=[campaign.pk])
    page = socket(f"/ws/evals/campaigns/{campaign.pk}/", cookie)
    board = socket("/ws/evals/leaderboard/", cookie)
    assert (await page.connect())[0] and (await board.connect())[0]
    try:
        before = await database_sync_to_async(client.get)(fragment)
        await database_sync_to_async(rate_one)()

        assert await page.receive_json_from(timeout=10) == CHANGED
        assert await board.receive_json_from(timeout=10) == CHANGED
        after = await database_sync_to_async(client.get)(fragment)
    finally:
        await page.disconnect()
        await board.disconnect()

    assert b"0 ratings in all." in before.content
    assert b"1 ratings in all." in after.content


async def test_a_chat_vote_refreshes_the_chat_votes_page(researcher_session):
    _client, cookie = researcher_session
    chat = await database_sync_to_async(chat_campaign)()
    page = socket(f"/ws/evals/campaigns/{chat.pk}/", cookie)
    assert (await page.connect())[0]
    try:
        await database_sync_to_async(
            lambda: chat_votes(make_user("cy"), "m-one", "m-two", [2])
        )()

        assert await page.receive_json_from(timeout=10) == CHANGED
    finally:
        await page.disconnect()


async def test_changes_close_together_are_told_once_every_two_seconds(
    campaign, researcher_session
):
    _client, cookie = researcher_session
    page = socket(f"/ws/evals/campaigns/{campaign.pk}/", cookie)
    assert (await page.connect())[0]
    layer = get_channel_layer()
    try:
        for _ in range(3):
            await layer.group_send(live.campaign_group(campaign.pk), live.CHANGED)

        assert await page.receive_json_from(timeout=10) == CHANGED
        assert await page.receive_nothing(timeout=1)  # the others wait their turn
        assert await page.receive_json_from(timeout=10) == CHANGED  # told as one
        assert await page.receive_nothing(timeout=3)
    finally:
        await page.disconnect()


async def test_raters_and_anonymous_visitors_are_refused(campaign):
    _client, cookie = await database_sync_to_async(
        lambda: signed_in(make_user("bo", RATER))
    )()
    path = f"/ws/evals/campaigns/{campaign.pk}/"

    outcomes = []
    for visitor in (cookie, b""):
        communicator = socket(path, visitor)
        outcomes.append(await communicator.connect())
        await communicator.disconnect()

    assert outcomes == [(False, 4403), (False, 4401)]
