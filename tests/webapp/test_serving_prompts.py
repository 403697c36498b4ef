"""From turns to prompt ids (`webapp.core.serving`): the Gemma chat format, fitted to
the context that the workers announce."""

import pytest

from model_service.chat_format import format_conversation
from model_service.client import WorkerUnavailable
from webapp.core import serving

MODEL = "tiny-random"
CONTEXT = 256  # what a worker serving tiny-random announces
# Heartbeats as `GenerationClient.alive_workers` returns them: two workers of
# different contexts; a request may land on either, so the smaller one counts.
WORKERS = {
    "small": {"models": {MODEL: {"context_length": CONTEXT, "vocab_size": 262_144}}},
    "large": {"models": {MODEL: {"context_length": 4096, "vocab_size": 262_144}}},
}


def turns(exchanges, last):
    pairs = [
        [{"role": "user", "content": q}, {"role": "model", "content": a}]
        for q, a in exchanges
    ]
    return [turn for pair in pairs for turn in pair] + [
        {"role": "user", "content": last}
    ]


def test_a_chat_prompt_is_the_chat_format_of_its_turns():
    conversation = turns([("Hi", "Hello!")], "How are you?")

    prompt = serving.chat_prompt(
        MODEL, conversation, max_new_tokens=64, workers=WORKERS
    )

    tokenizer = serving.tokenizer_for(MODEL)
    assert prompt.token_ids == format_conversation(tokenizer, conversation)
    assert prompt.dropped_turns == 0


def test_a_chat_drops_its_oldest_turns_to_fit_the_announced_context():
    exchanges = [(f"Question {i}: " + "word " * 30, "answer " * 30) for i in range(4)]
    conversation = turns(exchanges, "And now?")

    prompt = serving.chat_prompt(
        MODEL, conversation, max_new_tokens=64, workers=WORKERS
    )

    assert prompt.dropped_turns >= 2
    assert prompt.dropped_turns % 2 == 0  # whole exchanges go
    tokenizer = serving.tokenizer_for(MODEL)
    assert prompt.token_ids == format_conversation(
        tokenizer, conversation[prompt.dropped_turns :]
    )
    assert len(prompt.token_ids) <= CONTEXT - 64


def test_a_last_message_longer_than_the_context_is_a_clear_error():
    with pytest.raises(serving.ContextLengthExceeded, match="does not fit"):
        serving.chat_prompt(
            MODEL, turns([], "word " * 400), max_new_tokens=64, workers=WORKERS
        )


def test_an_api_prompt_keeps_every_turn_or_says_how_long_it_is():
    conversation = turns([("Hi", "Hello!")], "How are you?")
    ids, length = serving.exact_prompt(
        MODEL, conversation, max_new_tokens=16, workers=WORKERS
    )
    assert ids == format_conversation(serving.tokenizer_for(MODEL), conversation)
    assert length == 16

    with pytest.raises(serving.ContextLengthExceeded) as error:
        serving.exact_prompt(
            MODEL, conversation, max_new_tokens=CONTEXT, workers=WORKERS
        )
    assert f"maximum context length is {CONTEXT} tokens" in str(error.value)
    assert f"({len(ids)} in the messages, {CONTEXT} in the completion)" in str(
        error.value
    )


def test_an_api_answer_of_no_asked_length_fills_the_context_up_to_a_default():
    conversation = turns([], "Hi")
    ids, length = serving.exact_prompt(
        MODEL, conversation, max_new_tokens=None, workers=WORKERS
    )
    assert length == min(serving.DEFAULT_MAX_NEW_TOKENS, CONTEXT - len(ids))

    with pytest.raises(serving.ContextLengthExceeded):
        serving.exact_prompt(
            MODEL, turns([], "word " * 400), max_new_tokens=None, workers=WORKERS
        )


def test_a_model_no_worker_announces_has_no_context():
    with pytest.raises(WorkerUnavailable, match="no live generation worker"):
        serving.chat_prompt(
            "gemma3-270m", turns([], "Hi"), max_new_tokens=8, workers=WORKERS
        )


def test_a_catalog_model_gets_its_checkpoints_tokenizer(tmp_path):
    from model_service import protocol
    from model_service.checkpoints import flax_params
    from model_service.registry import load_model

    tiny = load_model("tiny-random")
    flax_params.save(tmp_path / "ckpt", tiny.params, tiny.config)
    redis = serving.client().redis
    redis.hset(
        protocol.CATALOG_KEY,
        "catalog-tiny",
        protocol.catalog_entry(str(tmp_path / "ckpt"), protocol.POLICY),
    )
    try:
        assert serving.model_source("catalog-tiny") == str(tmp_path / "ckpt")
        assert serving.model_source("tiny-random") == "tiny-random"
        workers = {"w": {"models": {"catalog-tiny": {"context_length": 256}}}}
        prompt = serving.chat_prompt(
            "catalog-tiny", turns([], "Hi"), max_new_tokens=8, workers=workers
        )
        assert prompt.token_ids == format_conversation(tiny.tokenizer, turns([], "Hi"))
    finally:
        redis.hdel(protocol.CATALOG_KEY, "catalog-tiny")
