"""The host loop every training job runs: data, steps, metrics, evaluation,
checkpoints, resumption, and the trained model at the end.

The loop owns everything impure; the step it calls is pure and jitted once, with the
mesh's shardings. A job may also work on the host between steps (`Job.rollout`:
REINFORCE samples and scores answers with the current parameters). Rerunning a job on
the same `output_dir` resumes from its latest checkpoint: the state comes back whole,
the data position says which examples come next and the rollout's own state (JSON)
comes back with it, so the run ends with the same parameters as one never
interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from training import mesh as meshes
from training.checkpointing import Checkpoints
from training.config import ConfigError, TrainConfig, to_dict
from training.data import example_order
from training.trainer import (
    Metrics,
    Objective,
    Params,
    Sums,
    TrainState,
    init_state,
    learning_rate_schedule,
    make_eval_step,
    make_optimizer,
    make_train_step,
)

CONFIG_FILE = "config.json"
MODEL_DIR = "model"
TOKENIZER_FILE = "tokenizer.model"

MetricsCallback = Callable[[dict[str, Any]], None]
StopCallback = Callable[[], bool]
HostState = dict[str, Any]
# (state, the step's examples, host state) -> (the examples to train on, their
# metrics, the next host state)
Rollout = Callable[
    [TrainState, list[Any], HostState], tuple[list[Any], dict[str, Any], HostState]
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class Job:
    """A training job, ready for the host loop.

    Attributes:
        objective: its loss.
        params: the trainable parameters to start from; the run takes them over
            (donated to its first state, or freed when it resumes).
        train: encoded training examples.
        held_out: encoded held-out examples.
        collate: (examples, rows) -> a batch of numpy arrays [rows, ...]; rows past
            the examples are padding that weighs nothing. Every batch has
            `positions` (-1 on padding), which count its tokens.
        export: (directory, params, held-out metrics) writes the trained model into
            a new directory.
        rollout: None, or work on the host before each step that turns the step's
            examples into the ones it trains on, from the current state.
        host_state: the rollout's state (JSON) before the first step; it is saved
            with each checkpoint.
        evaluate: None, or params -> held-out metrics, in place of the objective
            over `held_out`.
    """

    objective: Objective
    params: Params
    train: Sequence[Any]
    held_out: Sequence[Any]
    collate: Callable[[Sequence[Any], int], dict[str, np.ndarray]]
    export: Callable[[Path, Params, dict[str, float]], None]
    rollout: Rollout | None = None
    host_state: HostState = dataclasses.field(default_factory=dict)
    evaluate: Callable[[Params], dict[str, float]] | None = None


def activation_dtype(config: TrainConfig) -> jnp.dtype:
    """bfloat16 on GPU/TPU hosts under "auto", else what the config says."""
    if config.dtype == "auto":
        accelerated = jax.default_backend() in ("gpu", "tpu")
        return jnp.bfloat16 if accelerated else jnp.float32
    return jnp.dtype(config.dtype)


def check_output_dir(config: TrainConfig) -> None:
    """Checks that `output_dir` is new or holds a run of this very config.

    Raises:
        ConfigError: the directory holds a run whose config differs.
    """
    saved = Path(config.output_dir) / CONFIG_FILE
    if not saved.exists():
        return
    fields, previous = to_dict(config), json.loads(saved.read_text())
    keys = fields.keys() | previous.keys()
    changed = sorted(k for k in keys if fields.get(k) != previous.get(k))
    if changed:
        raise ConfigError(
            f"output_dir: {config.output_dir} holds a run with other values of "
            f"{', '.join(changed)}; use a new directory, or the same config to resume"
        )


def _start_output_dir(config: TrainConfig) -> Path:
    check_output_dir(config)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / CONFIG_FILE).write_text(json.dumps(to_dict(config), indent=2))
    return output


class Trainer:
    """A job on a mesh: its jitted train and eval steps, with their shardings.

    Attributes:
        mesh: the device mesh.
        shardings: the train state's shardings.
        abstract: the train state's shapes, dtypes and shardings (to restore into).
        train_step: the jitted `(state, batch) -> (state, metrics)`; it donates the
            state it is given.
        eval_step: the jitted `(params, batch) -> sums`.
    """

    def __init__(self, config: TrainConfig, job: Job) -> None:
        self.config, self.job = config, job
        self.mesh = meshes.make_mesh(config.mesh)
        devices = meshes.batch_devices(self.mesh)
        if config.micro_batch_size % devices:
            raise ConfigError(
                f"batch_size: the micro-batch ({config.micro_batch_size} examples) "
                f"must split evenly over the {devices} devices of the mesh"
            )
        optimizer = make_optimizer(config)
        schedule = learning_rate_schedule(config)
        self._init = lambda params: init_state(params, optimizer, config.seed)
        abstract = jax.eval_shape(self._init, job.params)
        self.shardings = meshes.tree_shardings(self.mesh, abstract)
        self.abstract = jax.tree.map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(
                leaf.shape, leaf.dtype, sharding=sharding
            ),
            abstract,
            self.shardings,
        )
        replicated = meshes.replicated(self.mesh)
        self.train_step = jax.jit(
            make_train_step(job.objective, optimizer, schedule),
            in_shardings=(self.shardings, meshes.batch_sharding(self.mesh, 1)),
            out_shardings=(self.shardings, replicated),
            donate_argnums=0,
        )
        self.eval_step = jax.jit(
            make_eval_step(job.objective),
            in_shardings=(self.shardings.params, meshes.batch_sharding(self.mesh)),
            out_shardings=replicated,
        )

    def initial_state(self) -> TrainState:
        """The state before the first step, laid out on the mesh. The job's starting
        parameters are donated to it: they are no longer usable after."""
        init = jax.jit(self._init, out_shardings=self.shardings, donate_argnums=0)
        return init(self.job.params)

    def train_batch(self, position: int) -> dict[str, np.ndarray]:
        """The step's examples from a data position, as [micro-batches, rows, ...]."""
        return self.batch_of(self.step_examples(position))

    def step_examples(self, position: int) -> list[Any]:
        """The training examples of the step at a data position."""
        config = self.config
        order = example_order(
            len(self.job.train), config.seed, position, config.examples_per_step
        )
        return [self.job.train[i] for i in order]

    def batch_of(self, examples: Sequence[Any]) -> dict[str, np.ndarray]:
        """A step's batch of examples, as [micro-batches, rows, ...]."""
        config = self.config
        batch = self.job.collate(examples, config.batch_size)
        return {
            name: array.reshape(
                config.grad_accum_steps, config.micro_batch_size, *array.shape[1:]
            )
            for name, array in batch.items()
        }

    def evaluate(self, params: Params) -> dict[str, float]:
        """Held-out metrics, prefixed `eval_`."""
        if self.job.evaluate is not None:
            metrics = self.job.evaluate(params)
        else:
            metrics = self._held_out_objective(params)
        return {f"eval_{name}": value for name, value in metrics.items()}

    def _held_out_objective(self, params: Params) -> dict[str, float]:
        rows = self.config.micro_batch_size
        examples = self.job.held_out
        total: Sums | None = None
        for start in range(0, len(examples), rows):
            batch = self.job.collate(examples[start : start + rows], rows)
            sums = self.eval_step(params, batch)
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
        return _floats(self.job.objective.summarize(total))


