"""The generation worker as a real process against the session's real Redis, serving
the tiny-random model."""

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from model_service import protocol as proto
from model_service.client import (
    AsyncGenerationClient,
    Busy,
    GenerationClient,
    GenerationError,
    WorkerUnavailable,
)
from model_service.sampling import SamplingParams
from tests.conftest import wait_until, worker_env
from webapp.launcher import spawn, stop

MODEL = "tiny-random"


@pytest.fixture
def client(redis_url: str):
    client = GenerationClient(redis_url)
    yield client
    client.close()


@pytest.fixture
def own_redis_url(redis_url: str) -> Iterator[str]:
    """The same Redis server, another database: a worker there shares no queue or
    heartbeat with the session's worker, so its queue limit is its own."""
    if redis_url.startswith("unix://"):
        url = f"{redis_url.split('?')[0]}?db=13"
    else:
        url = urlunsplit(urlsplit(redis_url)._replace(path="/13"))
    client = GenerationClient(url)
    client.redis.delete(proto.queue_key(MODEL))  # nothing left from an earlier run
    yield url
    client.redis.delete(proto.queue_key(MODEL))
    client.close()


def start_worker(redis_url: str, *options: str):
    worker_id = f"test-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "model_service.worker", "--redis-url", redis_url,
        "--model", MODEL, "--worker-id", worker_id, *options,
    ]  # fmt: skip
    process = spawn(command, env=worker_env())
    client = GenerationClient(redis_url)
    wait_until(lambda: worker_id in client.alive_workers(), process, "worker")
    client.close()
    return worker_id, process


def inject(client: GenerationClient, payload: dict) -> str:
    """Queues a raw payload the way `submit` does, but past its validation."""
    request_id = uuid.uuid4().hex
    client.redis.hset(
        proto.request_key(request_id),
        mapping={"model": MODEL, "payload": json.dumps(payload)},
    )
    client.redis.rpush(proto.queue_key(MODEL), request_id)
    return request_id


def test_it_announces_itself_with_its_models_and_load(client, generation_worker):
    beat = client.alive_workers()[generation_worker]

    assert beat["models"][MODEL] == {
        "kind": "policy",
        "context_length": 256,
        "vocab_size": 262_144,
    }
    assert {"load", "pid", "started", "max_queue"} <= set(beat)


def test_it_generates_and_keeps_the_model_settings_and_seed(client, generation_worker):
    params = SamplingParams(temperature=0.7, top_p=0.9, seed=42, max_new_tokens=8)
    messages = [{"role": "user", "content": "Hello"}]

    result = client.generate(MODEL, messages, params)

    assert result.model == MODEL
    assert result.params == params
    assert result.seed == 42
    assert len(result.token_ids) == len(result.logprobs) <= 8
    assert result.finish_reason in ("stop", "length")
    assert client.generate(MODEL, messages, params).token_ids == result.token_ids


def test_it_replays_the_whole_stream_to_a_late_reader(client, generation_worker):
    request_id = client.submit(MODEL, [2, 105, 2364], SamplingParams(max_new_tokens=6))
    result = client.wait(request_id)

    events = list(client.stream(request_id))  # joins after the end

    pieces = [e for e in events if e["type"] == "piece"]
    assert "".join(p["text"] for p in pieces) == result.text
    assert [t for p in pieces for t in p["token_ids"]] == result.token_ids
    assert events[-1]["type"] == "done"


def test_a_caller_may_choose_the_request_id(client, generation_worker):
    chosen = uuid.uuid4().hex  # stored first, so that readers can follow the request
    params = SamplingParams(max_new_tokens=2)

    assert client.submit(MODEL, [2, 105], params, request_id=chosen) == chosen
    assert client.wait(chosen).request_id == chosen


def test_every_request_that_ends_is_recorded_on_the_finished_stream(
    client, generation_worker
):
    done = client.submit(MODEL, [2, 105], SamplingParams(max_new_tokens=2))
    failed = inject(client, {"prompt_ids": [2, 10**9], "params": {}})
    client.wait(done)
    with pytest.raises(GenerationError):
        client.wait(failed)

    recorded = client.redis.xrevrange(proto.FINISHED_KEY, count=50)
    ids = [fields["request_id"] for _entry, fields in recorded]
    assert done in ids and failed in ids


def test_a_prompt_over_the_context_fails_with_a_typed_code(client, generation_worker):
    context = client.alive_workers()[generation_worker]["models"][MODEL]
    too_long = [2] + [105] * context["context_length"]

    with pytest.raises(GenerationError) as failure:
        client.generate(MODEL, too_long)

    assert failure.value.code == proto.CONTEXT_LENGTH_EXCEEDED


def test_it_stops_a_request_mid_stream_and_keeps_its_partial_text(
    client, generation_worker
):
    request_id = client.submit(MODEL, [2, 105], SamplingParams(max_new_tokens=200))
    pieces = []
    for event in client.stream(request_id):
        if event["type"] == "piece":
            pieces.append(event)
            if len(pieces) == 2:
                client.cancel(request_id)
        else:
            done = event
    assert done["type"] == "done"
    assert done["finish_reason"] == "cancelled"
    assert done["text"] == "".join(p["text"] for p in pieces)
    assert 2 <= len(done["token_ids"]) < 200


def test_it_fails_a_poisoned_request_alone(client, generation_worker):
    healthy = SamplingParams(max_new_tokens=10)
    expected = client.generate(MODEL, [2, 105, 2364], healthy).token_ids
    good = client.submit(MODEL, [2, 105, 2364], healthy)
    bad_ids = inject(client, {"prompt_ids": [2, 10**9], "params": healthy.to_dict()})
    bad_setting = inject(
        client, {"prompt_ids": [2, 105], "params": {"temperature": -3}}
    )

    for request_id in (bad_ids, bad_setting):
        with pytest.raises(GenerationError) as failure:
            client.wait(request_id)
        assert failure.value.code == proto.INVALID_REQUEST
    assert client.wait(good).token_ids == expected
    assert generation_worker in client.alive_workers()


