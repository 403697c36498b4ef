"""Property-based fuzzing of `/v1/chat/completions` over real HTTP.

Whatever the body — malformed JSON, wrong types, lone surrogates, out-of-range
numbers, unknown roles, valid requests with odd values — the answer is never a 5xx
but a 503 with `Retry-After` (the model cannot take it now), and every error is
OpenAI's error JSON. A real Daphne and a real generation worker (`tiny-random`,
a 256-token context) answer; valid requests really generate.
"""

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_user
from webapp.api.models import ApiKey

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL = "tiny-random"

# Text with every kind of character, lone surrogates included (JSON escapes them).
TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool", "bot"]) | JSON,
        "content": TEXT
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}))
        | JSON,
    }
)
# Values near the valid ranges, and anything else.
FIELDS = {
    "model": st.sampled_from([MODEL, "", "no-such-model"]) | JSON,
    "messages": st.lists(MESSAGE, max_size=3) | JSON,
    "temperature": st.floats(-1, 3) | JSON,
    "top_p": st.floats(-0.5, 1.5) | JSON,
    "max_tokens": st.integers(-2, 300) | JSON,
    "max_completion_tokens": st.integers(-2, 300) | JSON,
    "n": st.integers(0, 3) | JSON,
    "seed": st.integers(-5, 2**33) | JSON,
    "stop": st.lists(TEXT, max_size=5) | TEXT | JSON,
    "stream": st.booleans() | JSON,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | JSON,
}
VALID = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
REQUESTS = st.fixed_dictionaries(
    {}, optional={name: strategy for name, strategy in FIELDS.items()}
).map(lambda fields: {**VALID, "max_tokens": 4, **fields})
BODIES = (
    REQUESTS.map(lambda body: json.dumps(body).encode())
    | JSON.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
)


@pytest.fixture
def api(live_url):
    raw_key = ApiKey.objects.create_key(make_user("fuzz"))[1]
    with httpx.Client(
        base_url=f"{live_url}/v1",
        headers={"Authorization": f"Bearer {raw_key}"},
        timeout=60,
    ) as client:
        yield client


def test_no_body_gets_a_5xx_but_a_503(api):
    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(BODIES)
    def check(body: bytes) -> None:
        response = api.post("/chat/completions", content=body)
        status = response.status_code
        assert status < 500 or status == 503, (status, body, response.text)
        if status == 503:
            assert response.headers["Retry-After"]
        if status >= 400:
            error = response.json()["error"]
            assert isinstance(error["message"], str) and error["type"]

    check()
