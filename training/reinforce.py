"""REINFORCE with a KL term toward the initial policy: the report's RLHF step.

Each step takes `prompts_per_step` prompts. For each, the current policy samples `k`
answers (each row its own seed, all in one batch of `model_service.sampler` on the
current parameters), with the log-probs of the distribution they were drawn from;
the reward model scores them (normalized by its stored mean and std), and the frozen
reference π_ref (the initial policy) gives its log-probs of the same tokens. Then

    R = r(x, y) - beta * KL,      KL = sum over the answer's tokens of log π - log π_ref
    A = R - (mean R of the prompt's other k - 1 answers)        (leave-one-out: RLOO)
    loss = -A * log π(y | x)                                    (mean over the answers)

with log π(y | x) recomputed with gradients in the jitted train step, in chunks over
the vocabulary (`model_service.logprobs`), on the answer's tokens only. KL is the k1
estimate from the sampled tokens; k3, (π_ref/π - 1) - log(π_ref/π) per token, is
reported beside it. π and π_ref are distributions at the sampling temperature, so the
KL is 0 while the policy is the reference; with `top_p` < 1 the samples' log-probs
are those of the nucleus they were drawn from, and the KL also counts the mass top-p
leaves out. π_ref's log-probs are computed apart from the train step and enter it as
data: no gradient reaches the reference, which has no optimizer state.

Adaptive beta (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences"): with `target_kl`, after each step

    beta <- beta * (1 + BETA_GAIN * clip(KL / target_kl - 1, -0.2, 0.2))

a proportional controller on the step's mean KL per answer, which moves beta by at
most 2% a step, up while the KL is over its target and down while under.

The host loop (`training.loop`) runs it: sampling, scoring and the reference's
log-probs happen on the host between jitted steps (`Job.rollout`), the train step is
sharded on the mesh, and a checkpoint keeps the data position, the run's key (in the
state) and beta, so a resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from model_service.chat_format import fit_to_context
from model_service.checkpoints import flax_params
from model_service.config import TransformerConfig
from model_service.judge import Judge, win_rate
from model_service.logprobs import sequence_logprob_sum, sequence_logprobs
from model_service.registry import load_model, load_tokenizer
from model_service.reward import RewardModel
from model_service.sampler import Generation, Sampler
from model_service.sampling import SamplingParams
from model_service.tokenizer import Tokenizer
from training import loop
from training.config import ConfigError, ReinforceConfig
from training.data import (
    Turns,
    as_turns,
    bucket_length,
    freeze,
    load_examples,
    pad,
    positions_for,
    thaw,
)
from training.trainer import Batch, Metrics, Params, Sums, TrainState

BETA_GAIN = 0.1
BETA_ERROR_CLIP = 0.2
# Answers of a step kept in its metrics for the run page (one per prompt).
SAMPLES_KEPT = 3
# The answers' seeds come from a stream of the run's key of their own.
SAMPLING_STREAM = 0x5EED


# --- data -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A prompt, encoded.

    Attributes:
        turns: the conversation the policy answers (the held-out split's key).
        ids: it in the chat format, ending with the model turn's header.
        category: the prompt set's category ("" when not given), for the judge.
    """

    turns: Turns
    ids: tuple[int, ...]
    category: str


def parse_prompt(tokenizer: Tokenizer, max_tokens: int, record: Any) -> Prompt:
    """A JSONL record as a `Prompt` of at most `max_tokens` ids (oldest turns go).

    Records are `{"prompt": str | messages, "category"?: str, ...}` (a prompt-set
    export) or `{"messages": [...]}`, whose assistant messages at the end are dropped.

    Raises:
        ValueError: a malformed record, or a last user turn longer than the budget.
    """
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in record:
        turns = as_turns(record["messages"], "messages")
    elif "prompt" in record:
        turns = as_turns(record["prompt"], "prompt")
    else:
        raise ValueError("expected 'prompt' or 'messages'")
    while turns and turns[-1]["role"] == "model":
        turns.pop()
    category = record.get("category", "")
    if not isinstance(category, str):
        raise ValueError("category must be a string")
    ids, dropped = fit_to_context(tokenizer, turns, max_tokens)
    return Prompt(freeze(turns[dropped:]), tuple(ids), category)


