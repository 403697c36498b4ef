"""The OpenAI-compatible API, driven by the official `openai` client over real HTTP.

A real Daphne serves the project; a real generation worker runs `tiny-random` (random
weights: the text is gibberish, but it is made of real sampled tokens).
"""

import json

import httpx
import openai
import pytest

from tests.conftest import make_user
from webapp.api.models import ApiKey

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL = "tiny-random"


@pytest.fixture
def api_url(live_url) -> str:
    return f"{live_url}/v1"


@pytest.fixture
def raw_key() -> str:
    return ApiKey.objects.create_key(make_user("ada"))[1]


@pytest.fixture
def client(api_url, raw_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=api_url, api_key=raw_key, max_retries=0)


def post(api_url: str, raw_key: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{api_url}/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {raw_key}"},
        timeout=60,
    )


def ask(client: openai.OpenAI, **options):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say something."}], **options
    )


def test_it_lists_the_served_models(client):
    assert MODEL in [model.id for model in client.models.list()]


def test_it_completes_with_usage_and_finish_reason(client):
    completion = ask(client, temperature=0, max_tokens=5)

    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens > 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5


def test_it_streams_chunks_that_add_up_to_the_same_answer(client, api_url):
    whole = ask(client, temperature=0, max_tokens=12).choices[0].message.content

    chunks = list(
        ask(
            client,
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12


def test_a_seed_reproduces_a_sampled_answer(client):
    first, second, other = (
        ask(client, temperature=1.0, top_p=0.9, seed=seed, max_tokens=16)
        for seed in (7, 7, 8)
    )
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


def test_it_ends_the_answer_at_a_stop_string(client):
    text = ask(client, temperature=0, max_tokens=24).choices[0].message.content
    stop = text[8:11]
    assert stop.strip()

    stopped = ask(client, temperature=0, max_tokens=24, stop=[stop])

    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_it_refuses_a_bad_key(api_url):
    client = openai.OpenAI(base_url=api_url, api_key="gs-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as error:
        ask(client)
    assert error.value.code == "invalid_api_key"


def test_it_refuses_a_revoked_key(client):
    ApiKey.objects.update(revoked=True)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert error.value.code == "model_not_found"


@pytest.mark.parametrize(
    "options, param",
    [
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"n": 2}, "n"),
        ({"seed": 2**40}, "seed"),
    ],
)
def test_bad_requests_are_a_400_naming_the_parameter(client, options, param):
    request = {"messages": [{"role": "user", "content": "hi"}], **options}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, **request)
    assert error.value.param == param


def test_a_prompt_longer_than_the_context_is_a_400_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 9000}]
        )
    assert error.value.code == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in error.value.message


def test_room_asked_for_the_answer_counts_against_the_context(client):
    with pytest.raises(openai.BadRequestError) as error:
        ask(client, max_tokens=250)
    assert error.value.code == "context_length_exceeded"


def test_a_lone_surrogate_is_a_400(api_url, raw_key):
    body = '{"model": "%s", "messages": [{"role": "user", "content": "\\ud800"}]}'

    response = post(api_url, raw_key, (body % MODEL).encode())

    assert response.status_code == 400
    assert "lone surrogate" in response.json()["error"]["message"]


def test_a_body_over_the_upload_limit_is_a_413(api_url, raw_key):
    content = "x" * (5 * 1024 * 1024)
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}

    response = post(api_url, raw_key, json.dumps(body).encode())

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_full_queue_is_a_503_with_retry_after(api_url, raw_key, full_worker):
    body = {"model": full_worker, "messages": [{"role": "user", "content": "Hi"}]}

    response = post(api_url, raw_key, json.dumps(body).encode())

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["type"] == "server_error"