def run(
    config: TrainConfig,
    job: Job,
    *,
    on_metrics: MetricsCallback | None = None,
    should_stop: StopCallback | None = None,
) -> dict[str, Any]:
    """Trains a job to `config.steps`, resuming from `output_dir` when it can.

    Args:
        config: the run's config.
        job: the prepared job (data, parameters, loss, export).
        on_metrics: called with each logged step's metrics (a JSON-ready dict with
            `step`), and last with the final record.
        should_stop: asked before each step; true saves a checkpoint and returns
            (the same call again resumes).

    Returns:
        The final record: `status` ("finished" or "stopped"), `step`, and when
        finished the held-out metrics (`eval_loss`, ...) and `checkpoint`, the
        trained model's directory (loadable with `model_service.registry`).

    Raises:
        ConfigError: the output directory holds another run, or the mesh does not fit.
        TrainingDiverged: the loss became NaN or infinite.
    """
    emit = on_metrics or (lambda record: None)
    output = _start_output_dir(config)
    trainer = Trainer(config, job)
    checkpoints = Checkpoints(output, config.keep_checkpoints)
    try:
        if checkpoints.latest_step() is None:
            state, position, host = trainer.initial_state(), 0, dict(job.host_state)
        else:
            state, meta = checkpoints.restore(trainer.abstract)
            position = meta["examples_seen"]
            host = meta.get("host_state", dict(job.host_state))
            _free(job.params)  # not needed: the state came back whole
        step = int(jax.device_get(state.step))
        record: dict[str, Any] = {}
        while step < config.steps:
            if should_stop is not None and should_stop():
                checkpoints.save(state, _meta(position, host))
                final = {"status": "stopped", "step": step}
                emit(final)
                return final
            state, record, host = _train_one_step(trainer, state, position, host)
            position += config.examples_per_step
            step += 1
            if not math.isfinite(record["loss"]):
                raise TrainingDiverged(
                    f"the loss is {record['loss']} at step {step}; stopped, the last "
                    f"good checkpoint (step {checkpoints.latest_step()}) is kept"
                )
            if step % config.eval_every == 0 or step == config.steps:
                record.update(trainer.evaluate(state.params))
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoints.save(state, _meta(position, host))
            if step % config.log_every == 0 or _held_out(record):
                emit(record)
        held_out = _held_out(record) or trainer.evaluate(state.params)
    finally:
        checkpoints.close()
    model_dir = _export(config, job, state.params, held_out)
    final = {"status": "finished", "step": step, **held_out, "checkpoint": model_dir}
    emit(final)
    return final


