"""Chat under load: N conversations send a message at the same moment, over WebSockets.

Needs: the project installed (`make install`) and the benchmarks' extra
(`make bench`, which installs `websockets`).

    .venv/bin/python benchmarks/chat_load.py [--conversations 64] [--model gemma3-270m]
    .venv/bin/python benchmarks/chat_load.py --url http://127.0.0.1:8000  # running

Without `--url` it starts the whole system on its own, as `make run` does (a private
Redis, a fresh SQLite database, Daphne, one generation worker, one Celery worker:
`webapp.launcher`). With `--url` it drives a system already running, as a user would:
it signs in over HTTP (the demo researcher by default) and creates its conversations
through the chat's form. Then every conversation's page opens its WebSocket, all send
at once, and each reads its answer to the end.

Prints, per outcome, how many answers completed, failed, and waited in the model's
queue ("waiting for the model, N ahead"), and the time to the first token of the last
answer served (the one that waited longest). The last line is a JSON object with
`conversations`, `completed`, `failed`, `waited`, `last_first_token_s`, `seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Write two sentences about the sea."


def sign_in(url: str, username: str, password: str):
    """An HTTP session signed in through the login form."""
    import httpx

    session = httpx.Client(base_url=url, follow_redirects=True, timeout=30)
    session.get("/accounts/login/")
    response = session.post(
        "/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{url}/accounts/login/"},
    )
    if "sessionid" not in session.cookies:
        raise SystemExit(f"cannot sign in as {username!r} ({response.status_code})")
    return session


def new_conversation(session, url: str, model: str, max_new_tokens: int) -> int:
    """Creates a conversation through the chat's form; returns its id."""
    response = session.post(
        "/chat/new/",
        data={
            "model_name": model,
            "temperature": "0.7",
            "top_p": "0.95",
            "max_new_tokens": str(max_new_tokens),
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{url}/chat/"},
    )
    found = re.search(r"/chat/(\d+)/$", str(response.url))
    if not found:
        raise SystemExit(f"no conversation created ({response.status_code})")
    return int(found.group(1))


async def chat(url: str, cookie: str, conversation_id: int, start: asyncio.Event):
    """Opens the page's socket, sends once `start` is set, reads the answer to its
    end; returns (status, waited, seconds to the first token)."""
    import websockets

    ws_url = url.replace("http", "ws", 1) + f"/ws/chat/{conversation_id}/"
    headers = {"Cookie": cookie, "Origin": url}
    async with websockets.connect(ws_url, additional_headers=headers) as socket:
        await socket.recv()  # the (empty) branch
        await start.wait()
        sent = time.perf_counter()
        await socket.send(json.dumps({"action": "send", "text": PROMPT}))
        waited, first_token = False, None
        while True:
            message = json.loads(await socket.recv())
            if message["type"] == "queued":
                waited = True
            elif message["type"] == "token" and first_token is None:
                first_token = time.perf_counter() - sent
            elif message["type"] == "error":
                return "refused", waited, first_token
            elif message["type"] == "branch" and not message["streaming"]:
                if 'data-role="model"' not in message["html"]:
                    continue  # the branch sent before the answer row
                status = re.findall(r'data-status="(\w+)"', message["html"])[-1]
                return status, waited, first_token


async def crowd(url: str, cookie: str, conversation_ids: list[int]) -> list[tuple]:
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(chat(url, cookie, conversation_id, start))
        for conversation_id in conversation_ids
    ]
    await asyncio.sleep(1.0)  # every socket open and waiting
    start.set()
    return await asyncio.gather(*tasks)


def run(url: str, args: argparse.Namespace) -> dict:
    session = sign_in(url, args.username, args.password)
    ids = [
        new_conversation(session, url, args.model, args.max_new_tokens)
        for _ in range(args.conversations)
    ]
    cookie = f"sessionid={session.cookies['sessionid']}"
    began = time.perf_counter()
    outcomes = asyncio.run(crowd(url, cookie, ids))
    seconds = time.perf_counter() - began
    firsts = [first for _status, _waited, first in outcomes if first is not None]
    return {
        "conversations": len(outcomes),
        "completed": sum(status == "complete" for status, *_ in outcomes),
        "failed": sum(status != "complete" for status, *_ in outcomes),
        "waited": sum(waited for _status, waited, _first in outcomes),
        "last_first_token_s": round(max(firsts), 2) if firsts else None,
        "seconds": round(seconds, 1),
    }


def run_own_system(args: argparse.Namespace) -> dict:
    """Starts the whole system (which creates the demo users), runs, stops it."""
    from benchmarks.chat_latency import start_system
    from webapp.launcher import stop

    with tempfile.TemporaryDirectory(prefix="chat-load-") as workdir:
        launcher, redis_process = start_system(Path(workdir), args.model, args.port)
        try:
            return run(f"http://127.0.0.1:{args.port}", args)
        finally:
            launcher.stop_all()
            stop(redis_process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--url", help="a running system (default: start one)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--username", default="researcher")
    parser.add_argument("--password", default="researcher-demo")
    args = parser.parse_args()
    result = run(args.url.rstrip("/"), args) if args.url else run_own_system(args)
    print(
        f"{result['conversations']} conversations at once: {result['completed']} "
        f"completed, {result['failed']} failed, {result['waited']} waited their turn; "
        f"first token of the last one served after {result['last_first_token_s']} s; "
        f"all done in {result['seconds']} s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
