"""The rater queue as JSON, for other front ends and load tests.

`POST /api/rate/next`, `POST /api/rate/submit`, `POST /api/rate/skip` and
`GET /api/whoami`. A caller is a signed-in session (with Django's CSRF token in an
`X-CSRFToken` header) or `Authorization: Bearer <api key>` (no CSRF then: no browser
sends that header on its own). Raters only. Every answer is JSON; failures are
`{"error": message}` with 400 (bad input), 401, 403, 405 or 409 (the queue refused:
`queue.TaskError`). Like the page, nothing here names a model, a campaign or a row id.
"""

from __future__ import annotations

import json
import uuid
from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from webapp.accounts.roles import is_rater
from webapp.api.models import ApiKey, hash_key
from webapp.core.text import unstorable
from webapp.ratings import queue
from webapp.ratings.forms import SkipForm, VerdictForm, first_error
from webapp.ratings.shown import shown_task

NOTHING_TO_RATE = "Nothing to rate now. Come back later."
# The JSON type each field must have when present (the forms then check the values),
# and how to say it.
STRING = ((str,), "a string")
INTEGER = ((int,), "an integer")
BOOLEAN = ((bool,), "true or false")
NUMBER = ((int, float), "a number")
JSON_TYPES = {
    "token": STRING,
    "choice": INTEGER,
    "both_bad": BOOLEAN,
    "unsafe_left": BOOLEAN,
    "unsafe_right": BOOLEAN,
    "rationale": STRING,
    "active_seconds": NUMBER,
    "reason": STRING,
}


class BadInput(Exception):
    """The request's body cannot be used (the message says why)."""


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def key_user(request: HttpRequest):
    """The active owner of the request's live Bearer API key, or None."""
    _scheme, _, raw_key = request.headers["Authorization"].partition(" ")
    key = (
        ApiKey.objects.select_related("user")
        .filter(key_hash=hash_key(raw_key.strip()), revoked=False)
        .first()
    )
    return key.user if key and key.user.is_active else None


def csrf_failure(request: HttpRequest) -> bool:
    """Whether a session request fails Django's CSRF check (the views are exempt
    from the middleware's own check, which Bearer requests need not pass)."""
    checker = CsrfViewMiddleware(lambda _request: None)
    return checker.process_view(request, None, (), {}) is not None


def uses_key(request: HttpRequest) -> bool:
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def json_api(method: str, *, raters_only: bool = True):
    """Auth (session with CSRF, or a Bearer key), method and error JSON for a view
    (which gets the URL's keyword arguments)."""

    def decorator(view):
        @login_not_required
        @csrf_exempt
        @never_cache
        @wraps(view)
        def guarded(request: HttpRequest, **kwargs) -> JsonResponse:
            if request.method != method:
                return error(405, f"Use {method}.")
            if uses_key(request):
                user = key_user(request)
                if user is None:
                    return error(401, "Incorrect, revoked or missing API key.")
                request.user = user
            elif not request.user.is_authenticated:
                return error(401, "Sign in, or send `Authorization: Bearer <api key>`.")
            elif csrf_failure(request):
                return error(
                    403,
                    "CSRF check failed: send the csrftoken cookie's value in an "
                    "X-CSRFToken header, or use an API key.",
                )
            if raters_only and not is_rater(request.user):
                return error(403, "This API is for raters.")
            try:
                return view(request, **kwargs)
            except BadInput as exc:
                return error(400, str(exc))
            except queue.TaskError as exc:
                return error(409, str(exc))

        return guarded

    return decorator


def json_body(request: HttpRequest) -> dict:
    """The body as a JSON object whose known fields have their JSON types."""
    try:
        body = json.loads(request.body)
    except RequestDataTooBig:
        raise BadInput("The body is too large.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput("The body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise BadInput("The body must be a JSON object.")
    if problem := unstorable(body):
        raise BadInput(f"The body holds {problem}.")
    for field, (types, described) in JSON_TYPES.items():
        value = body.get(field)
        if value is None:
            continue
        # bool is an int to Python, never to a JSON client.
        if not isinstance(value, types) or (
            isinstance(value, bool) and bool not in types
        ):
            raise BadInput(f"{field} must be {described}.")
    return body


def task_token(body: dict) -> uuid.UUID:
    try:
        return uuid.UUID(body.get("token") or "")
    except ValueError:
        raise BadInput("token must be the token of a task.") from None


def valid(form) -> dict:
    if not form.is_valid():
        raise BadInput(first_error(form))
    return form.cleaned_data


@json_api("POST")
def next_task(request: HttpRequest) -> JsonResponse:
    assignment = queue.next_task(queue.rater_for(request.user))
    if assignment is None:
        return JsonResponse({"task": None, "message": NOTHING_TO_RATE})
    return JsonResponse({"task": shown_task(assignment).as_json()})


@json_api("POST")
def submit(request: HttpRequest) -> JsonResponse:
    """Stores a verdict; answers with the choice as stored (the first one, for a
    verdict sent twice), never with the score from A's side, which would tell
    which side A was on."""
    body = json_body(request)
    token = task_token(body)
    form = VerdictForm(body)
    valid(form)
    rating = queue.submit(queue.rater_for(request.user), token, form.verdict())
    choice = queue.choice_for(rating.score, rating.left)
    return JsonResponse({"ok": True, "token": str(token), "choice": choice})


@json_api("POST")
def skip(request: HttpRequest) -> JsonResponse:
    body = json_body(request)
    token = task_token(body)
    reason = valid(SkipForm(body))["reason"]
    queue.skip(queue.rater_for(request.user), token, reason)
    return JsonResponse({"ok": True, "token": str(token)})


@json_api("GET", raters_only=False)
def whoami(request: HttpRequest) -> JsonResponse:
    """The caller's username: the cheapest authenticated view (load tests measure
    the stack's own ceiling with it)."""
    return JsonResponse({"username": request.user.get_username()})
