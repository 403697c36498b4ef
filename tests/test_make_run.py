"""`make run` in a temporary copy of the repository, as on a fresh clone.

It must bring /healthz to 200 (real Gemma 3 270M weights included) and keep the
workers' compiled programs in var/; a launcher killed with SIGKILL must take its
processes along, and the next `make run` must start even with a stale Redis server on
its socket; one Ctrl-C (SIGINT to its process group, as a terminal sends it) must stop
every process it started. The copy shares this checkout's .venv, so `make` is told not
to reinstall into it (`-o`): reinstalling from the copy would point the shared .venv at
the copy.
"""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from webapp.launcher import BASE_DIR, start_redis

pytestmark = [pytest.mark.slow, pytest.mark.real_weights]

READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 120


def copy_checkout(destination: Path) -> None:
    """Tracked and untracked files that git does not ignore, with their mtimes, and
    the compiled kernels."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=BASE_DIR,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = BASE_DIR / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            os.utime(target, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
    # What the skipped install would have compiled in place (the C++ kernels).
    for library in BASE_DIR.glob("model_service/*.so"):
        (destination / library.relative_to(BASE_DIR)).write_bytes(library.read_bytes())
    (destination / ".venv").symlink_to(BASE_DIR / ".venv")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthz_status(port: int) -> int | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=5
        ) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def wait_for_health(make: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while healthz_status(port) != 200:
        assert make.poll() is None, f"make run exited early:\n{log.read_text()[-5000:]}"
        assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()[-5000:]}"
        time.sleep(2)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def survivors(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(process.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return alive


def start_make(
    directory: Path, port: int, log: Path, model: str = "gemma3-270m"
) -> subprocess.Popen:
    unset = {
        "REDIS_URL", "DATABASE_URL", "CI", "DJANGO_SETTINGS_MODULE", "SECRET_KEY",
        "JAX_COMPILATION_CACHE_DIR",  # the session's: make run keeps its own
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {"PORT": str(port), "GENERATION_MODEL": model}
    with log.open("wb") as output:
        return subprocess.Popen(
            ["make", "-o", ".venv/.installed", "run"],
            cwd=directory,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_exit(processes: list[psutil.Process], timeout: float) -> list[str]:
    """The processes still alive after `timeout` seconds (or once all are gone)."""
    deadline = time.monotonic() + timeout
    while (alive := survivors(processes)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive


def kill_all(make: subprocess.Popen, processes: list[psutil.Process]) -> None:
    """After a failure: leave nothing running."""
    for process in processes or descendants(make.pid):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    if make.poll() is None:
        os.killpg(make.pid, signal.SIGKILL)
        make.wait()


@pytest.mark.timeout(2 * READY_TIMEOUT_S + 2 * STOP_TIMEOUT_S + 60)
def test_make_run_survives_a_killed_launcher_and_ctrl_c_stops_it_all(tmp_path):
    copy_checkout(tmp_path)
    port = free_port()

    # A run whose launcher is killed outright takes its processes along. (Its model
    # is the tiny one: what is killed does not depend on it, and the run after it
    # loads the real weights.)
    crashed = start_make(tmp_path, port, tmp_path / "crashed.log", "tiny-random")
    started: list[psutil.Process] = []
    try:
        wait_for_health(crashed, port, tmp_path / "crashed.log")
        started = descendants(crashed.pid)
        (launcher,) = [p for p in started if "webapp.launcher" in p.cmdline()]
        launcher.kill()
        crashed.wait(timeout=STOP_TIMEOUT_S)
        assert wait_for_exit(started, STOP_TIMEOUT_S) == []
    finally:
        kill_all(crashed, started)
    # Its workers' compiled programs are kept for the next run.
    assert any((tmp_path / "var" / "jax-cache").iterdir())

    # A Redis server left on the embedded socket (as by a crash that even the kernel's
    # signal could not stop) is replaced.
    stale_redis = start_redis(tmp_path / "var" / "redis.sock")

    log = tmp_path / "make-run.log"
    make = start_make(tmp_path, port, log)
    started = []
    try:
        wait_for_health(make, port, log)
        started = descendants(make.pid)
        commands = " ".join(" ".join(p.cmdline()) for p in started)

        os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=STOP_TIMEOUT_S)

        for part in ("redis-server", "daphne", "model_service.worker", "celery"):
            assert part in commands
        assert survivors(started) == []
        output = log.read_text()
        assert "shutting down a stale Redis server" in output
        assert stale_redis.wait(timeout=10) == 0
        assert "username 'researcher' password 'researcher-demo'" in output
        assert f"http://127.0.0.1:{port}/" in output
    finally:
        kill_all(make, started)
        if stale_redis.poll() is None:
            stale_redis.kill()
