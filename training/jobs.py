"""The training jobs by name, and one call that runs any of them.

    run("sft", "training/configs/sft_gemma3_270m.json", on_metrics=print)

is what `python -m training sft --config FILE` does, and what a Celery task calls
(with `should_stop` checking for a cancel).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

from training import loop, reinforce, reward_model, sft
from training.config import (
    ConfigError,
    ReinforceConfig,
    RewardModelConfig,
    SFTConfig,
    TrainConfig,
    load_config,
)
from training.data import DataError


@dataclasses.dataclass(frozen=True)
class JobKind:
    """A job's config class, how it reads its data from a config, and how it
    prepares a run."""

    config: type[TrainConfig]
    read_data: Callable[[Any], tuple[list, list]]
    prepare: Callable[[Any], loop.Job]


JOBS = {
    "sft": JobKind(SFTConfig, sft.read_data, sft.prepare),
    "reward-model": JobKind(
        RewardModelConfig, reward_model.read_data, reward_model.prepare
    ),
    "reinforce": JobKind(ReinforceConfig, reinforce.read_data, reinforce.prepare),
}


def configure(
    kind: str, source: str | PathLike[str] | Mapping[str, Any]
) -> TrainConfig:
    """Reads and checks a job's config (a JSON file or a mapping).

    Raises:
        ConfigError: an unknown job, or a bad config.
    """
    if kind not in JOBS:
        raise ConfigError(f"unknown job {kind!r}; jobs are {', '.join(JOBS)}")
    return load_config(JOBS[kind].config, source)


def check_data(kind: str, config: TrainConfig) -> None:
    """Reads a checked config's data as its job will, without loading the model: for
    refusing a bad file before a run is queued.

    Raises:
        DataError: bad data lines (all listed), or too little data.
        ConfigError: a model whose tokenizer cannot be read (say, a checkpoint
            directory without a checkpoint).
    """
    try:
        JOBS[kind].read_data(config)
    except DataError:
        raise
    except ValueError as exc:  # the tokenizer's (each bad line's are DataError's)
        raise ConfigError(f"model: {exc}") from None


def run(
    kind: str,
    config: TrainConfig | str | PathLike[str] | Mapping[str, Any],
    *,
    on_metrics: loop.MetricsCallback | None = None,
    should_stop: loop.StopCallback | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) a training job to its end; see `training.loop.run`.

    Args:
        kind: a name in `JOBS`.
        config: the job's config, or a JSON file or mapping to read it from.
        on_metrics: called with each logged step's metrics and the final record.
        should_stop: asked before each step; true saves a checkpoint and returns.

    Returns:
        The final record.

    Raises:
        ConfigError: a bad config (before any work).
        DataError: bad data lines, all listed (before any training).
        TrainingDiverged: a NaN or infinite loss.
    """
    if not isinstance(config, TrainConfig):
        config = configure(kind, config)
    loop.check_output_dir(config)
    job = JOBS[kind].prepare(config)
    return loop.run(config, job, on_metrics=on_metrics, should_stop=should_stop)
