"""Continuous batching on the tiny-random model: requests join and leave a running
batch and get exactly what they would get alone."""

import pytest

from model_service.engine import Engine
from model_service.registry import load_model
from model_service.sampler import Sampler
from model_service.sampling import SamplingParams

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def model():
    """int8 weights, as the generation worker serves them on a CPU."""
    return load_model("tiny-random", quantize="int8")


@pytest.fixture
def engine(model) -> Engine:
    return Engine(model, max_batch=3, max_length=MAX_LENGTH)


def run_to_end(engine: Engine, updates: list) -> dict[str, list]:
    """Steps until no request is active; returns every update per request."""
    by_request: dict[str, list] = {}
    for update in updates:
        by_request.setdefault(update.request_id, []).append(update)
    while engine.active:
        for update in engine.step():
            by_request.setdefault(update.request_id, []).append(update)
    return by_request


def final(updates: list):
    assert updates[-1].finish_reason or updates[-1].error
    return updates[-1]


def alone(engine: Engine, prompt: list[int], params: SamplingParams) -> list[int]:
    """The tokens of a request decoded on its own by the sampler's plain loop, with
    the engine's weights, batch shape and cache."""
    sampler = Sampler(
        engine.sampler.config,
        engine.sampler.params,
        max_batch=engine.max_batch,
        max_length=MAX_LENGTH,
        cache_dtype=engine.sampler.cache_dtype,
    )
    return sampler.generate([prompt], params, engine.tokenizer)[0].token_ids


def test_it_decodes_greedily_like_the_sampler_alone(model, engine) -> None:
    prompt = model.tokenizer.encode("Hello there", add_bos=True)
    params = SamplingParams(max_new_tokens=10)

    updates = run_to_end(engine, [engine.add("a", prompt, params)])

    done = final(updates["a"])
    assert done.finish_reason == "length"
    assert done.all_token_ids == alone(engine, prompt, params)
    assert [t for u in updates["a"] for t in u.token_ids] == done.all_token_ids
    assert "".join(u.text for u in updates["a"]) == done.full_text


def test_it_gives_a_request_joining_a_running_batch_the_same_tokens(model, engine):
    first = model.tokenizer.encode("A first request, already running", add_bos=True)
    second = model.tokenizer.encode("Second", add_bos=True)
    greedy = SamplingParams(max_new_tokens=12)
    sampled = SamplingParams(temperature=1.0, top_k=50, seed=11, max_new_tokens=8)

    updates = [engine.add("first", first, greedy)]
    for _ in range(3):
        updates += engine.step()
    updates.append(engine.add("second", second, sampled))
    by_request = run_to_end(engine, updates)

    assert final(by_request["first"]).all_token_ids == alone(engine, first, greedy)
    assert final(by_request["second"]).all_token_ids == alone(engine, second, sampled)


def test_it_grows_and_shrinks_the_batch_without_changing_any_tokens(model, engine):
    texts = {"long": "The longest one", "mid": "Middle", "short": "S"}
    prompts = {
        name: model.tokenizer.encode(text, add_bos=True) for name, text in texts.items()
    }
    lengths = {"long": 14, "mid": 10, "short": 3}
    params = {
        name: SamplingParams(temperature=0.8, seed=i, max_new_tokens=lengths[name])
        for i, name in enumerate(prompts)
    }
    rows = [engine.rows]

    updates = []
    for name in prompts:  # each request grows the batch: one row, two, three
        updates.append(engine.add(name, prompts[name], params[name]))
        updates += engine.step()
        rows.append(engine.rows)
    while engine.active:  # "short" ends first, then the others shrink it back
        updates += engine.step()
        rows.append(engine.rows)
    by_request = run_to_end(engine, updates)

    assert rows[:4] == [1, 1, 2, 3] and rows[-1] == 1 and 2 in rows[4:]
    for name in prompts:
        assert final(by_request[name]).all_token_ids == alone(
            engine, prompts[name], params[name]
        )


def test_it_reuses_the_row_of_a_finished_request(model, engine) -> None:
    prompt = model.tokenizer.encode("Row reuse", add_bos=True)
    params = SamplingParams(max_new_tokens=3)

    for name in ("one", "two", "three", "four"):
        by_request = run_to_end(engine, [engine.add(name, prompt, params)])
        assert final(by_request[name]).all_token_ids == alone(engine, prompt, params)
    assert engine.free_slots == 3


def test_it_cancels_a_request_mid_stream_keeping_its_partial_text(model, engine):
    prompt = model.tokenizer.encode("Cancel me", add_bos=True)
    params = SamplingParams(max_new_tokens=40)
    updates = [engine.add("c", prompt, params)]
    for _ in range(4):
        updates += engine.step()

    done = engine.cancel("c")

    assert done.finish_reason == "cancelled"
    assert done.all_token_ids == alone(engine, prompt, params)[:5]
    assert done.full_text == "".join(u.text for u in [*updates, done])
    assert engine.active == []


@pytest.mark.parametrize(
    "poison",
    [
        {"prompt_ids": [2, 300_000]},  # out of the vocabulary
        {"prompt_ids": [2] * MAX_LENGTH},  # longer than the context
        {"prompt_ids": []},
    ],
)
def test_it_fails_a_poisoned_request_alone(model, engine, poison) -> None:
    prompt = model.tokenizer.encode("A healthy request", add_bos=True)
    params = SamplingParams(max_new_tokens=6)
    updates = [engine.add("ok", prompt, params), *engine.step()]

    with pytest.raises(ValueError):
        engine.add("bad", poison["prompt_ids"], params)
    by_request = run_to_end(engine, updates)

    assert "bad" not in by_request
    assert final(by_request["ok"]).all_token_ids == alone(engine, prompt, params)


def test_it_rejects_an_invalid_setting_that_skipped_validation(model, engine) -> None:
    params = SamplingParams()
    object.__setattr__(params, "temperature", -1.0)  # as if built past validation

    with pytest.raises(ValueError, match="temperature"):
        engine.add("bad", [2, 100], params)
    assert engine.active == []
