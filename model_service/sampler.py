"""Autoregressive sampling over a KV cache.

The four pieces (as in gemma's `gm.text` sampler):

- settings and the batched draw of next tokens: `model_service.sampling`;
- `Sampler.prefill`: runs a prompt through the model into a one-row cache, in passes
  of a few fixed sizes (`prefill_passes`) so that new prompt lengths do not compile new
  programs and little of each pass is padding;
- `Sampler.start` / `Sampler.step`: pure jitted functions over a `DecodeState` of
  `max_batch` rows; `start` puts a prefilled row into a free slot and samples its first
  token, `step` decodes one token for every row. Rows are at different positions and
  each has its own settings and key, which is what continuous batching
  (`model_service.engine`) needs;
- drivers: `generate` (a loop over a batch of prompts) and `stream` (a generator of
  text pieces for one prompt). `Generation` is the host-side bookkeeping of one request
  (text, stops, limits) that the drivers and the engine share.

Randomness: a request's integer seed becomes a key at `start`; the token at step `i`
is drawn with `fold_in(key, i)`, so a request samples the same tokens whatever else
shares its batch.

Log-probabilities: by default each token comes with the model's own log-probability
of it (what the worker reports); with `sampled_logprobs=True`, with its
log-probability under the distribution it was drawn from, after temperature, top-k
and top-p (what REINFORCE needs of its samples).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from model_service import cache as kv_cache
from model_service import cpu_kernels, layers, modules
from model_service.config import TransformerConfig
from model_service.detokenize import StopMatcher, StreamingDetokenizer
from model_service.next_tokens import sample_rows
from model_service.quantize import with_bfloat16_products
from model_service.sampling import MAX_TOP_K, SamplingParams
from model_service.transformer import Transformer

# Prefill pass sizes and what a pass of each costs, relative (ms for Gemma 3 270M on
# the 2-core development CPU, int8 weights). A pass has a fixed cost (reading every
# weight, the attention over the whole cache) worth about 15 rows, then about 2 ms a
# row; longer passes would only pad more.
PREFILL_PASS_COST = {16: 55, 32: 95, 64: 145, 128: 270}
DEFAULT_MAX_LENGTH = 4096
# XLA's options for the programs of the decode loop (`start_fn`, `step_fn`): on a CPU
# its MLIR fusion emitters took about 150 MB more while compiling gemma3-270m's 8-row
# step than its LLVM IR emitters, which set the generation worker's peak memory, for
# the same speed. Prefill's passes keep the MLIR emitters: 5 % faster with them.
DECODE_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
# Sets how prefill passes' int8 products take their activations: "bfloat16" or
# "float32" (`bfloat16_prefill`).
PREFILL_PRODUCTS_VARIABLE = "GEMMA_STUDIO_PREFILL_PRODUCTS"


class ContextTooLong(ValueError):
    """The prompt leaves no room in the context for a single new token."""


def default_dtype() -> jnp.dtype:
    """fp32 on CPU (XLA's bf16 matmuls are slow there), bf16 on accelerators."""
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


def bfloat16_prefill() -> bool:
    """Whether prefill passes multiply int8 weights by bfloat16 activations.

    Where the CPU has AVX512_BF16 a product then does twice the multiply-adds per
    instruction (`cpu_kernels.int8_matmul`): the 200-token prompt of
    `benchmarks/decode.py` prefills at 1.12-1.14 times llama.cpp's speed instead of
    0.73-0.98, at the same agreement with HF transformers (`test_parity.py`). Elsewhere
    the kernel's exact emulation is slower than float32 products (0.75 times llama.cpp
    instead of 1.10 on an AVX2 host), so float32 is the default there. Hosts of the two
    kinds then compute a prompt's logits last bits apart, and so now and then other
    tokens for a seed; a fleet that must give the same tokens on every host sets one
    kind for all with `PREFILL_PRODUCTS_VARIABLE`. Decode steps are float32 always.
    """
    chosen = os.environ.get(PREFILL_PRODUCTS_VARIABLE, "")
    if chosen not in ("", "bfloat16", "float32"):
        raise ValueError(
            f"{PREFILL_PRODUCTS_VARIABLE} is bfloat16 or float32, not {chosen!r}"
        )
    if chosen:
        return chosen == "bfloat16"
    return jax.default_backend() == "cpu" and cpu_kernels.bfloat16_native()


def serving_cache_dtype() -> jnp.dtype:
    """The KV cache's dtype where a model is served (the generation worker): float16
    on a CPU, which the decode step's kernel reads (`cpu_kernels.decode_attention`),
    as llama.cpp keeps its cache; the worker's 8 rows of 4,096 positions of
    gemma3-270m then hold 160 MB instead of 320, and a step reads half the bytes.
    Elsewhere the activations' dtype (bf16)."""
    return jnp.float16 if jax.default_backend() == "cpu" else default_dtype()


@functools.cache
def prefill_passes(length: int) -> tuple[int, ...]:
    """The pass sizes, largest first, that prefill `length` tokens at the least cost
    (`PREFILL_PASS_COST`): 200 tokens run as 128 + 64 + 16 (8 of them padding), 17 as
    one pass of 32, 100 as one of 128.
    """
    # cheapest[n]: the least cost of n tokens, and the size of one pass that gets it
    cheapest: list[tuple[float, int]] = [(0.0, 0)]
    for covered in range(1, length + 1):
        cheapest.append(
            min(
                (cheapest[max(covered - size, 0)][0] + cost, size)
                for size, cost in PREFILL_PASS_COST.items()
            )
        )
    passes, left = [], length
    while left > 0:
        size = cheapest[left][1]
        passes.append(size)
        left -= size
    return tuple(sorted(passes, reverse=True))


@struct.dataclass
class DecodeState:
    """Everything one decode step reads and writes, for `max_batch` rows."""

    cache: kv_cache.Cache
    tokens: jax.Array  # [B] int32, the last sampled token (next step's input)
    positions: jax.Array  # [B] int32, the position of `tokens`; -1 = free row
    keys: jax.Array  # [B, 2] uint32, each row's key data
    steps: jax.Array  # [B] int32, tokens sampled so far (the fold_in index)
    temperature: jax.Array  # [B] float32
    top_k: jax.Array  # [B] int32, 0 = none
    top_p: jax.Array  # [B] float32, 1 = none


@dataclasses.dataclass
class Prefilled:
    """A prompt run through the model: its one-row cache and last-position logits."""

    cache: kv_cache.Cache
    logits: jax.Array  # [V] float32
    length: int


class Sampler:
    """Prefill, start and step for one model, compiled once per shape.

    Args:
        config: the model's config.
        params: its parameters (float, or int8 from `model_service.quantize`).
        max_batch: rows of the decode state.
        max_length: positions a row may hold (prompt and answer); default
            min(config.max_seq_len, DEFAULT_MAX_LENGTH).
        dtype: activations; default `default_dtype()`.
        cache_dtype: the KV cache's keys and values; default `dtype`.
        sampled_logprobs: return each token's log-probability under the distribution
            it was drawn from (0 for greedy rows), not the model's own.
    """

    def __init__(
        self,
        config: TransformerConfig,
        params: Any,
        *,
        max_batch: int = 1,
        max_length: int | None = None,
        dtype: jnp.dtype | None = None,
        cache_dtype: jnp.dtype | None = None,
        sampled_logprobs: bool = False,
    ) -> None:
        self.config = config
        self.sampled_logprobs = sampled_logprobs
        self.dtype = dtype or default_dtype()
        self.cache_dtype = cache_dtype or self.dtype
        # Weights are read at every step: keep them in the activations' dtype (bf16
        # on accelerators) rather than cast them on every read.
        self.params = jax.tree.map(self._in_dtype, params)
        # The same weights, as prefill passes multiply them (`bfloat16_prefill`).
        self.prefill_params = (
            with_bfloat16_products(self.params) if bfloat16_prefill() else self.params
        )
        self.max_batch = max_batch
        self.max_length = max_length or min(config.max_seq_len, DEFAULT_MAX_LENGTH)

    def _in_dtype(self, weight: jax.Array) -> jax.Array:
        if jnp.issubdtype(weight.dtype, jnp.floating) and weight.dtype != self.dtype:
            return weight.astype(self.dtype)
        return weight  # already right, or int8 values

    # Host-side API ------------------------------------------------------------------

    @property
    def batch_sizes(self) -> list[int]:
        """The row counts a continuous batch moves between (`resize`): one row for a
        user alone, two, and `max_batch`; a step costs about what its rows cost,
        busy or free.

        A row's tokens do not depend on the batch it is in: the int8 products of a
        step (`layers._int8_matmul`) compute every row the same way whatever the
        row count, and float weights multiply each row on its own.
        """
        return sorted({1, min(2, self.max_batch), self.max_batch})

    def init_state(self, rows: int | None = None) -> DecodeState:
        """An empty decode state of `rows` rows (default `max_batch`)."""
        rows = rows or self.max_batch
        return DecodeState(
            cache=kv_cache.init_cache(
                self.config,
                batch_size=rows,
                length=self.max_length,
                dtype=self.cache_dtype,
            ),
            tokens=jnp.zeros((rows,), jnp.int32),
            positions=jnp.full((rows,), -1, jnp.int32),
            keys=jnp.zeros((rows, 2), jnp.uint32),
            steps=jnp.zeros((rows,), jnp.int32),
            temperature=jnp.zeros((rows,), jnp.float32),
            top_k=jnp.zeros((rows,), jnp.int32),
            top_p=jnp.ones((rows,), jnp.float32),
        )

    def check_prompt(self, prompt_ids: Sequence[int]) -> None:
        """Raises ValueError for a prompt the model cannot take."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        vocab = self.config.vocab_size
        bad = [t for t in prompt_ids if not (isinstance(t, int) and 0 <= t < vocab)]
        if bad:
            raise ValueError(
                f"token ids outside the vocabulary (0..{vocab - 1}): {bad[:5]}"
            )
        if len(prompt_ids) >= self.max_length:
            raise ContextTooLong(
                f"the prompt has {len(prompt_ids)} tokens; the context holds "
                f"{self.max_length}, so at most {self.max_length - 1} fit"
            )

    def prefill(self, prompt_ids: Sequence[int]) -> Prefilled:
        """Runs the prompt into a fresh one-row cache in passes (`prefill_passes`)."""
        self.check_prompt(prompt_ids)
        cache = empty_cache_fn(
            self.config, dtype=self.cache_dtype, max_length=self.max_length
        )
        start = 0
        for size in prefill_passes(len(prompt_ids)):
            chunk = prompt_ids[start : start + size]
            tokens = np.zeros((1, size), np.int32)
            tokens[0, : len(chunk)] = chunk
            positions = np.full((1, size), -1, np.int32)
            positions[0, : len(chunk)] = np.arange(start, start + len(chunk))
            cache, hidden = prefill_fn(
                self.prefill_params,
                cache,
                tokens,
                positions,
                np.int32(len(chunk) - 1),
                config=self.config,
                dtype=self.dtype,
            )
            start += size
        logits = logits_fn(self.params, hidden, config=self.config)
        return Prefilled(cache=cache, logits=logits, length=len(prompt_ids))

    def start(
        self,
        state: DecodeState,
        slot: int,
        prefilled: Prefilled,
        params: SamplingParams,
    ) -> tuple[DecodeState, int, float]:
        """Puts a prefilled row into `slot` and samples its first token."""
        state, token, logprob = start_fn(
            state,
            prefilled.cache,
            prefilled.logits,
            jnp.int32(slot),
            jnp.int32(prefilled.length),
            jax.random.key_data(jax.random.key(params.seed)),
            jnp.float32(params.temperature),
            jnp.int32(params.top_k or 0),
            jnp.float32(params.top_p or 1.0),
            sampled_logprobs=self.sampled_logprobs,
        )
        return state, int(token), float(logprob)

    def step(self, state: DecodeState) -> tuple[DecodeState, list[int], list[float]]:
        """Decodes one token for every row (free rows produce ignored tokens)."""
        state, tokens, logprobs = step_fn(
            self.params,
            state,
            config=self.config,
            dtype=self.dtype,
            sampled_logprobs=self.sampled_logprobs,
        )
        return state, tokens.tolist(), logprobs.tolist()

    def free(self, state: DecodeState, slot: int) -> DecodeState:
        """Marks a row free: it stops writing to the cache and is ready for `start`."""
        return free_fn(state, jnp.int32(slot))

    def resize(
        self, state: DecodeState, slots: Sequence[int], rows: int
    ) -> DecodeState:
        """A state of `rows` rows whose row i is row `slots[i]` of `state`, caches
        included; the rows after them are free."""
        if len(slots) > rows:
            raise ValueError(f"{len(slots)} rows do not fit in {rows}")
        sources = np.zeros((rows,), np.int32)  # rows past `slots` copy row 0, freed
        sources[: len(slots)] = slots
        return resize_fn(state, sources, np.int32(len(slots)))

    # Drivers ------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams],
        tokenizer: Any,
    ) -> list[Generation]:
        """Samples an answer for each prompt, all in one batch, to the end.

        Args:
            prompts: token ids; a prompt given several times is prefilled once.
            params: the settings of every prompt, or of each (e.g. its own seed).
            tokenizer: for the answers' text and end tokens.
        """
        if len(prompts) > self.max_batch:
            raise ValueError(f"{len(prompts)} prompts, but max_batch={self.max_batch}")
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} settings for {len(prompts)} prompts")
        state = self.init_state()
        prefilled: dict[tuple[int, ...], Prefilled] = {}
        rows: dict[int, Generation] = {}
        for slot, (prompt, settings) in enumerate(zip(prompts, params, strict=True)):
            key = tuple(prompt)
            if key not in prefilled:
                prefilled[key] = self.prefill(prompt)
            generation = Generation(tokenizer, settings, len(prompt), self.max_length)
            state, token, logprob = self.start(state, slot, prefilled[key], settings)
            generation.accept(token, logprob)
            rows[slot] = generation
        while any(not g.finished for g in rows.values()):
            state, tokens, logprobs = self.step(state)
            for slot, generation in rows.items():
                if not generation.finished:
                    generation.accept(tokens[slot], logprobs[slot])
        return [rows[slot] for slot in range(len(prompts))]

    def stream(
        self, prompt: Sequence[int], params: SamplingParams, tokenizer: Any
    ) -> Iterator[Piece]:
        """Yields the answer to one prompt piece by piece; the last piece is final."""
        generation = Generation(tokenizer, params, len(prompt), self.max_length)
        state = self.init_state()
        state, token, logprob = self.start(state, 0, self.prefill(prompt), params)
        yield generation.accept(token, logprob)
        while not generation.finished:
            state, tokens, logprobs = self.step(state)
            yield generation.accept(tokens[0], logprobs[0])


# Traced functions ---------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("config", "dtype", "max_length"))
def empty_cache_fn(
    config: TransformerConfig, *, dtype: jnp.dtype, max_length: int
) -> kv_cache.Cache:
    return kv_cache.init_cache(config, batch_size=1, length=max_length, dtype=dtype)


@functools.partial(jax.jit, donate_argnums=(1,), static_argnames=("config", "dtype"))
def prefill_fn(
    params: Any,
    cache: kv_cache.Cache,  # one row, holding the prompt's earlier passes
    tokens: jax.Array,  # [1, T]
    positions: jax.Array,  # [1, T]
    last: jax.Array,  # index of the pass's last prompt token
    *,
    config: TransformerConfig,
    dtype: jnp.dtype,
) -> tuple[kv_cache.Cache, jax.Array]:
    """One prefill pass: the cache with these tokens in it, and the last one's hidden
    state (XLA drops the unused [T, vocab] logits)."""
    out = Transformer(config=config, dtype=dtype).apply(
        {"params": params}, tokens, positions, cache
    )
    return out.cache, jax.lax.dynamic_index_in_dim(out.hidden[0], last, keepdims=False)


@functools.partial(jax.jit, static_argnames=("config",))
def logits_fn(
    params: Any, hidden: jax.Array, *, config: TransformerConfig
) -> jax.Array:
    """Logits [V] of one final hidden state [D]."""
    return project(params, hidden[None], config)[0]


def project(params: Any, hidden: jax.Array, config: TransformerConfig) -> jax.Array:
    """Logits of final hidden states [B, D] -> [B, V], as the model has them."""
    table = params["embedder"]["input_embedding"]
    logits = layers.weight_einsum("BD,VD->BV", hidden, table).astype(jnp.float32)
    return modules.soft_cap(logits, config.final_logit_soft_cap)


@functools.partial(
    jax.jit,
    donate_argnums=(0,),
    static_argnames=("sampled_logprobs",),
    compiler_options=DECODE_COMPILER_OPTIONS,
)
def start_fn(
    state: DecodeState,
    row_cache: kv_cache.Cache,
    logits: jax.Array,  # [V]
    slot: jax.Array,
    length: jax.Array,
    key: jax.Array,  # [2] uint32
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    *,
    sampled_logprobs: bool = False,
) -> tuple[DecodeState, jax.Array, jax.Array]:
    """Copies a prefilled row into `slot` and samples its first token."""
    cache = kv_cache.put_row(state.cache, row_cache, slot)
    token, logprob = sample(
        logits[None],
        key[None],
        jnp.zeros((1,), jnp.int32),
        temperature[None],
        top_k[None],
        top_p[None],
        sampled_logprobs=sampled_logprobs,
    )
    state = state.replace(
        cache=cache,
        tokens=state.tokens.at[slot].set(token[0]),
        positions=state.positions.at[slot].set(length),
        keys=state.keys.at[slot].set(key),
        steps=state.steps.at[slot].set(1),
        temperature=state.temperature.at[slot].set(temperature),
        top_k=state.top_k.at[slot].set(top_k),
        top_p=state.top_p.at[slot].set(top_p),
    )
    return state, token[0], logprob[0]


@functools.partial(
    jax.jit,
    donate_argnums=(1,),
    static_argnames=("config", "dtype", "sampled_logprobs"),
    compiler_options=DECODE_COMPILER_OPTIONS,
)
def step_fn(
    params: Any,
    state: DecodeState,
    *,
    config: TransformerConfig,
    dtype: jnp.dtype,
    sampled_logprobs: bool = False,
) -> tuple[DecodeState, jax.Array, jax.Array]:
    """One token for every row; free rows (position -1) write nothing."""
    out = Transformer(config=config, dtype=dtype).apply(
        {"params": params},
        state.tokens[:, None],
        state.positions[:, None],
        state.cache,
    )
    tokens, logprobs = sample(
        out.logits[:, 0],
        state.keys,
        state.steps,
        state.temperature,
        state.top_k,
        state.top_p,
        sampled_logprobs=sampled_logprobs,
    )
    active = state.positions >= 0
    state = state.replace(
        cache=out.cache,
        tokens=tokens,
        positions=jnp.where(active, state.positions + 1, -1),
        steps=state.steps + 1,
    )
    return state, tokens, logprobs


@functools.partial(jax.jit, donate_argnums=(0,))
def free_fn(state: DecodeState, slot: jax.Array) -> DecodeState:
    return state.replace(positions=state.positions.at[slot].set(-1))


@jax.jit  # (no donation: the new state has another shape)
def resize_fn(state: DecodeState, sources: jax.Array, kept: jax.Array) -> DecodeState:
    """Row i of the result is row sources[i] of `state`; rows from `kept` are free."""
    rows = jax.tree.map(lambda field: field[sources], state.replace(cache={}))
    kept_rows = jnp.arange(sources.shape[0]) < kept
    return rows.replace(
        cache=kv_cache.take_rows(state.cache, sources),
        positions=jnp.where(kept_rows, rows.positions, -1),
    )


def sample(
    logits: jax.Array,  # [B, V]
    keys: jax.Array,  # [B, 2] uint32
    steps: jax.Array,  # [B]
    temperature: jax.Array,  # [B]
    top_k: jax.Array,  # [B]
    top_p: jax.Array,  # [B]
    *,
    sampled_logprobs: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Next tokens [B] and their log-probs [B]; each row with its own settings and key.

    The log-probs are the model's own (log-softmax of the logits at the token), or
    with `sampled_logprobs` those of the distribution each token was drawn from
    (`sample_rows`; 0 for greedy rows).

    A batch of greedy rows only pays for an argmax: the sampling branch runs only when
    some row samples.
    """
    step_keys = jax.vmap(
        lambda k, s: jax.random.fold_in(jax.random.wrap_key_data(k), s)
    )(keys, steps)

    def sampled(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
        return sample_rows(
            logits,
            step_keys,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_top_k=MAX_TOP_K,
        )

    def greedy(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
        return best, jnp.zeros(best.shape, jnp.float32)

    best, logsumexp = logit_stats(logits)
    tokens, drawn_logprobs = jax.lax.cond(
        jnp.any(temperature > 0), sampled, greedy, logits
    )
    if sampled_logprobs:
        return tokens, drawn_logprobs
    chosen = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
    return tokens, chosen - logsumexp


def logit_stats(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row of logits [B, V]: the argmax and log(sum(exp)).

    On a CPU the C++ kernel (one pass, both cores); elsewhere jax.numpy.
    """

    def portable(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
        best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return best, jax.nn.logsumexp(logits, axis=-1)

    return jax.lax.platform_dependent(
        logits, cpu=cpu_kernels.logit_stats, default=portable
    )


@dataclasses.dataclass
class Piece:
    """New text of one step; `finish_reason` is set on a request's last piece."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None = None


class Generation:
    """Host-side progress of one request: its tokens, its text and when it ends.

    The end-of-turn or end-of-sequence token ends a request ("stop") and is kept in
    `token_ids` (its log-prob matters to training) but adds no text. A user stop string
    ends it too ("stop"); the text before it is kept. Reaching `max_new_tokens` or the
    end of the context ends it with "length".
    """

    def __init__(
        self,
        tokenizer: Any,
        params: SamplingParams,
        prompt_tokens: int,
        max_length: int,
    ) -> None:
        self.params = params
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = min(params.max_new_tokens, max_length - prompt_tokens)
        self.end_ids = {tokenizer.eos_id, tokenizer.end_of_turn_id} - {None}
        self.detokenizer = StreamingDetokenizer(tokenizer.piece_bytes)
        self.stops = StopMatcher(params.stop)
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.text = ""
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def accept(self, token_id: int, logprob: float) -> Piece:
        """Takes one sampled token; returns the text it completes."""
        self.token_ids.append(token_id)
        self.logprobs.append(logprob)
        if token_id in self.end_ids:
            text, reason = self._flush(), "stop"
        else:
            text, stopped = self.stops.push(self.detokenizer.push(token_id))
            if stopped:
                reason = "stop"
            elif len(self.token_ids) >= self.max_new_tokens:
                text, reason = text + self._flush(), "length"
            else:
                reason = None
        return self._piece(text, [token_id], [logprob], reason)

    def cancel(self) -> Piece:
        """Ends the request now, keeping the text so far."""
        return self._piece(self._flush(), [], [], "cancelled")

    def _flush(self) -> str:
        text, stopped = self.stops.push(self.detokenizer.flush())
        return text if stopped else text + self.stops.flush()

    def _piece(
        self, text: str, token_ids: list[int], logprobs: list[float], reason: str | None
    ) -> Piece:
        self.text += text
        self.finish_reason = reason
        return Piece(text, token_ids, logprobs, reason)
