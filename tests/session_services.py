"""Pytest plugin (loaded by `-p` in pyproject.toml): the session's Redis, database
and cache keys.

It runs before pytest-django reads the settings, which read REDIS_URL and DATABASE_URL
once at import:

- REDIS_URL / DATABASE_URL already set: used as they are.
- CI=true: the CI services, PostgreSQL at 127.0.0.1:5432 database `test` and Redis at
  127.0.0.1:6379.
- otherwise: SQLite (the settings' default) and a private redis-server on a socket in a
  temporary directory, stopped when the session ends.

It also gives the session a JAX compilation cache of its own, before anything imports
JAX, and takes SIGTERM as Ctrl-C: pytest then tears the session down, stopping the
workers and servers its fixtures started (they run in sessions of their own, so
nothing else stops them).
"""

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

CI_DATABASE_URL = "postgres://127.0.0.1:5432/test"
CI_REDIS_URL = "redis://127.0.0.1:6379/0"


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser, args):
    if on_ci():
        os.environ.setdefault("DATABASE_URL", CI_DATABASE_URL)
        os.environ.setdefault("REDIS_URL", CI_REDIS_URL)
    if not os.environ.get("REDIS_URL"):
        start_private_redis(early_config)
    # The session's cache keys apart from any other's on the same Redis (its workers
    # inherit the variable).
    os.environ.setdefault("CACHE_KEY_PREFIX", f"gemma-test-{os.getpid()}")
    share_compiled_programs(early_config)
    signal.signal(signal.SIGTERM, interrupt)
    return (yield)


def interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def share_compiled_programs(config: pytest.Config) -> None:
    """One JAX compilation cache for this process and every worker the tests start,
    as `make run` keeps one: each worker started again loads what the last one
    compiled. Its own per session, so that no run reads another's."""
    from model_service.xla_options import use_compilation_cache

    directory = Path(tempfile.mkdtemp(prefix="gemma-test-jax-cache-"))
    use_compilation_cache(directory)
    config.add_cleanup(lambda: shutil.rmtree(directory, True))


def start_private_redis(config: pytest.Config) -> None:
    from webapp.launcher import socket_url, start_redis, stop

    directory = Path(tempfile.mkdtemp(prefix="gemma-test-redis-"))
    process = start_redis(directory / "redis.sock")
    os.environ["REDIS_URL"] = socket_url(directory / "redis.sock")
    config.add_cleanup(lambda: (stop(process), shutil.rmtree(directory, True)))
