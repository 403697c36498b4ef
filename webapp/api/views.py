"""`/v1/models` and `/v1/chat/completions`, for OpenAI clients with a Bearer API key.

The views are async: a streamed completion holds no thread while it waits for tokens.
The prompt is built here, in token ids, fitted to the context the generation workers
announce (`webapp.core.serving`), so that a request too long for the model is a 400
before anything is queued; the web process never runs a model. Every failure is
OpenAI's error JSON with a status a client can act on: 4xx for the caller's mistakes,
503 with `Retry-After` when the model cannot take the request now.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from model_service import protocol
from model_service.client import (
    AsyncGenerationClient,
    GenerationError,
    result_from_done,
)
from webapp.api import openai_format
from webapp.api.models import ApiKey, hash_key
from webapp.core import serving

log = logging.getLogger(__name__)

# How each typed worker error reaches the caller: (status, OpenAI error type).
ERROR_STATUS = {
    protocol.CONTEXT_LENGTH_EXCEEDED: (400, "invalid_request_error"),
    protocol.INVALID_REQUEST: (400, "invalid_request_error"),
    protocol.NO_WORKER: (503, "server_error"),
    protocol.WORKER_STOPPED: (503, "server_error"),
    protocol.WORKER_DIED: (503, "server_error"),
    "busy": (503, "server_error"),
}


async def authenticated_user(request: HttpRequest):
    scheme, _, raw_key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not raw_key:
        return None
    key = (
        await ApiKey.objects.select_related("user")
        .filter(key_hash=hash_key(raw_key.strip()), revoked=False)
        .afirst()
    )
    return key.user if key and key.user.is_active else None


def api_view(view):
    """Bearer-key auth and OpenAI error JSON for an async API view, for whatever
    goes wrong too."""

    @login_not_required
    @csrf_exempt
    async def guarded(request: HttpRequest) -> HttpResponse:
        try:
            if await authenticated_user(request) is None:
                return openai_format.error_response(
                    401,
                    "Incorrect or missing API key. Create one with "
                    "`python manage.py create_api_key USERNAME`.",
                    kind="invalid_request_error",
                    code="invalid_api_key",
                )
            return await view(request)
        except Exception:
            log.exception("API request failed")
            return openai_format.error_response(
                500, "The server failed on this request.", kind="server_error"
            )

    return guarded


@api_view
async def list_models(request: HttpRequest) -> JsonResponse:
    models = serving.served_models(await serving.async_client().alive_workers())
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "gemma-studio"}
        for name in models
    ]
    return JsonResponse({"object": "list", "data": data})


@api_view
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return openai_format.error_response(
            405, "Use POST.", kind="invalid_request_error", code="method_not_allowed"
        )
    try:
        completion = openai_format.parse_request(request.body)
    except RequestDataTooBig:
        return openai_format.error_response(
            413,
            "The request body is too large.",
            kind="invalid_request_error",
            code="request_too_large",
        )
    except openai_format.RequestError as exc:
        return openai_format.error_response(
            400, str(exc), kind="invalid_request_error", param=exc.param
        )
    client = serving.async_client()
    try:
        request_id = await submit(client, completion)
    except serving.ContextLengthExceeded as exc:
        return openai_format.error_response(
            400,
            str(exc),
            kind="invalid_request_error",
            param="messages",
            code=protocol.CONTEXT_LENGTH_EXCEEDED,
        )
    except serving.PromptError as exc:
        return openai_format.error_response(
            400, str(exc), kind="invalid_request_error", param="messages"
        )
    except UnknownModel:
        return openai_format.error_response(
            404,
            f"The model {completion.model!r} does not exist or no worker serves it.",
            kind="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    except GenerationError as exc:
        return generation_failed(exc)
    if completion.stream:
        response = StreamingHttpResponse(
            sse_stream(client, request_id, completion),
            content_type="text/event-stream",
        )
        response["Cache-Control"] = "no-cache"
        return response
    try:
        result = await client.wait(request_id)
    except GenerationError as exc:
        return generation_failed(exc)
    return JsonResponse(openai_format.completion(request_id, result))


class UnknownModel(GenerationError):
    pass


async def submit(
    client: AsyncGenerationClient, completion: openai_format.CompletionRequest
) -> str:
    """Builds the prompt for the context the serving workers announce, and queues it."""
    workers = await client.alive_workers()
    if workers and completion.model not in serving.served_models(workers):
        raise UnknownModel(completion.model)
    prompt_ids, max_new_tokens = await sync_to_async(
        serving.exact_prompt, thread_sensitive=False
    )(
        completion.model,
        completion.messages,
        max_new_tokens=completion.max_tokens,
        workers=workers,
    )
    params = dataclasses.replace(completion.params, max_new_tokens=max_new_tokens)
    return await client.submit(completion.model, prompt_ids, params, workers=workers)


def generation_failed(exc: GenerationError) -> JsonResponse:
    """A refused or failed request, by the worker's typed code."""
    status, kind = ERROR_STATUS.get(exc.code, (500, "server_error"))
    if status == 503:
        return openai_format.unavailable(f"The model cannot take this now: {exc}.")
    return openai_format.error_response(status, str(exc), kind=kind, code=exc.code)


async def sse_stream(
    client: AsyncGenerationClient,
    request_id: str,
    completion: openai_format.CompletionRequest,
) -> AsyncIterator[str]:
    """Chunks as the worker makes them; a caller who goes away cancels the request."""
    model = completion.model
    finished = False
    try:
        yield openai_format.chunk(
            request_id, model, {"role": "assistant", "content": ""}
        )
        async for event in client.stream(request_id):
            if event["type"] == "piece":
                yield openai_format.chunk(request_id, model, {"content": event["text"]})
                continue
            finished = True
            if event["type"] == "error":
                yield openai_format.error_event(event["message"], event.get("code"))
                break
            result = result_from_done(request_id, event)
            reason = openai_format.FINISH_REASONS[result.finish_reason]
            yield openai_format.chunk(request_id, model, {}, finish_reason=reason)
            if completion.include_usage:
                usage = openai_format.usage(result.prompt_tokens, len(result.token_ids))
                yield openai_format.chunk(request_id, model, None, usage=usage)
        yield "data: [DONE]\n\n"
    finally:
        if not finished:
            await client.cancel(request_id)