@dataclasses.dataclass(frozen=True)
class Answer:
    """A sampled answer, weighed: one row of the train step.

    Attributes:
        tokens: the prompt's and answer's ids but the last (the inputs).
        targets: the next id after each input.
        mask: which targets are the answer's.
        advantage: R minus its baseline.
        weight: 1, or 0 for an answer left out of the loss.
    """

    tokens: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    advantage: float
    weight: float

    @classmethod
    def of(
        cls,
        prompt: Sequence[int],
        answer: Sequence[int],
        advantage: float = 0.0,
        weight: float = 1.0,
    ) -> Answer:
        ids = np.asarray([*prompt, *answer], np.int32)
        mask = np.arange(len(ids) - 1) >= len(prompt) - 1
        return cls(ids[:-1], ids[1:], mask, advantage, weight)


def collate(
    answers: Sequence[Answer], rows: int, max_length: int
) -> dict[str, np.ndarray]:
    """A batch [rows, length] (`advantage`, `weight` [rows]); rows past the answers
    are padding that weighs nothing."""
    lengths = [len(a.tokens) for a in answers] + [0] * (rows - len(answers))
    length = bucket_length(max(lengths), max_length)
    padding = [0.0] * (rows - len(answers))
    return {
        "tokens": pad([a.tokens for a in answers], length, rows=rows),
        "positions": positions_for(lengths, length),
        "targets": pad([a.targets for a in answers], length, rows=rows),
        "mask": pad([a.mask for a in answers], length, rows=rows).astype(bool),
        "advantage": np.asarray([a.advantage for a in answers] + padding, np.float32),
        "weight": np.asarray([a.weight for a in answers] + padding, np.float32),
    }


# --- the estimators -------------------------------------------------------------------


def kl_estimates(
    logprobs: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token KL(π‖π_ref) estimates from tokens sampled from π: k1 = log π -
    log π_ref, and k3 = (π_ref/π - 1) - log(π_ref/π), which is never negative.

    Args:
        logprobs: log π of the sampled tokens.
        reference: log π_ref of the same tokens.

    Returns:
        (k1, k3), each shaped as the inputs.
    """
    log_ratio = np.asarray(reference, np.float64) - np.asarray(logprobs, np.float64)
    return -log_ratio, np.expm1(log_ratio) - log_ratio


def leave_one_out_baselines(rewards: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each answer's baseline: the mean reward of its prompt's other valid answers.

    Args:
        rewards: [prompts, k].
        valid: [prompts, k], false for answers left out (masked ones).

    Returns:
        [prompts, k]; an answer with no valid sibling gets its own reward (no
        advantage).
    """
    valid = np.asarray(valid, bool)
    kept = np.where(valid, rewards, 0.0)
    others = valid.sum(axis=1, keepdims=True) - valid
    total = kept.sum(axis=1, keepdims=True) - kept
    return np.where(others > 0, total / np.maximum(others, 1), rewards)


def policy_gradient_weights(
    advantages: jax.Array,  # [N]
    weights: jax.Array,  # [N]
    mask: jax.Array,  # [N, T]: each answer's tokens
) -> jax.Array:  # [N, T]
    """Each token's weight in REINFORCE's loss, -sum(weight * A * log π(y | x)) over
    the answers, which is sum(these * log π(token)) over their tokens.

    The advantages are constants of the gradient (`stop_gradient`), whatever they
    were computed from.
    """
    per_answer = -weights * jax.lax.stop_gradient(advantages)
    return per_answer[:, None] * mask.astype(per_answer.dtype)


def adapt_beta(beta: float, kl: float, target_kl: float) -> float:
    """The KL weight after a step whose mean KL per answer was `kl` (see the
    module's docstring)."""
    error = float(np.clip(kl / target_kl - 1, -BETA_ERROR_CLIP, BETA_ERROR_CLIP))
    return beta * (1 + BETA_GAIN * error)


@dataclasses.dataclass(frozen=True)
class ReinforceObjective:
    """The policy-gradient loss of a batch of weighed answers.

    Attributes:
        model_config: the policy's config.
        temperature: the sampling temperature: log π is that of its distribution.
        dtype: activations' dtype.
    """

    model_config: TransformerConfig
    temperature: float = 1.0
    dtype: Any = jnp.float32

    def loss(
        self, params: Params, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, Sums]:
        """(the loss summed over the answers, its sums); `rng` is unused."""
        del rng
        loss = sequence_logprob_sum(
            self.model_config,
            params,
            batch["tokens"],
            batch["positions"],
            batch["targets"],
            policy_gradient_weights(batch["advantage"], batch["weight"], batch["mask"]),
            dtype=self.dtype,
            temperature=self.temperature,
        )
        return loss, {"loss": loss, "weight": batch["weight"].sum()}

    def summarize(self, sums: Sums) -> Metrics:
        """`loss`, per answer."""
        return {"loss": sums["loss"] / jnp.maximum(sums["weight"], 1.0)}


# --- sampling, scoring, weighing ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scored:
    """Sampled answers with their rewards and both models' log-probs.

    Attributes:
        prompts: each answer's prompt.
        answers: the sampler's answers (tokens, text, sampled log-probs, finish).
        rewards: normalized rewards [N].
        kl: k1 per answer [N] (summed over its tokens).
        kl3: k3 per answer [N].
        seconds: time spent sampling, scoring and on the reference's log-probs.
    """

    prompts: list[Prompt]
    answers: list[Generation]
    rewards: np.ndarray
    kl: np.ndarray
    kl3: np.ndarray
    seconds: dict[str, float]

    @property
    def ended(self) -> np.ndarray:
        """Which answers ended their turn (not cut at max_new_tokens)."""
        return np.asarray([a.finish_reason == "stop" for a in self.answers])

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(a.token_ids) for a in self.answers])