def test_it_refuses_at_once_when_no_worker_serves_the_model(client, generation_worker):
    with pytest.raises(WorkerUnavailable):
        client.submit("no-such-model", [2, 105])


@pytest.mark.asyncio
async def test_the_async_client_streams_too(redis_url, generation_worker):
    client = AsyncGenerationClient(redis_url)
    request_id = await client.submit(
        MODEL, "Hi there", SamplingParams(max_new_tokens=4)
    )

    events = [event async for event in client.stream(request_id)]
    result = await client.wait(request_id)

    assert events[-1]["type"] == "done"
    assert result.token_ids == events[-1]["token_ids"]
    await client.aclose()


def test_it_answers_busy_when_full_errors_when_frozen_and_leaves_cleanly(
    own_redis_url,
):
    client = GenerationClient(own_redis_url)
    worker_id, process = start_worker(
        own_redis_url, "--max-batch", "1", "--max-queue", "1"
    )
    running = client.submit(MODEL, [2, 105], SamplingParams(max_new_tokens=200))
    next(e for e in client.stream(running) if e["type"] == "piece")
    os.kill(process.pid, signal.SIGSTOP)  # frozen: it takes nothing more

    queued = client.submit(MODEL, [2, 105])
    with pytest.raises(Busy):
        client.submit(MODEL, [2, 105])

    # While it still beats, a reader of the queued request learns its place.
    events = client.stream(queued, queue_updates=True)
    assert next(events) == {"type": "queued", "ahead": 0}
    # Frozen, its heartbeat expires: readers get an error, they do not hang.
    with pytest.raises(GenerationError, match="died") as died:
        client.wait(running)
    assert died.value.code == proto.WORKER_DIED
    assert next(events)["code"] == proto.NO_WORKER

    os.kill(process.pid, signal.SIGCONT)
    stop(process)  # SIGTERM
    assert process.returncode == 0
    assert worker_id not in client.alive_workers()
    client.close()


def test_a_heartbeat_forgets_workers_gone_for_a_minute(client) -> None:
    now = time.time()
    ids = {f"{name}-{uuid.uuid4().hex}": name for name in ("gone", "recent", "me")}
    by_name = {name: worker_id for worker_id, name in ids.items()}
    client.redis.zadd(
        proto.WORKERS_KEY,
        {by_name["gone"]: now - proto.FORGET_AFTER_S - 1, by_name["recent"]: now - 2},
    )
    try:
        with client.redis.pipeline() as pipe:
            proto.beat(pipe, by_name["me"], json.dumps({"models": []}))
            pipe.execute()

        registered = set(client.redis.zrange(proto.WORKERS_KEY, 0, -1))
        assert {by_name["recent"], by_name["me"]} <= registered
        assert by_name["gone"] not in registered
        assert by_name["me"] in client.alive_workers()  # its key is set too
        assert by_name["recent"] not in client.alive_workers()  # it has no key
    finally:
        with client.redis.pipeline() as pipe:
            for worker_id in ids:
                proto.leave(pipe, worker_id)
            pipe.execute()


def test_it_serves_the_catalog_policies_and_reward_models_as_they_appear(
    own_redis_url, tmp_path
):
    from model_service.checkpoints import flax_params, reward_head
    from model_service.registry import load_model
    from model_service.reward import RewardModel

    tiny = load_model("tiny-random")
    flax_params.save(tmp_path / "policy", tiny.params, tiny.config)
    head = reward_head.RewardHead(
        weight=[0.1] * tiny.config.embed_dim, reward_mean=1.0, reward_std=2.0
    )
    reward_head.save(tmp_path / "rm", tiny.params, tiny.config, head)
    client = GenerationClient(own_redis_url)
    worker_id, process = start_worker(own_redis_url, "--catalog")
    try:
        client.redis.hset(
            proto.CATALOG_KEY,
            mapping={
                "my-policy": proto.catalog_entry(
                    str(tmp_path / "policy"), proto.POLICY
                ),
                "my-rm": proto.catalog_entry(str(tmp_path / "rm"), proto.REWARD_MODEL),
                "broken": proto.catalog_entry(str(tmp_path / "nope"), proto.POLICY),
            },
        )
        wait_until(
            lambda: (
                {"my-policy", "my-rm"}
                <= set(client.alive_workers()[worker_id]["models"])
            ),
            process,
            "catalog models",
        )
        models = client.alive_workers()[worker_id]["models"]
        assert models["my-rm"]["kind"] == proto.REWARD_MODEL
        assert models["my-policy"]["kind"] == proto.POLICY
        assert "broken" not in models

        assert client.generate("my-policy", [2, 105], SamplingParams(max_new_tokens=3))
        reward_model = RewardModel.load(tmp_path / "rm")
        ids = reward_model.answer_ids([{"role": "user", "content": "Hi"}], "Hello!")
        raw, normalized = client.reward("my-rm", ids)
        expected = float(reward_model.rewards([ids])[0])
        assert raw == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert normalized == pytest.approx((expected - 1.0) / 2.0, rel=1e-4, abs=1e-4)
        with pytest.raises(GenerationError) as bad:
            client.reward("my-rm", [2, 10**9])
        assert bad.value.code == proto.INVALID_REQUEST
    finally:
        client.redis.delete(proto.CATALOG_KEY)
        stop(process)
        client.close()
