"""A real ASGI server (Daphne) on a free port, for the browser and the API tests.

It runs in its own process against the session's test database and Redis (the same
environment as the live workers), so the rows it reads must be committed: tests that
use it are `django_db(transaction=True)`.
"""

import contextlib
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from tests.conftest import worker_env
from webapp.launcher import spawn, stop

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/healthz", timeout=2)
    except urllib.error.HTTPError:
        return True  # 503 from /healthz is an answer: the server is up
    except OSError:
        return False
    return True


@contextlib.contextmanager
def asgi_server() -> Iterator[str]:
    """Starts Daphne with the project's ASGI application; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
        "webapp.asgi:application",
    ]  # fmt: skip
    process = spawn(command, env=worker_env())
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not start on {url}")
            time.sleep(0.1)
        yield url
    finally:
        stop(process)
