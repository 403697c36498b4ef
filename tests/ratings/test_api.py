"""The rater queue's JSON API (`/api/rate/...`, `/api/whoami`): session with CSRF or
a Bearer API key, raters only, JSON errors."""

import datetime
import json

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import logged_in, make_user
from tests.ratings.factories import make_campaign
from webapp.accounts.roles import RATER
from webapp.api.models import ApiKey
from webapp.ratings import queue
from webapp.ratings.models import Assignment, Rating

pytestmark = pytest.mark.django_db

NEXT = reverse("ratings:api-next")
SUBMIT = reverse("ratings:api-submit")
SKIP = reverse("ratings:api-skip")
WHOAMI = reverse("ratings:api-whoami")


class KeyClient(Client):
    """A client that calls with a Bearer API key and no session."""

    def __init__(self, raw_key: str) -> None:
        super().__init__(HTTP_AUTHORIZATION=f"Bearer {raw_key}")


def key_for(user) -> str:
    return ApiKey.objects.create_key(user)[1]


def post(client: Client, url: str, body=None, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body or {})
    return client.post(url, data, content_type="application/json", **extra)


@pytest.fixture
def alice(rater) -> KeyClient:
    return KeyClient(key_for(rater))


def next_token(client: Client) -> str:
    return post(client, NEXT).json()["task"]["token"]


# --- who may call ---------------------------------------------------------------------


def test_anonymous_callers_get_401(db):
    make_campaign()
    for url in (NEXT, SUBMIT, SKIP):
        response = post(Client(), url)
        assert response.status_code == 401
        assert "Bearer" in response.json()["error"]
    assert Client().get(WHOAMI).status_code == 401
    assert not Assignment.objects.exists()


def test_a_bad_or_revoked_key_gets_401(rater):
    make_campaign()
    raw = key_for(rater)
    ApiKey.objects.update(revoked=True)

    for key in (raw, "gs-nonsense"):
        response = post(KeyClient(key), NEXT)
        assert response.status_code == 401
        assert response.json() == {"error": "Incorrect, revoked or missing API key."}
    assert not Assignment.objects.exists()


def test_only_raters_may_call(researcher, stranger):
    make_campaign()
    for user in (researcher, stranger):
        assert post(KeyClient(key_for(user)), NEXT).status_code == 403
        assert post(logged_in(user), NEXT).status_code == 403
    assert not Assignment.objects.exists()
    assert KeyClient(key_for(researcher)).get(WHOAMI).json() == {"username": "rosa"}


