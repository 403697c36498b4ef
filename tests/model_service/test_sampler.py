"""The sampler on the tiny config: cached decoding against the model's own full
forward passes, seeds, policies, stops, context limits and shape buckets."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from model_service.config import GLOBAL, LOCAL, get_config
from model_service.cpu_kernels import bfloat16_native
from model_service.next_tokens import sample_rows
from model_service.quantize import quantize_params
from model_service.registry import load_model
from model_service.sampler import (
    PREFILL_PRODUCTS_VARIABLE,
    ContextTooLong,
    Generation,
    Sampler,
    bfloat16_prefill,
    prefill_fn,
    step_fn,
)
from model_service.sampling import MAX_TOP_K, SamplingParams
from model_service.transformer import Transformer, init_params, stack_layers

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def sampler(model) -> Sampler:
    return Sampler(model.config, model.params, max_batch=2, max_length=MAX_LENGTH)


@functools.cache
def full_forward(config):
    return jax.jit(Transformer(config=config).apply)


def full_forward_greedy(model, prompt: list[int], steps: int) -> tuple[list, list]:
    """The model's own greedy loop: a full causal pass over everything, every step
    (no cache), padded to one length so that it compiles once."""
    forward = full_forward(model.config)
    ids, logprobs = list(prompt), []
    for _ in range(steps):
        tokens = (
            jnp.zeros((1, MAX_LENGTH), jnp.int32)
            .at[0, : len(ids)]
            .set(jnp.asarray(ids))
        )
        positions = jnp.where(
            jnp.arange(MAX_LENGTH) < len(ids), jnp.arange(MAX_LENGTH), -1
        )
        logits = forward({"params": model.params}, tokens, positions[None]).logits
        logits = logits[0, len(ids) - 1]
        token = int(jnp.argmax(logits))
        logprobs.append(float(jax.nn.log_softmax(logits)[token]))
        ids.append(token)
    return ids[len(prompt) :], logprobs


def prompt_of(model, text: str) -> list[int]:
    return model.tokenizer.encode(text, add_bos=True)


def test_it_decodes_greedily_like_the_models_own_loop(model, sampler) -> None:
    # Longer than the tiny config's sliding window, so the ring buffer wraps.
    prompt = prompt_of(model, "The quick brown fox jumps over the lazy dog")
    params = SamplingParams(max_new_tokens=8)

    [answer] = sampler.generate([prompt], params, model.tokenizer)
    expected, expected_logprobs = full_forward_greedy(model, prompt, 8)

    assert answer.token_ids == expected
    assert answer.logprobs == pytest.approx(expected_logprobs, abs=1e-4)
    assert answer.finish_reason == "length"


def test_with_the_workers_float16_cache_it_decodes_as_the_models_own_loop_on_the_kernel(
    model,
) -> None:
    prompt = prompt_of(model, "The quick brown fox jumps over the lazy dog")
    params = SamplingParams(max_new_tokens=8)
    sampler = Sampler(
        model.config, model.params, max_length=MAX_LENGTH, cache_dtype=jnp.float16
    )

    [answer] = sampler.generate([prompt], params, model.tokenizer)
    expected, expected_logprobs = full_forward_greedy(model, prompt, 8)

    assert answer.token_ids == expected
    assert answer.logprobs == pytest.approx(expected_logprobs, abs=1e-2)
    # On a CPU the step reads the float16 cache in the C++ kernel: XLA's attention
    # would read all of it, converted, at twice the cost of a float32 one.
    step = step_fn.lower(
        sampler.params, sampler.init_state(), config=model.config,
        dtype=sampler.dtype,
    )  # fmt: skip
    assert "gemma_studio_decode_attention" in step.as_text()


@pytest.mark.parametrize("quantized", [False, True])
def test_stacked_as_the_worker_serves_it_the_model_decodes_as_unrolled(
    model, quantized
) -> None:
    """`stack_layers` makes the model a scan over its layers (the worker's programs
    hold a block per run of the pattern). Nine layers of the pattern (local, local,
    global, local): runs of one and two layers, a type in two runs of a repeat (its
    second run starts at 2 in the type's cache stack), and a repeat cut short."""
    config = dataclasses.replace(
        get_config("tiny"),
        num_layers=9,
        attention_pattern=(LOCAL, LOCAL, GLOBAL, LOCAL),
    )
    params = init_params(config, seed=3)
    if quantized:
        params = quantize_params(params)
    prompts = [[2, 5, 9, 11, 13, 17, 1, 3], [2, 7], [2, 8, 8, 8, 8, 8]]
    greedy = SamplingParams(max_new_tokens=13)
    sampled = SamplingParams(max_new_tokens=13, temperature=1.0, seed=4)
    samplers = [
        Sampler(config, tree, max_batch=3, max_length=24, cache_dtype=jnp.float16)
        for tree in (params, stack_layers(params, config))
    ]

    unrolled, stacked = (
        s.generate(prompts, [greedy, sampled, greedy], model.tokenizer)
        for s in samplers
    )

    # XLA fuses the scan's operations otherwise than the unrolled loop's: last bits
    # differ, and a bfloat16 rounding in a prefill product can grow them (1.05e-5 on
    # a log-prob of -12.23 seen, 9e-7 of it, where float32's step there is 1e-6).
    for row_unrolled, row_stacked in zip(unrolled, stacked, strict=True):
        assert row_stacked.token_ids == row_unrolled.token_ids
        assert row_stacked.logprobs == pytest.approx(
            row_unrolled.logprobs, rel=2e-6, abs=1e-5
        )
    # The stacked step holds 4 blocks (the 3 runs of a repeat, and the short repeat's
    # one), each with its 5 int8 products, and the output projection's.
    if quantized:
        products = [
            step_fn.lower(s.params, s.init_state(), config=config, dtype=s.dtype)
            .as_text()
            .count("gemma_studio_int8_matmul")
            for s in samplers
        ]
        assert products == [9 * 5 + 1, 4 * 5 + 1]


def int8_calls(program: str) -> tuple[int, int]:
    """How many int8 products a lowered program holds: bfloat16 ones, float32 ones."""
    bfloat16 = program.count("gemma_studio_int8_matmul_bf16")
    return bfloat16, program.count("gemma_studio_int8_matmul") - bfloat16


@pytest.mark.parametrize("chosen", ["", "bfloat16", "float32"])
def test_prefill_products_take_the_chosen_activations_and_decode_steps_float32(
    model, monkeypatch, chosen
) -> None:
    """A prefill pass has many rows: by default its int8 products round the
    activations to bfloat16 where the CPU multiplies those natively (twice the
    multiply-adds per instruction), or as the environment says. A decode step's few
    rows are bound by memory and keep float32."""
    monkeypatch.setenv(PREFILL_PRODUCTS_VARIABLE, chosen)
    sampler = Sampler(
        model.config, quantize_params(model.params), max_batch=2, max_length=MAX_LENGTH
    )
    cache = sampler.prefill([2, 5, 9]).cache
    tokens = np.zeros((1, 16), np.int32)
    positions = np.arange(16, dtype=np.int32)[None]
    options = {"config": model.config, "dtype": sampler.dtype}

    prefill = prefill_fn.lower(
        sampler.prefill_params, cache, tokens, positions, np.int32(15), **options
    ).as_text()
    step = step_fn.lower(sampler.params, sampler.init_state(), **options).as_text()

    layers = model.config.num_layers * 5
    bfloat16 = chosen == "bfloat16" or (not chosen and bfloat16_native())
    assert int8_calls(prefill) == ((layers, 0) if bfloat16 else (0, layers))
    assert int8_calls(step) == (0, layers + 1)  # and the output projection


def test_a_prefill_products_setting_it_does_not_know_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(PREFILL_PRODUCTS_VARIABLE, "int4")

    with pytest.raises(ValueError, match="bfloat16 or float32, not 'int4'"):
        bfloat16_prefill()


def test_it_decodes_a_batch_of_prompts_of_different_lengths(model, sampler) -> None:
    prompts = [prompt_of(model, "Hi"), prompt_of(model, "A longer prompt than that")]
    params = SamplingParams(max_new_tokens=5)

    answers = sampler.generate(prompts, params, model.tokenizer)

    for prompt, answer in zip(prompts, answers, strict=True):
        assert answer.token_ids == full_forward_greedy(model, prompt, 5)[0]


def test_it_streams_the_same_answer_as_the_loop(model, sampler) -> None:
    prompt = prompt_of(model, "Stream me")
    params = SamplingParams(temperature=0.8, seed=7, max_new_tokens=6)

    pieces = list(sampler.stream(prompt, params, model.tokenizer))
    [answer] = sampler.generate([prompt], params, model.tokenizer)

    assert [t for p in pieces for t in p.token_ids] == answer.token_ids
    assert "".join(p.text for p in pieces) == answer.text
    assert [p.finish_reason for p in pieces] == [None] * 5 + ["length"]


def test_it_reproduces_a_sample_from_its_seed(model, sampler) -> None:
    prompt = prompt_of(model, "Tell me a story")

    def tokens(seed: int) -> list[int]:
        params = SamplingParams(
            temperature=1.0, top_p=0.95, seed=seed, max_new_tokens=8
        )
        return sampler.generate([prompt], params, model.tokenizer)[0].token_ids

    assert tokens(1) == tokens(1)
    assert tokens(1) != tokens(2)


def test_it_samples_greedily_with_top_k_one(model, sampler) -> None:
    prompt = prompt_of(model, "Top k")
    greedy = SamplingParams(max_new_tokens=6)
    top1 = SamplingParams(temperature=1.5, top_k=1, seed=3, max_new_tokens=6)

    [a] = sampler.generate([prompt], greedy, model.tokenizer)
    [b] = sampler.generate([prompt], top1, model.tokenizer)

    assert a.token_ids == b.token_ids


def test_it_rejects_a_prompt_longer_than_the_context(model, sampler) -> None:
    with pytest.raises(ContextTooLong, match="64"):
        sampler.prefill([model.tokenizer.bos_id] * MAX_LENGTH)


def test_it_rejects_token_ids_outside_the_vocabulary(model, sampler) -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sampler.prefill([2, model.config.vocab_size])


def test_it_compiles_prefill_once_per_pass_size(sampler) -> None:
    sampler.prefill([2] * 20)  # one pass of 32
    compiled = prefill_fn._cache_size()

    sampler.prefill([2] * 30)  # 32 again
    sampler.prefill([2] * 17)  # and again
    assert prefill_fn._cache_size() == compiled


def test_it_prefills_in_passes_as_the_full_forward(model) -> None:
    length = 200  # passes of 128, 64 and 16 (8 of them padding)
    sampler = Sampler(model.config, model.params, max_length=256)
    words = prompt_of(model, "a prompt long enough for three passes")
    prompt = (words + words[1:] * 40)[:length]
    tokens = jnp.zeros((1, 256), jnp.int32).at[0, :length].set(jnp.asarray(prompt))
    positions = jnp.where(jnp.arange(256) < length, jnp.arange(256), -1)
    full = full_forward(model.config)(
        {"params": model.params}, tokens, positions[None]
    ).logits[0, length - 1]

    prefilled = sampler.prefill(prompt)

    assert len(prompt) == length
    assert jnp.allclose(prefilled.logits, full, atol=1e-4, rtol=1e-4)


def test_it_ends_at_the_end_of_turn_and_keeps_its_logprob(model) -> None:
    tokenizer = model.tokenizer
    generation = Generation(tokenizer, SamplingParams(), 3, MAX_LENGTH)
    ids = tokenizer.encode("Done.")

    for token in ids:
        generation.accept(token, -0.5)
    last = generation.accept(tokenizer.end_of_turn_id, -0.1)

    assert last.finish_reason == "stop"
    assert generation.text == "Done."
    assert generation.token_ids == [*ids, tokenizer.end_of_turn_id]
    assert generation.logprobs[-1] == -0.1


def test_it_ends_at_a_stop_string_and_keeps_the_text_before_it(model) -> None:
    tokenizer = model.tokenizer
    generation = Generation(tokenizer, SamplingParams(stop=("\nQ:",)), 3, MAX_LENGTH)

    for token in tokenizer.encode("An answer.\nQ: next question"):
        if generation.accept(token, 0.0).finish_reason:
            break

    assert generation.finish_reason == "stop"
    assert generation.text == "An answer."


@pytest.mark.parametrize("text", ["I ❤️ 🦙 and 🤖!", "日本語と中文, 𠀋𡈽 rare CJK"])
def test_it_streams_emoji_and_cjk_as_whole_characters(model, text: str) -> None:
    tokenizer = model.tokenizer
    ids = tokenizer.encode(text)
    # 🦙 and 𠀋 have no piece of their own: they arrive as one token per UTF-8 byte.
    assert any(tokenizer.piece_bytes(i) == b"\xf0" for i in ids)
    generation = Generation(tokenizer, SamplingParams(max_new_tokens=len(ids)), 1, 999)

    pieces = [generation.accept(token, 0.0).text for token in ids]

    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_a_sampled_nul_byte_adds_no_text(model) -> None:
    # Byte fallback has a piece for NUL; no PostgreSQL text column holds one, and an
    # answer holding it could not be saved (a campaign's answer job died on one).
    tokenizer = model.tokenizer
    nul = tokenizer.encode("\x00")
    assert [tokenizer.id_to_piece(i) for i in nul] == ["<0x00>"]
    ids = tokenizer.encode("a") + nul + tokenizer.encode("b")
    generation = Generation(tokenizer, SamplingParams(max_new_tokens=len(ids)), 1, 99)

    for token in ids:
        generation.accept(token, 0.0)

    assert generation.text == "ab"
    assert generation.token_ids == ids


def test_it_stops_at_max_new_tokens(model) -> None:
    generation = Generation(model.tokenizer, SamplingParams(max_new_tokens=2), 3, 99)

    reasons = [generation.accept(t, 0.0).finish_reason for t in (1000, 1001)]

    assert reasons == [None, "length"]


def test_it_runs_int8_weights_close_to_the_float_model(model) -> None:
    quantized = quantize_params(model.params)
    linear = quantized["layer_0"]["mlp"]["linear"]
    transformer = Transformer(config=model.config)
    tokens = jnp.asarray([prompt_of(model, "The quick brown fox jumps")])
    positions = jnp.arange(tokens.shape[1])[None]

    exact = transformer.apply({"params": model.params}, tokens, positions).logits
    approx = transformer.apply({"params": quantized}, tokens, positions).logits

    assert linear.values.dtype == jnp.int8
    error = jnp.abs(linear.dequantize() - model.params["layer_0"]["mlp"]["linear"])
    assert bool(jnp.all(error <= linear.scale / 2 + 1e-7))  # half a step per channel
    # A wrong scale or axis would put the error at the logits' own size.
    assert float(jnp.abs(exact - approx).max()) < 0.2 * float(exact.std())
    sampler = Sampler(model.config, quantized, max_batch=1, max_length=MAX_LENGTH)
    params = SamplingParams(max_new_tokens=4)
    [answer] = sampler.generate([prompt_of(model, "Hi")], params, model.tokenizer)
    assert len(answer.token_ids) == 4


# The log-probs of the distribution sampled from (what REINFORCE needs) -------------


def drawn_logprob(logits: np.ndarray, token: int, temperature, top_k, top_p) -> float:
    """log q(token), q = softmax(logits / temperature) kept to top-k and top-p and
    renormalized, from a sort of the vocabulary (numpy, float64). Top-k and top-p
    choose among the MAX_TOP_K most likely tokens, as documented."""
    scaled = logits.astype(np.float64) / temperature
    kept = np.argsort(-scaled, kind="stable")[: top_k or MAX_TOP_K]
    probs = np.exp(scaled[kept] - scaled[kept].max())
    probs /= probs.sum()
    kept = kept[np.cumsum(probs) - probs < top_p]
    assert token in kept
    return float(scaled[token] - scipy.special.logsumexp(scaled[kept]))


def test_sampled_rows_come_with_the_log_probs_of_their_distribution() -> None:
    # Zipf-like rows: at temperature 2 and top-p 0.5, a nucleus of some 24 tokens.
    rng = np.random.default_rng(0)
    settings = [(2.0, 0, 0.5), (2.0, 5, 1.0), (0.7, 0, 1.0), (0.0, 0, 1.0)]
    rows = 50 * len(settings)
    ranks = rng.permuted(np.tile(np.arange(1000.0), (rows, 1)), axis=1)
    logits = -2.0 * np.log(1.0 + ranks)
    temperature, top_k, top_p = (
        np.asarray(s * 50) for s in zip(*settings, strict=True)
    )

    tokens, logprobs = jax.jit(sample_rows, static_argnames="max_top_k")(
        jnp.asarray(logits, jnp.float32),
        jax.random.split(jax.random.key(0), rows),
        temperature=jnp.asarray(temperature, jnp.float32),
        top_k=jnp.asarray(top_k, jnp.int32),
        top_p=jnp.asarray(top_p, jnp.float32),
        max_top_k=MAX_TOP_K,
    )

    for row in range(rows):
        token, settings_of_row = int(tokens[row]), settings[row % len(settings)]
        if settings_of_row[0] == 0.0:  # greedy: the argmax, with certainty
            assert token == int(np.argmax(logits[row])) and logprobs[row] == 0.0
            continue
        want = drawn_logprob(logits[row], token, *settings_of_row)
        assert float(logprobs[row]) == pytest.approx(want, abs=1e-4)


def test_rows_without_top_k_or_top_p_are_drawn_from_the_whole_vocabulary() -> None:
    # 600 tokens (more than the 256 a cut would keep), drawn 30,000 times.
    logits = np.random.default_rng(1).normal(size=600).astype(np.float32)
    draws = 30_000
    tokens, logprobs = jax.jit(sample_rows, static_argnames="max_top_k")(
        jnp.tile(jnp.asarray(logits), (draws, 1)),
        jax.random.split(jax.random.key(1), draws),
        temperature=jnp.full((draws,), 1.5, jnp.float32),
        top_k=jnp.zeros((draws,), jnp.int32),
        top_p=jnp.ones((draws,), jnp.float32),
        max_top_k=MAX_TOP_K,
    )

    want = scipy.special.log_softmax(logits.astype(np.float64) / 1.5)
    np.testing.assert_allclose(logprobs, want[np.asarray(tokens)], atol=1e-5)
    counts = np.bincount(np.asarray(tokens), minlength=600)
    assert scipy.stats.chisquare(counts, draws * np.exp(want)).pvalue > 1e-3


def test_the_sampler_returns_the_log_probs_it_sampled_with_when_asked(
    model, sampler
) -> None:
    prompt = prompt_of(model, "The quick brown fox")
    params = SamplingParams(temperature=2.0, seed=5, max_new_tokens=6)
    drawn = Sampler(
        model.config, model.params, max_batch=2, max_length=MAX_LENGTH,
        sampled_logprobs=True,
    )  # fmt: skip

    [answer] = drawn.generate([prompt], params, model.tokenizer)
    [as_served] = sampler.generate([prompt], params, model.tokenizer)

    # The answer's teacher-forced logits, from one full forward pass.
    ids = prompt + answer.token_ids
    tokens = (
        jnp.zeros((1, MAX_LENGTH), jnp.int32).at[0, : len(ids)].set(jnp.asarray(ids))
    )
    positions = jnp.where(jnp.arange(MAX_LENGTH) < len(ids), jnp.arange(MAX_LENGTH), -1)
    logits = full_forward(model.config)(
        {"params": model.params}, tokens, positions[None]
    ).logits[0, len(prompt) - 1 : len(ids) - 1]
    picked = jnp.asarray(answer.token_ids)[:, None]
    tempered = jnp.take_along_axis(jax.nn.log_softmax(logits / 2.0), picked, -1)
    own = jnp.take_along_axis(jax.nn.log_softmax(logits), picked, -1)
    assert as_served.token_ids == answer.token_ids
    np.testing.assert_allclose(answer.logprobs, tempered[:, 0], atol=1e-4)
    np.testing.assert_allclose(as_served.logprobs, own[:, 0], atol=1e-4)


def test_it_samples_each_prompt_with_its_own_settings(model, sampler) -> None:
    prompt = prompt_of(model, "Same prompt")
    seeds = [SamplingParams(temperature=1.0, seed=s, max_new_tokens=5) for s in (1, 2)]

    first, second = sampler.generate([prompt, prompt], seeds, model.tokenizer)
    [alone] = sampler.generate([prompt], seeds[1], model.tokenizer)

    assert first.token_ids != second.token_ids
    assert second.token_ids == alone.token_ids
