"""What every training job shares: its objective's shape, the train state, the
optimizer, and the one pure train step built from them.

An `Objective` is a loss over one micro-batch that returns *sums* (the loss summed over
examples or tokens, the weight it was summed over, and any other sums its metrics
need), and a `summarize` that turns sums into metrics. Sums add up across
micro-batches, devices and evaluation batches, so a step's loss and metrics are the
same however its batch is split, and the gradient is that of the mean over the whole
step's batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from training.config import TrainConfig

Params = Any
Batch = dict[str, jax.Array]
Sums = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class Objective(Protocol):
    """A job's loss, as the train step needs it."""

    def loss(
        self, params: Params, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, Sums]:
        """(the loss summed over the micro-batch, sums including "loss" and
        "weight", the count that the loss is a sum over)."""
        ...

    def summarize(self, sums: Sums) -> Metrics:
        """Metrics from the sums of any number of micro-batches."""
        ...


@flax.struct.dataclass
class TrainState:
    """Everything a step changes, and all a checkpoint needs besides the data position.

    Attributes:
        step: optimizer updates done (int32 scalar).
        params: the trainable parameters (float32).
        opt_state: the optimizer's state.
        rng: the run's key as raw uint32 data (`jax.random.key_data`); each step
            derives its own with `fold_in(rng, step)`.
    """

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    rng: jax.Array


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay over the remaining steps."""
    peak = config.learning_rate
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.steps, config.warmup_steps + 1),
        end_value=peak * config.min_learning_rate_ratio,
    )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW on the schedule, after clipping gradients to `max_grad_norm`.

    Weight decay applies to matrices only, not to norm scales and biases.
    """
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(
            learning_rate_schedule(config),
            b1=config.adam_b1,
            b2=config.adam_b2,
            weight_decay=config.weight_decay,
            mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
        ),
    )


def init_state(
    params: Params, optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
    """The state before the first step."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
    )


def make_train_step(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The pure train step `(state, batch) -> (state, metrics)`.

    The batch's leaves are [micro-batches, examples, ...]; gradients and sums are
    accumulated over the micro-batches (`lax.scan`), divided by the total weight, and
    applied in one optimizer update.

    Args:
        objective: the job's loss.
        optimizer: from `make_optimizer`.
        schedule: its learning rate schedule, for the metrics.

    Returns:
        The step, to be jitted by the caller (with the shardings it wants).
    """
    grad_fn = jax.grad(objective.loss, has_aux=True)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        grads, sums = _accumulate(grad_fn, state.params, batch, key)
        weight = jnp.maximum(sums["weight"], 1.0)
        grads = jax.tree.map(lambda g: g / weight, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        metrics = {
            **objective.summarize(sums),
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )
        return new_state, metrics

    return step


def make_eval_step(objective: Objective) -> Callable[[Params, Batch], Sums]:
    """`(params, batch) -> sums` on one batch of held-out examples (no gradients)."""

    def eval_step(params: Params, batch: Batch) -> Sums:
        return objective.loss(params, batch, jax.random.key(0))[1]

    return eval_step


def _accumulate(
    grad_fn: Callable[..., tuple[Params, Sums]],
    params: Params,
    batch: Batch,
    key: jax.Array,
) -> tuple[Params, Sums]:
    """Gradients and sums of a batch's micro-batches [M, ...], added up."""
    micro_batches = jax.tree.leaves(batch)[0].shape[0]
    first = jax.tree.map(lambda leaf: leaf[0], batch)
    if micro_batches == 1:  # no accumulators to keep
        return grad_fn(params, first, jax.random.fold_in(key, 0))

    def add_one(total, micro):
        micro_batch, index = micro
        part = grad_fn(params, micro_batch, jax.random.fold_in(key, index))
        return _add(total, part), None

    shapes = jax.eval_shape(grad_fn, params, first, key)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    total, _ = jax.lax.scan(add_one, zeros, (batch, jnp.arange(micro_batches)))
    return total


def _add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)