def test_a_session_needs_the_csrf_token_and_a_key_does_not(rater, alice):
    make_campaign()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(rater)

    refused = post(browser, NEXT)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert not Assignment.objects.exists()

    browser.get(reverse("ratings:rate"))  # sets the csrftoken cookie (and leases)
    token = browser.cookies["csrftoken"].value
    accepted = post(browser, NEXT, HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 200 and accepted.json()["task"]
    # The same rater with a key: one lease, the same task.
    assert next_token(alice) == accepted.json()["task"]["token"]


def test_whoami_names_the_caller(rater, alice):
    assert alice.get(WHOAMI).json() == {"username": "alice"}
    assert logged_in(rater).get(WHOAMI).json() == {"username": "alice"}
    assert alice.post(WHOAMI).status_code == 405


def test_the_wrong_method_gets_405(alice):
    make_campaign()
    response = alice.get(NEXT)
    assert response.status_code == 405
    assert response.json() == {"error": "Use POST."}
    assert not Assignment.objects.exists()


# --- the queue ------------------------------------------------------------------------


def test_next_gives_the_task_as_the_page_shows_it(rater, alice):
    make_campaign(guidelines="Be *fair*.")

    task = post(alice, NEXT).json()["task"]

    lease = Assignment.objects.get()
    left, right = (
        (lease.item.answer_a, lease.item.answer_b)
        if lease.left == "a"
        else (lease.item.answer_b, lease.item.answer_a)
    )
    assert task == {
        "token": str(lease.token),
        "prompt": lease.item.prompt.text,
        "history": [],
        "left": left.text,
        "right": right.text,
        "guidelines": "Be *fair*.",
        "expires_at": lease.expires_at.isoformat(),
        "choices": {str(k): v for k, v in queue.CHOICES.items()},
        "skip_reasons": queue.SKIP_REASONS,
    }


def test_next_says_when_there_is_nothing_to_rate(alice):
    response = post(alice, NEXT)
    assert response.status_code == 200
    assert response.json() == {
        "task": None,
        "message": "Nothing to rate now. Come back later.",
    }


def test_a_submit_is_stored_from_as_side_and_answered_with_the_choice(alice):
    make_campaign(prompts=2, ratings_per_item=1)
    token = next_token(alice)
    lease = Assignment.objects.get(token=token)
    verdict = {
        "token": token,
        "choice": 7,
        "both_bad": True,
        "unsafe_left": True,
        "rationale": "Right is right.",
        "active_seconds": 8.25,
    }

    response = post(alice, SUBMIT, verdict)

    assert response.status_code == 200
    assert response.json() == {"ok": True, "token": token, "choice": 7}
    rating = Rating.objects.get()
    assert rating.score == (-3 if lease.left == "a" else 3)
    assert (rating.unsafe_a, rating.unsafe_b) == (
        (True, False) if lease.left == "a" else (False, True)
    )
    assert (rating.both_bad, rating.rationale, rating.active_seconds) == (
        True,
        "Right is right.",
        8.25,
    )
    # Sent again (even with another choice): stored once, answered as stored.
    again = post(alice, SUBMIT, {**verdict, "choice": 1})
    assert again.json()["choice"] == 7 and Rating.objects.count() == 1


@pytest.mark.parametrize(
    "body, error",
    [
        ("not json", "The body must be a JSON object."),
        ("[1, 2]", "The body must be a JSON object."),
        ({"choice": 1}, "token must be the token of a task."),
        ({"token": "abc", "choice": 1}, "token must be the token of a task."),
        ({"token": 5, "choice": 1}, "token must be a string."),
    ],
)
def test_a_bad_body_or_token_is_a_400(alice, body, error):
    make_campaign()
    next_token(alice)

    response = post(alice, SUBMIT, body)

    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert not Rating.objects.exists()


@pytest.mark.parametrize(
    "fields, error",
    [
        ({}, "choice: Choose one of the 7 points (1 to 7)."),
        ({"choice": 0}, "choice: Choose one of the 7 points (1 to 7)."),
        ({"choice": 8}, "choice: Choose one of the 7 points (1 to 7)."),
        ({"choice": "3"}, "choice must be an integer."),
        ({"choice": True}, "choice must be an integer."),
        ({"choice": 3, "both_bad": "yes"}, "both_bad must be true or false."),
        ({"choice": 3, "unsafe_left": 1}, "unsafe_left must be true or false."),
        ({"choice": 3, "rationale": ["a"]}, "rationale must be a string."),
        ({"choice": 3, "rationale": "x" * 5001}, "rationale: Ensure this value"),
        ({"choice": 3, "rationale": "\ud800"}, "The body holds a lone surrogate"),
        ({"choice": 3, "rationale": "a\x00"}, "The body holds a NUL character"),
        ({"choice": 3, "active_seconds": "9"}, "active_seconds must be a number."),
        ({"choice": 3, "active_seconds": -1}, "active_seconds: Ensure this value"),
    ],
)
def test_a_bad_verdict_is_a_400_that_changes_nothing(alice, fields, error):
    make_campaign()
    token = next_token(alice)

    response = post(alice, SUBMIT, {"token": token, **fields})

    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert not Rating.objects.exists()
    assert Assignment.objects.get().status == Assignment.Status.LEASED


def test_a_refused_submit_is_a_409_that_changes_nothing(rater, alice):
    make_campaign()
    bob = KeyClient(key_for(make_user("bob", RATER)))
    token = next_token(alice)

    theirs = post(bob, SUBMIT, {"token": token, "choice": 1})
    unknown = post(bob, SUBMIT, {"token": "0" * 32, "choice": 1})
    Assignment.objects.filter(token=token).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    expired = post(alice, SUBMIT, {"token": token, "choice": 1})

    assert (theirs.status_code, unknown.status_code) == (409, 409)
    assert theirs.json() == unknown.json() == {"error": "This task is not yours."}
    assert expired.status_code == 409 and "ran out" in expired.json()["error"]
    assert not Rating.objects.exists()


def test_a_skip_gives_the_task_back_with_its_reason(alice):
    make_campaign(prompts=1)
    token = next_token(alice)

    bad = post(alice, SKIP, {"token": token, "reason": "bored"})
    response = post(alice, SKIP, {"token": token, "reason": "cannot_judge"})

    assert bad.status_code == 400
    assert bad.json() == {"error": "reason: Give one of the skip reasons."}
    assert response.json() == {"ok": True, "token": token}
    lease = Assignment.objects.get()
    assert (lease.status, lease.skip_reason) == ("skipped", "cannot_judge")
    assert post(alice, NEXT).json()["task"] is None
    rated = post(alice, SUBMIT, {"token": token, "choice": 2})
    assert rated.status_code == 409 and not Rating.objects.exists()
