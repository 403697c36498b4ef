"""/healthz: 200 only when database, Redis, Celery and the generation worker are ok.

Parts are taken down for real: a database server that is not there, a Redis socket
that does not exist, and a Redis database no worker listens on (the workers of this
session are alive, but on another database of the same server).
"""

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from webapp.launcher import BASE_DIR
from webapp.settings import kombu_redis_url

pytestmark = pytest.mark.django_db

EMPTY_REDIS_DB = 15


def other_database(redis_url: str, db: int) -> str:
    """The same Redis server, database `db`."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}?db={db}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def get_health(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def test_it_is_ok_when_every_part_is_up(client, live_celery_worker, generation_worker):
    status, health = get_health(client)

    assert status == 200, health
    assert health["ok"] is True
    assert health["down"] == []
    assert live_celery_worker in health["parts"]["celery"]["workers"]
    assert "tiny-random" in health["parts"]["generation"]["models"]


def test_it_needs_no_login(client, live_celery_worker, generation_worker):
    status, _ = get_health(client)

    assert status == 200


def test_it_names_celery_when_no_worker_answers(
    client, settings, redis_url, live_celery_worker, generation_worker
):
    settings.CELERY_BROKER_URL = kombu_redis_url(
        other_database(redis_url, EMPTY_REDIS_DB)
    )

    status, health = get_health(client)

    assert status == 503
    assert health["down"] == ["celery"]
    assert "no Celery worker" in health["parts"]["celery"]["error"]


def test_it_names_the_generation_worker_when_none_is_alive(
    client, settings, redis_url, live_celery_worker
):
    settings.REDIS_URL = other_database(redis_url, EMPTY_REDIS_DB)

    status, health = get_health(client)

    assert status == 503
    assert health["down"] == ["generation"]


def test_it_names_redis_when_it_is_unreachable(client, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path / 'no-redis.sock'}?db=0"
    settings.CELERY_BROKER_URL = kombu_redis_url(settings.REDIS_URL)

    status, health = get_health(client)

    assert status == 503
    assert "redis" in health["down"]
    assert health["parts"]["redis"]["ok"] is False
    assert health["parts"]["database"]["ok"] is True


def test_it_names_the_database_when_it_is_unreachable():
    # Port 1 on localhost: nothing listens, the connection is refused at once.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/nothing",
    }
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client(HTTP_HOST='127.0.0.1').get('/healthz');"
        "print(json.dumps({'status': r.status_code, 'health': r.json()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        # Not a speed figure: a check that waited for the connection pool (30 s)
        # would leave a load balancer's health probe hanging.
        timeout=20,
    )
    assert done.returncode == 0, done.stderr

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 503
    assert "database" in result["health"]["down"]
    assert result["health"]["parts"]["redis"]["ok"] is True
