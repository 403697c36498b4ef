"""Chat latency: from "send" to the first token painted in a real browser.

Needs what `make install` sets up (the `dev` extra's Playwright and Debian's
Chromium, installed as root), nothing more:

    make install
    .venv/bin/python benchmarks/chat_latency.py [--model gemma3-270m] [--messages 20]

Starts the whole system on its own (a private Redis, a fresh SQLite database, Daphne,
one generation worker, one Celery worker: `webapp.launcher`, as `make run` does) and
Debian's Chromium. For each message, in a fresh conversation so that every prompt is
the same, the page records `performance.now()` when "Send" is clicked and at the first
animation frame after the answer's first text appears.

Before each message the same prompt ids, with the conversation's settings, go
straight to the generation worker through its client, and the time from submit to the
first piece is the engine's own prefill (plus two Redis hops), measured on the same
worker at the same moment as the chat's message: just after the page has opened.
What is left is the chat's overhead: the WebSocket, the database, Celery, the channel
layer and the page. The last line reads `first_token_ms=X prefill_ms=Y
overhead_ms=Z`: medians over the messages, Z of each message's first paint minus its
own prefill (the goal is Z <= 20).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from webapp.launcher import Launcher, socket_url, start_redis, stop  # noqa: E402

PROMPT = "Write one sentence about the sea."
# The conversations' settings, and so those of the engine's own requests too.
SETTINGS = {"temperature": 0.0, "top_p": 0.95, "max_new_tokens": 8}
CHROMIUM = "/usr/bin/chromium"
READY_TIMEOUT_S = 300

# Resolves with the time from the click to the frame after the first text appears.
# The text is typed a frame before the click, as a person's typing is: laying it out
# is not part of sending it.
MEASURE_SEND = """async (text) => {
  const messages = document.getElementById('messages');
  document.getElementById('composer-text').value = text;
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
  const painted = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      const el = messages.querySelector('article.model .answer-text');
      if (el && el.textContent.length > 0) {
        observer.disconnect();
        requestAnimationFrame(() => resolve(performance.now()));
      }
    });
    observer.observe(messages, {subtree: true, childList: true, characterData: true});
  });
  const start = performance.now();
  document.getElementById('send').click();
  return (await painted) - start;
}"""


def start_system(workdir: Path, model: str, port: int) -> tuple[Launcher, object]:
    redis_process = start_redis(workdir / "redis.sock")
    os.environ["REDIS_URL"] = socket_url(workdir / "redis.sock")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    launcher = Launcher(port=port, model=model)
    try:
        launcher.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not launcher.healthy():
            if launcher.exited() or time.monotonic() > deadline:
                raise SystemExit("the system did not become healthy")
            time.sleep(1)
    except BaseException:  # a failed migration too: nothing may outlive the run
        launcher.stop_all()
        stop(redis_process)
        raise
    return launcher, redis_process


def new_conversation_urls(model: str, count: int) -> tuple[str, list[str]]:
    """A user with `count` empty conversations; returns (session cookie, paths)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from webapp.chat.models import Conversation

    user = User.objects.create_user("bench", password="bench-password")
    client = Client()
    client.force_login(user)
    paths = []
    for _ in range(count):
        conversation = Conversation.objects.create(
            owner=user, model_name=model, **SETTINGS
        )
        paths.append(f"/chat/{conversation.pk}/")
    return client.cookies["sessionid"].value, paths


def engine_first_piece_ms(client, model: str, prompt_ids: list[int]) -> float:
    """Submit to first piece, straight to the generation worker (no chat layer)."""
    from model_service.sampling import SamplingParams

    start = time.perf_counter()
    request_id = client.submit(model, prompt_ids, SamplingParams(**SETTINGS))
    first = next(iter(client.stream(request_id)))
    elapsed = (time.perf_counter() - start) * 1000
    if first["type"] != "piece":
        raise SystemExit(f"the generation worker failed: {first}")
    client.wait(request_id)
    return elapsed


def open_page(page, path: str) -> None:
    page.goto(path)
    page.wait_for_selector("body[data-connected]")
    # Nobody sends within milliseconds of the page opening: let the page finish
    # loading (the branch sent on connect) before the clock starts.
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(200)


def measure(
    base_url: str, model: str, cookie: str, paths: list[str]
) -> tuple[list[float], list[float]]:
    """(send -> first paint, engine prefill) per message, in milliseconds."""
    from playwright.sync_api import sync_playwright

    from model_service.chat_format import format_conversation
    from model_service.client import GenerationClient
    from model_service.registry import load_tokenizer

    client = GenerationClient(os.environ["REDIS_URL"])
    prompt_ids = format_conversation(
        load_tokenizer(model), [{"role": "user", "content": PROMPT}]
    )
    first_paint, prefill = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"],
        )  # fmt: skip
        context = browser.new_context(base_url=base_url)
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": base_url}])
        page = context.new_page()
        for path in paths:
            # The engine's own request and the chat's message each come just after
            # the page has opened: the same moment for the machine and the worker.
            open_page(page, path)
            prefill.append(engine_first_piece_ms(client, model, prompt_ids))
            open_page(page, path)
            first_paint.append(page.evaluate(MEASURE_SEND, PROMPT))
            page.wait_for_selector("article.model.streaming", state="detached")
        browser.close()
    client.close()
    return first_paint, prefill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="chat-latency-") as workdir:
        launcher, redis_process = start_system(Path(workdir), args.model, args.port)
        try:
            cookie, paths = new_conversation_urls(args.model, args.messages + 1)
            first_token, prefill = measure(
                f"http://127.0.0.1:{args.port}", args.model, cookie, paths
            )
        finally:
            launcher.stop_all()
            stop(redis_process)
    # The first message warms every part up (compilation included); it is not counted.
    first_token, prefill = first_token[1:], prefill[1:]

    # Each message's overhead against the prefill timed just before it: the machine's
    # speed drifts between messages, and a pair shares its moment.
    overhead = [paint - own for paint, own in zip(first_token, prefill, strict=True)]
    print(f"model {args.model}, {args.messages} messages, prompt {PROMPT!r}")
    print(f"{'':24} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in (
        ("send -> first paint", first_token),
        ("engine prefill", prefill),
        ("overhead", overhead),
    ):
        print(
            f"{name:24} {statistics.median(values):8.1f} "
            f"{min(values):8.1f} {max(values):8.1f}  ms"
        )
    print(
        f"first_token_ms={statistics.median(first_token):.1f} "
        f"prefill_ms={statistics.median(prefill):.1f} "
        f"overhead_ms={statistics.median(overhead):.1f}"
    )


if __name__ == "__main__":
    main()