class Rollouts:
    """The host's part of REINFORCE: sampling the policy's answers, scoring and
    weighing them (the loop's `rollout`), and the held-out evaluation.

    Args:
        config: the run's config.
        model_config: the policy's config.
        tokenizer: the policy's tokenizer.
        reference: the initial policy's parameters (a copy of its own, kept frozen).
        reward_model: scores answers.
        held_out: held-out prompts.
        judge: compares held-out answers with the initial policy's, or None.
    """

    def __init__(
        self,
        config: ReinforceConfig,
        model_config: TransformerConfig,
        tokenizer: Tokenizer,
        reference: Params,
        reward_model: RewardModel,
        held_out: Sequence[Prompt],
        judge: Judge | None = None,
    ) -> None:
        self.config, self.model_config, self.tokenizer = config, model_config, tokenizer
        self.reference, self.reward_model, self.judge = reference, reward_model, judge
        self.held_out = list(held_out)
        self.dtype = loop.activation_dtype(config)
        self._initial_answers: list[Generation] | None = None

    def sample(
        self, params: Params, prompts: Sequence[Prompt], seeds: Sequence[int]
    ) -> list[Generation]:
        """An answer to each prompt, each with its own seed, in one batch."""
        config = self.config
        sampler = Sampler(
            self.model_config,
            params,
            max_batch=config.batch_size,
            max_length=config.max_length,
            dtype=self.dtype,
            sampled_logprobs=True,
        )
        settings = [
            SamplingParams(
                temperature=config.temperature,
                top_p=config.top_p,
                seed=seed,
                max_new_tokens=config.max_new_tokens,
            )
            for seed in seeds
        ]
        prompt_ids = [prompt.ids for prompt in prompts]
        return sampler.generate(prompt_ids, settings, self.tokenizer)

    def score(
        self, params: Params, prompts: Sequence[Prompt], seeds: Sequence[int]
    ) -> Scored:
        """Samples an answer to each prompt and scores it (batches of at most
        `batch_size`)."""
        rows = self.config.batch_size
        answers, seconds = [], dict.fromkeys(("sampling", "scoring", "reference"), 0.0)
        rewards, kl, kl3 = [], [], []
        for start in range(0, len(prompts), rows):
            chunk = list(prompts[start : start + rows])
            began = time.perf_counter()
            chunk_answers = self.sample(params, chunk, seeds[start : start + rows])
            sampled = time.perf_counter()
            sequences = [
                [*p.ids, *a.token_ids]
                for p, a in zip(chunk, chunk_answers, strict=True)
            ]
            raw = self.reward_model.rewards(sequences)
            rewards.append(self.reward_model.normalized(raw))
            scored = time.perf_counter()
            reference = self._reference_logprobs(chunk, chunk_answers)
            for answer, theirs in zip(chunk_answers, reference, strict=True):
                k1, k3 = kl_estimates(answer.logprobs, theirs)
                kl.append(k1.sum())
                kl3.append(k3.sum())
            done = time.perf_counter()
            answers += chunk_answers
            seconds["sampling"] += sampled - began
            seconds["scoring"] += scored - sampled
            seconds["reference"] += done - scored
        return Scored(
            list(prompts),
            answers,
            np.concatenate(rewards),
            np.asarray(kl),
            np.asarray(kl3),
            seconds,
        )

    def _reference_logprobs(
        self, prompts: Sequence[Prompt], answers: Sequence[Generation]
    ) -> list[np.ndarray]:
        """π_ref's log-probs of each answer's tokens."""
        rows = [
            Answer.of(p.ids, a.token_ids) for p, a in zip(prompts, answers, strict=True)
        ]
        batch = collate(rows, self.config.batch_size, self.config.max_length)
        logprobs = np.asarray(
            _logprobs(
                self.model_config,
                self.reference,
                batch["tokens"],
                batch["positions"],
                batch["targets"],
                batch["mask"],
                dtype=self.dtype,
                temperature=self.config.temperature,
            )
        )
        return [logprobs[i, batch["mask"][i]] for i in range(len(rows))]

    def __call__(
        self, state: TrainState, prompts: list[Prompt], host: loop.HostState
    ) -> tuple[list[Answer], dict[str, Any], loop.HostState]:
        """A step's answers, weighed: `k` per prompt, sampled from the state's policy.

        Args:
            state: the train state before the step.
            prompts: the step's prompts.
            host: {"beta": the KL weight}.

        Returns:
            (the answers, the step's metrics, {"beta": the next KL weight}).
        """
        config, beta = self.config, host["beta"]
        repeated = [prompt for prompt in prompts for _ in range(config.k)]
        scored = self.score(state.params, repeated, step_seeds(state, len(repeated)))
        returns = scored.rewards - beta * scored.kl
        valid = scored.ended | (config.truncated == "keep")
        shape = (len(prompts), config.k)
        baselines = leave_one_out_baselines(
            returns.reshape(shape), valid.reshape(shape)
        )
        advantages = np.where(valid, returns - baselines.reshape(-1), 0.0)
        answers = [
            Answer.of(p.ids, a.token_ids, float(advantage), float(weight))
            for p, a, advantage, weight in zip(
                repeated, scored.answers, advantages, valid, strict=True
            )
        ]
        metrics = {**step_metrics(scored), "beta": beta}
        metrics["samples"] = [
            {
                "prompt": thaw(scored.prompts[i].turns)[-1]["content"],
                "answer": scored.answers[i].text,
                "reward": float(scored.rewards[i]),
            }
            for i in range(0, min(len(prompts), SAMPLES_KEPT) * config.k, config.k)
        ]
        if config.target_kl is not None:
            beta = adapt_beta(beta, metrics["kl"], config.target_kl)
        return answers, metrics, {"beta": beta}

    def evaluate(self, params: Params) -> dict[str, float]:
        """On the held-out prompts, one answer each (the same seeds every time):
        `reward` (mean, normalized), `kl` (mean per answer), `answer_length`,
        `ended`, and with a judge `judge_win_rate`, the judge's win rate of these
        answers over the initial policy's."""
        seeds = eval_seeds(self.config.seed, len(self.held_out))
        scored = self.score(params, self.held_out, seeds)
        metrics = {
            "reward": float(scored.rewards.mean()),
            "kl": float(scored.kl.mean()),
            "answer_length": float(scored.lengths.mean()),
            "ended": float(scored.ended.mean()),
        }
        if self.judge is not None:
            if self._initial_answers is None:
                self._initial_answers = self.sample(
                    self.reference, self.held_out, seeds
                )
            verdicts = [
                self.judge.compare(thaw(p.turns), a.text, b.text, p.category)
                for p, a, b in zip(
                    self.held_out, scored.answers, self._initial_answers, strict=True
                )
            ]
            metrics["judge_win_rate"] = win_rate(verdicts)
        return metrics


