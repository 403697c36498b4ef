"""The generation workers as the web app sees them.

One client per process (the sync one, and an async one per event loop), the models the
live workers serve, and prompts: turns in, token ids in the Gemma chat format out,
fitted to the context that the workers serving the model announce in their heartbeats
(`model_service.protocol`). The chat and the OpenAI API build their prompts here; a
web process holds tokenizers, never weights.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from model_service import chat_format, protocol
from model_service.client import (
    AsyncGenerationClient,
    GenerationClient,
    WorkerUnavailable,
)

Workers = dict[str, dict[str, Any]]
# The longest answer an API request gets when it does not say (and the context has
# room): OpenAI's own default is the rest of the context.
DEFAULT_MAX_NEW_TOKENS = 256


@functools.cache
def client() -> GenerationClient:
    """The process's synchronous client (its connection pool is thread-safe)."""
    return GenerationClient(settings.REDIS_URL)


_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, AsyncGenerationClient
] = weakref.WeakKeyDictionary()


def async_client() -> AsyncGenerationClient:
    """The running event loop's async client: its connections belong to that loop."""
    loop = asyncio.get_running_loop()
    if loop not in _async_clients:
        _async_clients[loop] = AsyncGenerationClient(settings.REDIS_URL)
    return _async_clients[loop]


def served_models(workers: Workers, kind: str = protocol.POLICY) -> list[str]:
    """The models of a kind (chat models by default) in the workers' heartbeats."""
    return sorted(
        {
            name
            for info in workers.values()
            for name, model in info["models"].items()
            if model.get("kind", protocol.POLICY) == kind
        }
    )


def available_models(kind: str = protocol.POLICY) -> list[str]:
    return served_models(client().alive_workers(), kind)


# --- tokenizers -----------------------------------------------------------------------

# One load at a time: a message sent while `warm_up` loads waits for that load.
_loading = threading.Lock()


def tokenizer_for(model_name: str):
    with _loading:
        return _load_tokenizer(model_name)


@functools.cache
def _load_tokenizer(model_name: str):
    # Imported here: the registry brings JAX, which a web process needs only once
    # somebody chats.
    from model_service.registry import load_tokenizer

    return load_tokenizer(model_source(model_name))


def model_source(model_name: str) -> str:
    """What the registry loads a model by: a catalog model's checkpoint (the catalog
    the workers read, `gemma:catalog`), else the name itself."""
    entry = client().redis.hget(protocol.CATALOG_KEY, model_name)
    return json.loads(entry)["path"] if entry else model_name


def warm_up(model_name: str) -> None:
    """Loads the model's tokenizer (seconds, once per process) before it is needed."""
    try:
        tokenizer_for(model_name)
    except Exception:  # noqa: BLE001 - the first answer fails with the reason instead
        pass


# --- prompts --------------------------------------------------------------------------


class PromptError(ValueError):
    """The turns cannot become a prompt for this model (the text says why)."""


class ContextLengthExceeded(PromptError):
    """The prompt, with the room asked for the answer, is longer than the context."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    token_ids: list[int]
    dropped_turns: int


def context_length(workers: Workers, model: str) -> int:
    """The context the workers serving `model` announce (WorkerUnavailable if none)."""
    length = protocol.context_length(workers, model)
    if length is None:
        raise WorkerUnavailable(f"no live generation worker serves model {model!r}")
    return length


def chat_prompt(
    model: str,
    turns: Sequence[Mapping[str, str]],
    *,
    max_new_tokens: int,
    workers: Workers,
) -> Prompt:
    """A chat's prompt: when the conversation outgrows the context, its oldest turns
    are dropped. Room is kept for the answer, but never more than half the context:
    a long conversation with a large `max_new_tokens` keeps its recent turns (the
    worker ends the answer at the context's end)."""
    context = context_length(workers, model)
    budget = context - min(max_new_tokens, context // 2)
    try:
        token_ids, dropped = chat_format.fit_to_context(
            tokenizer_for(model), turns, budget
        )
    except chat_format.PromptTooLong as exc:
        raise ContextLengthExceeded(
            f"The message does not fit the model's context: {exc}"
        ) from None
    except ValueError as exc:
        raise PromptError(str(exc)) from None
    return Prompt(token_ids=token_ids, dropped_turns=dropped)


def exact_prompt(
    model: str,
    turns: Sequence[Mapping[str, str]],
    *,
    max_new_tokens: int | None,
    workers: Workers,
) -> tuple[list[int], int]:
    """An API request's prompt and answer length: every turn (as OpenAI's API, which
    drops nothing), and the prompt with `max_new_tokens` must fit the context; when
    the caller did not ask for a length, the answer may fill the context up to
    `DEFAULT_MAX_NEW_TOKENS`."""
    context = context_length(workers, model)
    try:
        token_ids = chat_format.format_conversation(tokenizer_for(model), turns)
    except ValueError as exc:
        raise PromptError(str(exc)) from None
    room = context - len(token_ids)
    if max_new_tokens is None and room > 0:
        max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, room)
    if max_new_tokens is None or max_new_tokens > room:
        requested = len(token_ids) + (max_new_tokens or 1)
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {requested} tokens ({len(token_ids)} in the messages, "
            f"{requested - len(token_ids)} in the completion). Please reduce the "
            "length of the messages or completion."
        )
    return token_ids, max_new_tokens
