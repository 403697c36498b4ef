"""`/v1/models` and `/v1/chat/completions`, for OpenAI clients with a Bearer API key.

The views are async: a streamed completion holds no thread while it waits for tokens.
They talk to the generation worker through the async client; the web process never
runs a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from model_service.client import (
    AsyncGenerationClient,
    Busy,
    GenerationError,
    WorkerUnavailable,
    result_from_done,
)
from webapp.api import openai_format
from webapp.api.models import ApiKey, hash_key
from webapp.chat.catalog import served_models


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
    """Bearer-key auth and OpenAI error JSON for an async API view."""

    @login_not_required
    @csrf_exempt
    async def guarded(request: HttpRequest) -> HttpResponse:
        if await authenticated_user(request) is None:
            return openai_format.error_response(
                401,
                "Incorrect or missing API key. Create one with "
                "`python manage.py create_api_key USERNAME`.",
                kind="invalid_request_error",
                code="invalid_api_key",
            )
        return await view(request)

    return guarded


def unavailable(message: str) -> JsonResponse:
    return openai_format.error_response(
        503, message, kind="server_error", code="unavailable"
    )


@api_view
async def list_models(request: HttpRequest) -> JsonResponse:
    client = AsyncGenerationClient(settings.REDIS_URL)
    try:
        models = served_models(await client.alive_workers())
    finally:
        await client.aclose()
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
    except openai_format.RequestError as exc:
        return openai_format.error_response(
            400, str(exc), kind="invalid_request_error", param=exc.param
        )
    client = AsyncGenerationClient(settings.REDIS_URL)
    try:
        request_id = await submit(client, completion)
    except GenerationError as exc:
        await client.aclose()
        return submit_error(exc, completion.model)
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
        return generation_failed(str(exc))
    finally:
        await client.aclose()
    return JsonResponse(openai_format.completion(request_id, result))


class UnknownModel(GenerationError):
    pass


async def submit(
    client: AsyncGenerationClient, completion: openai_format.CompletionRequest
) -> str:
    workers = await client.alive_workers()
    if workers and completion.model not in served_models(workers):
        raise UnknownModel(completion.model)
    return await client.submit(completion.model, completion.messages, completion.params)


def submit_error(exc: GenerationError, model: str) -> JsonResponse:
    if isinstance(exc, UnknownModel):
        return openai_format.error_response(
            404,
            f"The model {model!r} does not exist or no worker serves it.",
            kind="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    if isinstance(exc, Busy):
        return unavailable(f"The model {model!r} is busy; retry in a moment.")
    if isinstance(exc, WorkerUnavailable):
        return unavailable(f"No generation worker is running ({exc}).")
    return generation_failed(str(exc))


def generation_failed(message: str) -> JsonResponse:
    """The worker rejected or failed the request: a rejected prompt is the caller's."""
    if message.startswith("ValueError"):
        return openai_format.error_response(400, message, kind="invalid_request_error")
    return openai_format.error_response(500, message, kind="server_error")


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
                yield openai_format.error_event(event["message"])
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
        await client.aclose()