def step_seeds(state: TrainState, count: int) -> list[int]:
    """Seeds of a step's answers, from the run's key and the step: a resumed run
    samples what it would have."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), SAMPLING_STREAM)
    key = jax.random.fold_in(key, state.step)
    return [int(s) for s in jax.random.randint(key, (count,), 0, 2**31 - 1)]


def eval_seeds(seed: int, count: int) -> list[int]:
    """Seeds of the held-out answers: the same at every evaluation."""
    rng = np.random.default_rng([seed, SAMPLING_STREAM])
    return [int(s) for s in rng.integers(2**31 - 1, size=count)]


def step_metrics(scored: Scored) -> dict[str, float]:
    """A step's metrics from its scored answers (see `training.reinforce`)."""
    tokens = max(int(scored.lengths.sum()), 1)
    logprobs = np.concatenate([a.logprobs for a in scored.answers])
    return {
        "reward_mean": float(scored.rewards.mean()),
        "reward_std": float(scored.rewards.std()),
        "kl": float(scored.kl.mean()),
        "kl_per_token": float(scored.kl.sum() / tokens),
        "kl_k3": float(scored.kl3.mean()),
        "kl_k3_per_token": float(scored.kl3.sum() / tokens),
        # -log π of the sampled tokens: an unbiased estimate of their distributions'
        # mean entropy.
        "entropy": float(-logprobs.sum() / tokens),
        "answer_length": float(scored.lengths.mean()),
        "ended": float(scored.ended.mean()),
        **{f"{part}_seconds": seconds for part, seconds in scored.seconds.items()},
    }


