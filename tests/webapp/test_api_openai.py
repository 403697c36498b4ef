"""The OpenAI-compatible API, driven by the official `openai` client over real HTTP.

A real Daphne serves the project; a real generation worker runs `tiny-random` (random
weights: the text is gibberish, but it is made of real sampled tokens).
"""

from collections.abc import Iterator

import openai
import pytest

from tests.browser.live_server import asgi_server
from tests.conftest import make_user
from webapp.api.models import ApiKey

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL = "tiny-random"


@pytest.fixture(scope="module")
def api_url(django_db_setup, generation_worker) -> Iterator[str]:
    with asgi_server() as url:
        yield f"{url}/v1"


@pytest.fixture
def client(api_url) -> openai.OpenAI:
    _key, raw_key = ApiKey.objects.create_key(make_user("ada"))
    return openai.OpenAI(base_url=api_url, api_key=raw_key, max_retries=0)


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
    ],
)
def test_bad_requests_are_a_400_naming_the_parameter(client, options, param):
    request = {"messages": [{"role": "user", "content": "hi"}], **options}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, **request)
    assert error.value.param == param
