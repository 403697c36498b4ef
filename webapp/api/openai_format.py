"""The OpenAI chat-completions wire format: requests in, responses and errors out.

Pure functions, no I/O: the views in `webapp.api.views` do the talking to the
generation worker. Gemma has no system role, so system messages are put in front of the
first user turn, and `assistant` is Gemma's `model`.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from typing import Any

from django.http import JsonResponse

from model_service import chat_format
from model_service.client import GenerationResult
from model_service.sampling import SamplingParams
from webapp.core import serving
from webapp.core.text import has_lone_surrogate, strings

MAX_STOP_STRINGS = 4
# Seeds become 32-bit sampling keys (`model_service.sampler`): larger ones would
# collide, so they are refused.
MAX_SEED = 2**32 - 1
# Our `cancelled` (the caller went away) has no OpenAI name; the text simply ended.
FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop"}


class RequestError(ValueError):
    """A bad request: 400 with OpenAI's error body, naming the parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_response(
    status: int, message: str, *, kind: str, code: str | None = None, param=None
) -> JsonResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JsonResponse(body, status=status)


def unavailable(message: str, retry_after_s: int = 1) -> JsonResponse:
    """503: the model cannot take the request now; a client may retry after the
    `Retry-After` header's seconds."""
    response = error_response(503, message, kind="server_error", code="unavailable")
    response["Retry-After"] = str(retry_after_s)
    return response


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[dict[str, str]]  # Gemma turns: role user / model
    max_tokens: int | None  # as asked; None: as the context allows
    params: SamplingParams  # its max_new_tokens is settled with the prompt
    stream: bool
    include_usage: bool


def parse_request(raw: bytes) -> CompletionRequest:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise RequestError("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise RequestError("The body must be a JSON object.")
    if any(map(has_lone_surrogate, strings(body))):
        raise RequestError(
            "The body holds a string that is not valid Unicode (a lone "
            "surrogate escape such as \\ud800)."
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("`model` is required.", "model")
    if _integer(body, "n", 1, 1) != 1:
        raise RequestError("Only n=1 is supported.", "n")
    stream_options = _object(body, "stream_options")
    asked = max_tokens(body)
    return CompletionRequest(
        model=model,
        messages=gemma_turns(body.get("messages")),
        max_tokens=asked,
        params=sampling_params(body, asked or serving.DEFAULT_MAX_NEW_TOKENS),
        stream=_boolean(body, "stream"),
        include_usage=_boolean(stream_options, "include_usage", "stream_options"),
    )


def _object(body: dict, name: str) -> dict:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"`{name}` must be an object.", name)
    return value


def _boolean(body: dict, name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"`{name}` must be true or false.", param or name)
    return value


def _text(content: Any) -> str:
    """A message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict)
        and p.get("type") == "text"
        and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise RequestError("Message content must be text.", "messages")


def gemma_turns(messages: Any) -> list[dict[str, str]]:
    """OpenAI messages as Gemma turns (`chat_format.turns_from_messages`, with
    `developer` as `system` and content parts joined)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list.", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise RequestError("Each message must be an object.", "messages")
    plain = [
        {
            "role": "system" if m.get("role") == "developer" else m.get("role"),
            "content": _text(m.get("content")),
        }
        for m in messages
    ]
    try:
        turns = chat_format.turns_from_messages(plain)
    except ValueError as exc:
        raise RequestError(f"Bad messages: {exc}.", "messages") from None
    if not turns or turns[0]["role"] != "user":
        raise RequestError("The first non-system message must be a user message.")
    return turns


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"`{name}` must be a number.", name)
    if not low <= value <= high:
        raise RequestError(f"`{name}` must be between {low} and {high}.", name)
    return float(value)


def _integer(
    body: dict, name: str, default: int | None, low: int, high: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise RequestError(f"`{name}` must be an integer {bounds}.", name)
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise RequestError(
            f"`stop` must be a string or a list of up to {MAX_STOP_STRINGS} strings.",
            "stop",
        )
    return tuple(stops)


def max_tokens(body: dict) -> int | None:
    """The answer length asked for (`max_completion_tokens` over the older
    `max_tokens`), or None: then the context decides (`serving.exact_prompt`)."""
    asked = _integer(body, "max_tokens", None, 1)
    return _integer(body, "max_completion_tokens", asked, 1)


def sampling_params(body: dict, max_new_tokens: int) -> SamplingParams:
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        raise RequestError("`top_p` must be greater than 0.", "top_p")
    return SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        stop=_stop(body.get("stop")),
        seed=_integer(body, "seed", secrets.randbelow(2**31), 0, MAX_SEED),
    )


def error_event(message: str, code: str | None) -> str:
    """A failure in the middle of a stream (the status line was sent long ago)."""
    body = {"message": message, "type": "server_error", "param": None, "code": code}
    return f"data: {json.dumps({'error': body})}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(request_id: str, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": FINISH_REASONS[result.finish_reason],
            }
        ],
        "usage": usage(result.prompt_tokens, len(result.token_ids)),
    }


def chunk(
    request_id: str,
    model: str,
    delta: dict[str, str] | None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> str:
    """One server-sent event of a stream; `delta=None` makes the usage chunk."""
    choices = (
        []
        if delta is None
        else [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ]
    )
    body: dict[str, Any] = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"
