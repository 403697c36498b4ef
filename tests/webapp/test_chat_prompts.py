"""From a branch to prompt ids: the Gemma chat format, and the oldest turns dropped."""

import pytest

from model_service.chat_format import format_conversation
from tests.conftest import make_user
from webapp.chat import prompts
from webapp.chat.models import Conversation, Message

MODEL = "tiny-random"  # a 256-token context: long conversations overflow it quickly


@pytest.fixture
def conversation(db) -> Conversation:
    return Conversation.objects.create(
        owner=make_user("olga"), model_name=MODEL, max_new_tokens=64
    )


def answer_after(
    conversation: Conversation, exchanges: list[tuple[str, str]], last: str
) -> tuple[Message, list[Message]]:
    """Saves the exchanges and a last question; returns the empty answer to it and
    the messages before it."""
    history = []
    for question, reply in [*exchanges, (last, None)]:
        history.append(
            Message.objects.create(
                conversation=conversation,
                parent=history[-1] if history else None,
                role="user",
                content=question,
            )
        )
        history.append(
            Message.objects.create(
                conversation=conversation,
                parent=history[-1],
                role="model",
                content=reply or "",
                max_new_tokens=conversation.max_new_tokens,
                model_name=MODEL,
            )
        )
    return history[-1], history[:-1]


def turns(exchanges, last):
    pairs = [
        [{"role": "user", "content": q}, {"role": "model", "content": a}]
        for q, a in exchanges
    ]
    return [turn for pair in pairs for turn in pair] + [
        {"role": "user", "content": last}
    ]


def test_it_formats_the_branch_with_the_chat_format(conversation):
    exchanges = [("Hi", "Hello!")]
    answer, history = answer_after(conversation, exchanges, "How are you?")

    prompt = prompts.build_prompt(answer, history)

    tokenizer = prompts.tokenizer_for(MODEL)
    assert prompt.token_ids == format_conversation(
        tokenizer, turns(exchanges, "How are you?")
    )
    assert prompt.dropped_turns == 0


def test_it_drops_the_oldest_turns_when_the_context_is_full(conversation):
    exchanges = [(f"Question {i}: " + "word " * 30, "answer " * 30) for i in range(4)]
    answer, history = answer_after(conversation, exchanges, "And now?")

    prompt = prompts.build_prompt(answer, history)

    all_turns = turns(exchanges, "And now?")
    assert prompt.dropped_turns >= 2
    assert prompt.dropped_turns % 2 == 0  # whole exchanges go
    tokenizer = prompts.tokenizer_for(MODEL)
    assert prompt.token_ids == format_conversation(
        tokenizer, all_turns[prompt.dropped_turns :]
    )
    budget = prompts.context_length(MODEL) - conversation.max_new_tokens
    assert len(prompt.token_ids) <= budget


def test_a_last_message_longer_than_the_context_is_a_clear_error(conversation):
    answer, history = answer_after(conversation, [], "word " * 400)
    with pytest.raises(prompts.PromptError, match="does not fit the model's context"):
        prompts.build_prompt(answer, history)
