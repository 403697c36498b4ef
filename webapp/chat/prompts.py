"""From a branch of messages to the token ids the generation worker gets.

Runs in the web process, right after the user's message is saved: it holds a tokenizer
per model but never the weights. Turns use the Gemma chat format
(`model_service.chat_format`); when a conversation outgrows the context, the oldest
turns are dropped and the count is kept on the answer so the page can say so.
"""

from __future__ import annotations

import dataclasses
import functools
import threading

from model_service import chat_format
from webapp.chat.models import Message


class PromptError(Exception):
    """The conversation cannot be turned into a prompt (the text says why)."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    token_ids: list[int]
    dropped_turns: int


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

    return load_tokenizer(model_name)


def warm_up(model_name: str) -> None:
    """Loads the model's tokenizer (seconds, once per process) before it is needed."""
    try:
        tokenizer_for(model_name)
    except Exception:  # noqa: BLE001 - the first answer fails with the reason instead
        pass


def context_length(model_name: str) -> int:
    """Positions a worker gives a request of this model (prompt and answer).

    The worker's sampler holds min(the model's context, DEFAULT_MAX_LENGTH) positions;
    for a checkpoint path, whose config is only known once loaded, the default. A
    worker started with a smaller `--max-length` rejects a prompt that does not fit,
    and the answer fails with that message.
    """
    from model_service.config import get_config
    from model_service.registry import GEMMA3_270M, TINY_RANDOM
    from model_service.sampler import DEFAULT_MAX_LENGTH

    presets = {GEMMA3_270M: "gemma3-270m", TINY_RANDOM: "tiny"}
    if model_name not in presets:
        return DEFAULT_MAX_LENGTH
    return min(get_config(presets[model_name]).max_seq_len, DEFAULT_MAX_LENGTH)


def build_prompt(answer: Message, history: list[Message]) -> Prompt:
    """The prompt of `answer`: `history` is its branch before it, oldest first (the
    caller has it in hand from saving the answer: no query on the way to submit)."""
    tokenizer = tokenizer_for(answer.model_name)
    context = context_length(answer.model_name)
    # Room for the answer, but never more than half the context: a long conversation
    # with a large max_new_tokens keeps its recent turns (the worker caps the answer).
    budget = context - min(answer.max_new_tokens, context // 2)
    turns = [{"role": m.role, "content": m.content} for m in history]
    try:
        token_ids, dropped = chat_format.fit_to_context(tokenizer, turns, budget)
    except ValueError as exc:
        raise PromptError(
            f"The message does not fit the model's context: {exc}"
        ) from None
    return Prompt(token_ids=token_ids, dropped_turns=dropped)
