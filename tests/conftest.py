"""Shared fixtures: the Redis URL, live workers as real subprocesses, and personas.

The session's Redis and database URLs are chosen by `tests/session_services.py`
before Django starts. Workers started here see the *test* database, so tests whose rows
a worker must read use `@pytest.mark.django_db(transaction=True)`.
"""

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connections
from django.test import Client

from model_service.checkpoints import flax_params
from model_service.client import GenerationClient
from model_service.registry import load_model
from webapp.accounts.roles import RATER, RESEARCHER
from webapp.celery import app as celery_app
from webapp.launcher import spawn, stop

WORKER_START_TIMEOUT_S = 120


# --- settings for the session -------------------------------------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A test database of this session's own: a file for SQLite (so that worker
    processes can open it), a name with the pid for PostgreSQL (so that sessions
    running at once on one server do not collide)."""
    database = settings.DATABASES["default"]
    test = database.setdefault("TEST", {})
    if database["ENGINE"].endswith("sqlite3"):
        test["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")
    else:
        test["NAME"] = f"test_{database['NAME']}_{os.getpid()}"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker) -> Iterator[None]:
    """pytest-django's test database, which PostgreSQL must also let go of at the end:
    threads of this process that served async views and consumers keep their
    connections open (CONN_MAX_AGE), and DROP DATABASE refuses while any is open."""
    yield
    connection = connections["default"]
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing() -> None:
    # The default hasher is slow on purpose; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The session's Redis (CI's, the one REDIS_URL names, or a private one)."""
    return settings.REDIS_URL


# --- live workers -------------------------------------------------------------------


def database_url(settings_dict: dict) -> str:
    """DATABASE_URL for a connection's settings (after the switch to the test DB)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict["USER"] or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else ""
    credentials = f"{user}{password}@" if user else ""
    host = settings_dict["HOST"] or "127.0.0.1"
    port = settings_dict["PORT"] or 5432
    return f"postgres://{credentials}{host}:{port}/{settings_dict['NAME']}"


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker process: this session's Redis and test database."""
    return {
        **os.environ,
        "REDIS_URL": settings.REDIS_URL,
        "DATABASE_URL": database_url(connections["default"].settings_dict),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def wait_until(ready: Callable[[], bool], process, what: str) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"{what} not ready in {WORKER_START_TIMEOUT_S} s")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def live_celery_worker(django_db_setup: None) -> Iterator[str]:
    """A real Celery worker process on the default and generation queues, against
    the test database. Yields its node name (the name that answers `control.ping`).
    """
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    process = start_celery(name, "default,generation", "-P", "threads", "-c", "4")
    yield name
    stop(process)


def start_celery(name: str, queues: str, *options: str):
    """A Celery worker process named `name` on `queues`, once it answers a ping."""
    command = [
        sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queues,
        *options, "-n", name, "--without-gossip", "--without-mingle",
        "--loglevel", "INFO",
    ]  # fmt: skip
    process = spawn(command, env=worker_env())

    def answers() -> bool:
        return bool(celery_app.control.ping(destination=[name], timeout=0.5))

    wait_until(answers, process, "Celery worker")
    return process


def start_training_worker(name: str):
    """A training worker as production runs one: prefork, one task at a time."""
    return start_celery(name, "training", "-P", "prefork", "-c", "1")


@pytest.fixture(scope="session")
def generation_worker(redis_url: str) -> Iterator[str]:
    """A real generation worker serving the `tiny-random` model; yields its id."""
    worker_id = f"test-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "model_service.worker", "--redis-url", redis_url,
        "--model", "tiny-random", "--worker-id", worker_id,
    ]  # fmt: skip
    process = spawn(command, env=worker_env())
    client = GenerationClient(redis_url)
    wait_until(
        lambda: worker_id in client.alive_workers(), process, "generation worker"
    )
    yield worker_id
    stop(process)
    client.redis.close()


def start_copy_worker(redis_url: str, directory, *options: str):
    """A live generation worker serving a saved copy of tiny-random under a model name
    of its own (its path), so that its queue is its alone. Returns (model, process)."""
    model = str(directory / "tiny-copy")
    tiny = load_model("tiny-random")
    flax_params.save(model, tiny.params, tiny.config)
    worker_id = f"test-copy-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "model_service.worker", "--redis-url", redis_url,
        "--model", model, "--worker-id", worker_id, *options,
    ]  # fmt: skip
    process = spawn(command, env=worker_env())
    client = GenerationClient(redis_url)
    wait_until(lambda: worker_id in client.alive_workers(), process, "copy worker")
    client.close()
    return model, process


@pytest.fixture(scope="session")
def full_worker(redis_url: str, tmp_path_factory) -> Iterator[str]:
    """A live generation worker whose queue is always full (`--max-queue 0`).
    Yields the model name it serves."""
    directory = tmp_path_factory.mktemp("full")
    model, process = start_copy_worker(redis_url, directory, "--max-queue", "0")
    yield model
    stop(process)


@pytest.fixture(scope="session")
def live_url(django_db_setup, live_celery_worker, generation_worker) -> Iterator[str]:
    """A real Daphne serving the project, with live workers behind it."""
    from tests.browser.live_server import asgi_server

    with asgi_server() as url:
        yield url


# --- personas -----------------------------------------------------------------------


def make_user(username: str, *groups: str, **fields) -> User:
    user = User.objects.create_user(username=username, password="pw", **fields)
    # Created if missing: a transactional test's flush deletes the groups that the
    # migrations made, and every transactional test after it would get none.
    user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in groups))
    return user


@pytest.fixture
def rater(db) -> User:
    return make_user("alice", RATER)


@pytest.fixture
def researcher(db) -> User:
    return make_user("rosa", RESEARCHER)


@pytest.fixture
def stranger(db) -> User:
    """Logged in, but in no group."""
    return make_user("sam")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def rater_client(rater: User) -> Client:
    return logged_in(rater)


@pytest.fixture
def researcher_client(researcher: User) -> Client:
    return logged_in(researcher)


@pytest.fixture
def stranger_client(stranger: User) -> Client:
    return logged_in(stranger)
