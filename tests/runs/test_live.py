"""A run's page follows the run over its WebSocket (`/ws/runs/<id>/`): the project's
ASGI application (origin check, session auth) and the Redis channel layer carry what
a training worker sends to the run's group. Researchers and staff only."""

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.conftest import make_user
from webapp.accounts.roles import RATER, RESEARCHER
from webapp.asgi import application
from webapp.runs.execution import run_group
from webapp.runs.models import Metric, Run

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

ORIGIN = b"http://127.0.0.1"
TIMEOUT_S = 10


def cookie_of(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@database_sync_to_async
def signed_in(username: str, *groups: str, **fields) -> bytes:
    return cookie_of(make_user(username, *groups, **fields))


def socket(path: str, cookie: bytes = b"", origin: bytes = ORIGIN):
    headers = [(b"origin", origin), (b"host", b"127.0.0.1"), (b"cookie", cookie)]
    return WebsocketCommunicator(application, path, headers=headers)


@database_sync_to_async
def make_run(**fields) -> Run:
    return Run.objects.create(kind="sft", name="live", config={}, steps=10, **fields)


@database_sync_to_async
def log_step(run: Run, step: int, **values) -> Metric:
    return Metric.objects.create(run=run, step=step, values={"step": step, **values})


async def test_a_researcher_gets_the_runs_metrics_and_status_as_they_come():
    run = await make_run(status=Run.Status.RUNNING)
    seen = await log_step(run, 1, loss=2.0)
    missed = await log_step(run, 2, loss=1.5)  # logged between the page and its socket
    page = socket(
        f"/ws/runs/{run.pk}/?after={seen.pk}", await signed_in("rosa", RESEARCHER)
    )
    assert (await page.connect())[0]
    try:
        assert await page.receive_json_from(TIMEOUT_S) == {
            "type": "status",
            "status": "running",
        }
        caught_up = await page.receive_json_from(TIMEOUT_S)
        assert caught_up["record"] == {"step": 2, "loss": 1.5}
        assert caught_up["time"] == missed.created_at.timestamp()

        layer = get_channel_layer()
        record = {"step": 3, "loss": 1.25, "accuracy": 0.5}
        await layer.group_send(
            run_group(run.pk), {"type": "run.metrics", "record": record}
        )
        await layer.group_send(
            run_group(run.pk), {"type": "run.status", "status": "finished"}
        )

        live = await page.receive_json_from(TIMEOUT_S)
        assert live["type"] == "metrics" and live["record"] == record
        assert live["time"] > missed.created_at.timestamp()
        assert await page.receive_json_from(TIMEOUT_S) == {
            "type": "status",
            "status": "finished",
        }
    finally:
        await page.disconnect()


async def test_staff_may_follow_a_run_from_its_start():
    run = await make_run()
    await log_step(run, 1, loss=2.0)
    page = socket(f"/ws/runs/{run.pk}/", await signed_in("stan", is_staff=True))
    assert (await page.connect())[0]
    try:
        assert (await page.receive_json_from(TIMEOUT_S))["status"] == "queued"
        assert (await page.receive_json_from(TIMEOUT_S))["record"]["step"] == 1
        assert await page.receive_nothing(timeout=0.5)
    finally:
        await page.disconnect()


async def test_raters_strangers_anonymous_and_other_sites_are_refused():
    run = await make_run()
    path = f"/ws/runs/{run.pk}/"
    researcher = await signed_in("rosa", RESEARCHER)
    pages = [
        socket(path, await signed_in("alice", RATER)),
        socket(path, await signed_in("sam")),
        socket(path),
        socket(f"/ws/runs/{run.pk + 1}/", researcher),
        socket(path, researcher, origin=b"http://evil.example"),
    ]
    try:
        rater, stranger, anonymous, no_such_run, other_site = [
            await page.connect() for page in pages
        ]
    finally:
        # Each consumer ends on its disconnect, as channels' tests do: left to the
        # event loop's teardown to cancel, one once hung the suite for 10 minutes.
        for page in pages:
            await page.disconnect()

    assert rater == (False, 4403) and stranger == (False, 4403)
    assert anonymous == (False, 4401)
    assert no_such_run == (False, 4403)
    assert other_site[0] is False