# π_ref's log-probs of a batch, compiled once per shape.
_logprobs = jax.jit(
    sequence_logprobs, static_argnames=("config", "dtype", "temperature")
)


# --- the job --------------------------------------------------------------------------


def read_data(config: ReinforceConfig) -> tuple[list[Prompt], list[Prompt]]:
    """The encoded (train, held-out) prompts.

    Raises:
        DataError: bad prompts (every bad line reported).
    """
    return load_examples(
        config,
        functools.partial(
            parse_prompt,
            load_tokenizer(config.model),
            config.max_length - config.max_new_tokens,
        ),
        lambda prompt: prompt.turns,
    )


def prepare(config: ReinforceConfig) -> loop.Job:
    """Reads and encodes the prompts (every bad line reported), then loads the
    policy, a frozen copy of it as the reference, the reward model and the judge.

    Raises:
        DataError: bad prompts.
        ConfigError: a reward model whose vocabulary is not the policy's.
    """
    train, held_out = read_data(config)
    reward_model = RewardModel.load(config.reward_model)
    model = load_model(config.model)
    if reward_model.config.vocab_size != model.config.vocab_size:
        raise ConfigError(
            f"reward_model: its vocabulary ({reward_model.config.vocab_size} pieces) "
            f"is not the policy's ({model.config.vocab_size}); it could not read the "
            "policy's answers"
        )
    judge = Judge(load_model(config.judge)) if config.judge is not None else None
    rollouts = Rollouts(
        config,
        model.config,
        model.tokenizer,
        jax.tree.map(jnp.copy, model.params),  # the run takes the policy's over
        reward_model,
        held_out,
        judge,
    )

    def export(directory: Path, params: Params, metrics: dict[str, float]) -> None:
        del metrics
        flax_params.save(directory, params, model.config)

    return loop.Job(
        objective=ReinforceObjective(
            model.config, config.temperature, loop.activation_dtype(config)
        ),
        params=model.params,
        train=train,
        held_out=held_out,
        collate=functools.partial(collate, max_length=config.max_length),
        export=export,
        rollout=rollouts,
        host_state={"beta": config.beta},
        evaluate=rollouts.evaluate,
    )
