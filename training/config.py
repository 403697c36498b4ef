"""Run configurations: frozen dataclasses read from JSON, checked before any work.

Every job shares `TrainConfig`'s keys; a job's own keys live in its subclass. Unknown
keys, values of the wrong kind or range, a missing data file and an unknown model are
all `ConfigError`s, whose message names the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from model_service.checkpoints import reward_head
from model_service.registry import NAMES as MODEL_NAMES

DTYPES = ("auto", "float32", "bfloat16")
MESH_AXES = ("data", "fsdp")


class ConfigError(ValueError):
    """A run configuration that cannot run: the message says which key and why."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The keys every training job has.

    Attributes:
        model: a registered model name or a checkpoint path to start from.
        train_data: JSONL file of training examples.
        output_dir: checkpoints and the trained model go here; running again with the
            same directory resumes.
        steps: optimizer updates.
        batch_size: examples per update (split into `grad_accum_steps` micro-batches).
        learning_rate: peak learning rate of the warmup + cosine schedule.
        seed: data order, held-out split and initialization.
        max_length: most tokens of one example.
        eval_data: JSONL file of held-out examples; None holds out `eval_fraction` of
            the training prompts.
        eval_fraction: share of prompts held out when there is no `eval_data`.
        mesh: devices per axis, e.g. {"data": 4, "fsdp": 2}; None puts every device on
            the data axis.
        warmup_steps: linear warmup from 0 to `learning_rate`.
        min_learning_rate_ratio: the cosine decay ends at this share of the peak.
        weight_decay: AdamW's decoupled weight decay.
        adam_b1: AdamW's first-moment decay.
        adam_b2: AdamW's second-moment decay.
        max_grad_norm: gradients are clipped to this global norm.
        grad_accum_steps: micro-batches per update.
        dtype: activations' dtype; "auto" is bfloat16 on GPU/TPU, float32 on CPU.
            Parameters and optimizer state stay float32.
        log_every: steps between metric lines.
        eval_every: steps between held-out evaluations (and one at the end).
        checkpoint_every: steps between checkpoints (and one at the end).
        keep_checkpoints: how many recent checkpoints stay on disk.
    """

    model: str
    train_data: str
    output_dir: str
    steps: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    max_length: int = 512
    eval_data: str | None = None
    eval_fraction: float = 0.1
    mesh: dict[str, int] | None = None
    warmup_steps: int = 0
    min_learning_rate_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    dtype: str = "auto"
    log_every: int = 1
    eval_every: int = 100
    checkpoint_every: int = 100
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "max_length", "grad_accum_steps")
        positive += ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints")
        for name in positive:
            _require(name, getattr(self, name) >= 1, "must be at least 1")
        _require("warmup_steps", 0 <= self.warmup_steps, "must not be negative")
        _require("max_length", self.max_length >= 8, "must be at least 8")
        _require("learning_rate", 0 < self.learning_rate < 1, "must be in (0, 1)")
        _require("eval_fraction", 0 < self.eval_fraction < 1, "must be in (0, 1)")
        for name in ("min_learning_rate_ratio", "adam_b1", "adam_b2"):
            _require(name, 0 <= getattr(self, name) <= 1, "must be in [0, 1]")
        _require("weight_decay", self.weight_decay >= 0, "must not be negative")
        _require("max_grad_norm", self.max_grad_norm > 0, "must be positive")
        _require("dtype", self.dtype in DTYPES, f"must be one of {', '.join(DTYPES)}")
        _require(
            "batch_size",
            self.batch_size % self.grad_accum_steps == 0,
            f"must be a multiple of grad_accum_steps ({self.grad_accum_steps})",
        )
        if self.mesh is not None:
            _check_mesh(self.mesh, self.micro_batch_size)
        _require(
            "model",
            self.model in MODEL_NAMES or Path(self.model).exists(),
            f"{self.model!r} is neither a registered model "
            f"({', '.join(MODEL_NAMES)}) nor an existing path",
        )
        for name in ("train_data", "eval_data"):
            path = getattr(self, name)
            if path is not None:
                _require(name, Path(path).is_file(), f"no such file: {path}")

    @property
    def micro_batch_size(self) -> int:
        """Examples in one micro-batch."""
        return self.batch_size // self.grad_accum_steps

    @property
    def examples_per_step(self) -> int:
        """Training examples an update takes from the data (its data position's
        advance)."""
        return self.batch_size


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig(TrainConfig):
    """Supervised fine-tuning: next-token loss on the model's turns.

    `train_data` lines are `{"messages": [...]}` (roles system, user, assistant or
    model) or TRL's `{"prompt": ..., "completion": ...}`.
    """


TIES = ("drop", "soft")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardModelConfig(TrainConfig):
    """A Bradley-Terry reward model on preference pairs.

    `train_data` lines are TRL's `{"prompt", "chosen", "rejected"}` (strings, or lists
    of messages), with an optional `margin` and `label` (1 = chosen is better, 0.5 =
    a tie).

    Attributes:
        ties: "drop" leaves out pairs labelled 0.5; "soft" trains on them with the
            label as the target probability.
        center_rewards_coefficient: weight of the mean squared summed reward of each
            pair (reward centering, as TRL's), 0 for none.
    """

    ties: str = "drop"
    center_rewards_coefficient: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require("ties", self.ties in TIES, f"must be one of {', '.join(TIES)}")
        _require(
            "center_rewards_coefficient",
            self.center_rewards_coefficient >= 0,
            "must not be negative",
        )


TRUNCATED = ("keep", "mask")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReinforceConfig(TrainConfig):
    """REINFORCE with a KL term toward the initial policy (`training.reinforce`).

    `model` is the initial policy and the frozen reference. `train_data` lines are
    prompts: `{"prompt": str}` (a prompt-set export: its `category` picks the judge's
    rubric, other fields are ignored) or `{"messages": [...]}` (assistant messages at
    the end are dropped: the policy writes its own). `max_length` holds a prompt and
    its answer; longer prompts lose their oldest turns. `batch_size` is
    `prompts_per_step * k`, the answers of one update: leave it out.

    Attributes:
        reward_model: a reward model's directory (`model_service.reward`).
        prompts_per_step: prompts of one update.
        k: answers sampled per prompt (at least 2: each answer's baseline is the
            mean reward of the others).
        temperature: sampling temperature; the policy's and the reference's
            log-probs are those of their distributions at this temperature.
        top_p: the nucleus sampled from; 1 samples the whole distribution.
        max_new_tokens: the longest answer.
        beta: weight of the KL term (its start when `target_kl` is set).
        target_kl: the KL per answer (nats) that beta is steered toward by a
            proportional controller; None keeps beta fixed.
        truncated: answers cut at `max_new_tokens` are kept ("keep": scored and
            trained on as they stand) or masked ("mask": no loss, and no part in
            their siblings' baselines).
        judge: a model (name or path) that compares, at each evaluation, the
            policy's answers to held-out prompts with the initial policy's.
    """

    batch_size: int = 0
    reward_model: str
    prompts_per_step: int
    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    beta: float = 0.05
    target_kl: float | None = None
    truncated: str = "keep"
    judge: str | None = None

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "max_new_tokens"):
            _require(name, getattr(self, name) >= 1, "must be at least 1")
        _require("k", self.k >= 2, "must be at least 2 (the baseline is the others')")
        answers = self.prompts_per_step * self.k
        _require(
            "batch_size",
            self.batch_size in (0, answers),
            f"is prompts_per_step x k ({answers}) in REINFORCE: leave it out",
        )
        object.__setattr__(self, "batch_size", answers)
        super().__post_init__()
        _require("temperature", self.temperature > 0, "must be positive")
        _require("top_p", 0 < self.top_p <= 1, "must be in (0, 1]")
        _require("beta", self.beta >= 0, "must not be negative")
        if self.target_kl is not None:
            _require("target_kl", self.target_kl > 0, "must be positive")
            _require("beta", self.beta > 0, "must be positive to adapt to target_kl")
        _require(
            "truncated",
            self.truncated in TRUNCATED,
            f"must be one of {', '.join(TRUNCATED)}",
        )
        _require(
            "max_new_tokens",
            self.max_new_tokens < self.max_length,
            f"must leave room for the prompt in max_length ({self.max_length})",
        )
        _require(
            "reward_model",
            reward_head.is_reward_model(self.reward_model),
            f"{self.reward_model!r} is not a reward model's directory (no "
            f"{reward_head.HEAD_FILE})",
        )
        if self.judge is not None:
            _require(
                "judge",
                self.judge in MODEL_NAMES or Path(self.judge).exists(),
                f"{self.judge!r} is neither a registered model nor an existing path",
            )

    @property
    def examples_per_step(self) -> int:
        """Prompts an update takes from the data."""
        return self.prompts_per_step


Config = TypeVar("Config", bound=TrainConfig)


def load_config(
    cls: type[Config], source: str | PathLike[str] | Mapping[str, Any]
) -> Config:
    """Reads and checks a configuration.

    Args:
        cls: the job's config class.
        source: a JSON file, or its contents as a mapping.

    Returns:
        The config; relative paths in a file are taken from the current directory.

    Raises:
        ConfigError: unreadable JSON, unknown or missing keys, bad values, missing
            files or model.
    """
    fields = _read(source)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key(s): {', '.join(unknown)}; known keys: {', '.join(known)}"
        )
    missing = [
        name
        for name, field in known.items()
        if name not in fields
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key(s): {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    for name, value in fields.items():
        _check_type(name, value, hints[name])
    return cls(**fields)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as the JSON object `load_config` reads."""
    return dataclasses.asdict(config)


def _read(source: str | PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    try:
        fields = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: the config must be a JSON object")
    return fields


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raises unless `value` is of the JSON kind the field's type hint names."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None and type(None) in options:
        return
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is float and _is_number(value) and math.isfinite(value):
            return
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if origin in (str, bool) and isinstance(value, origin):
            return
        if origin is dict and isinstance(value, dict):
            return
    kinds = " or ".join(_kind(option) for option in options)
    raise ConfigError(f"{name}: must be {kinds}, not {json.dumps(value)}")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
    names |= {dict: "an object", type(None): "null"}
    return names[origin]


def _check_mesh(mesh: Mapping[str, Any], micro_batch_size: int) -> None:
    unknown = sorted(set(mesh) - set(MESH_AXES))
    _require(
        "mesh",
        not unknown,
        f"unknown axis {', '.join(unknown)}; axes are {', '.join(MESH_AXES)}",
    )
    for axis, size in mesh.items():
        _require(
            "mesh",
            isinstance(size, int) and not isinstance(size, bool) and size >= 1,
            f"{axis} must be a positive integer",
        )
    devices = math.prod(mesh.values())
    _require(
        "mesh",
        micro_batch_size % devices == 0,
        f"the micro-batch ({micro_batch_size} examples) must split evenly over its "
        f"{devices} devices",
    )


def _require(name: str, condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(f"{name}: {message}")