def _train_one_step(
    trainer: Trainer, state: TrainState, position: int, host: HostState
) -> tuple[TrainState, dict[str, Any], HostState]:
    start = time.perf_counter()
    examples, rollout_metrics = trainer.step_examples(position), {}
    if trainer.job.rollout is not None:
        examples, rollout_metrics, host = trainer.job.rollout(state, examples, host)
    batch = trainer.batch_of(examples)
    tokens = int((batch["positions"] >= 0).sum())
    began = time.perf_counter()
    state, metrics = trainer.train_step(state, batch)
    record = _floats(metrics)  # waits for the step
    end = time.perf_counter()
    step = int(jax.device_get(state.step))
    record = {
        "step": step,
        **record,
        **rollout_metrics,
        "tokens_per_second": tokens / (end - start),
        "train_step_seconds": end - began,
    }
    return state, record, host


def _meta(position: int, host: HostState) -> dict[str, Any]:
    """What a checkpoint keeps besides the state: the data position and the
    rollout's state."""
    return {"examples_seen": position, "host_state": host}


def _held_out(record: dict[str, Any]) -> dict[str, float]:
    """The held-out metrics of a record (none between evaluations)."""
    return {k: v for k, v in record.items() if k.startswith("eval_")}


def _export(
    config: TrainConfig, job: Job, params: Params, held_out: dict[str, float]
) -> str:
    """Writes the trained model to `output_dir/model`, replacing one a finished run of
    the same config wrote before (written aside first, so a crash loses neither)."""
    output = Path(config.output_dir)
    final, partial = output / MODEL_DIR, output / f"{MODEL_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    metrics = {k.removeprefix("eval_"): v for k, v in held_out.items()}
    job.export(partial, jax.device_get(params), metrics)
    _copy_tokenizer(Path(config.model), partial)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return str(final.absolute())


def _copy_tokenizer(model: Path, directory: Path) -> None:
    """Copies the `tokenizer.model` that the starting checkpoint had (in or beside
    its directory) into the trained one, so that it loads on its own."""
    for candidate in (model / TOKENIZER_FILE, model.parent / TOKENIZER_FILE):
        if model.is_dir() and candidate.is_file():
            shutil.copyfile(candidate, directory / TOKENIZER_FILE)
            return


def _free(tree: Any) -> None:
    """Frees the device memory of a tree's arrays (a model's weights: a gigabyte)."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            leaf.delete()


def _floats(metrics: Metrics) -> dict[str, float]:
    return {name: float(value) for name, value in jax.device_get(metrics).items()}
