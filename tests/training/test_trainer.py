"""The shared train step: after two steps every trainable leaf has changed and the
loss is finite, for each job."""

from pathlib import Path

import jax
import numpy as np
import pytest

from model_service.checkpoints import flatten
from tests.training.simulated import colour_pairs, write_jsonl
from tests.training.test_resume import conversations
from training import reward_model, sft
from training.config import RewardModelConfig, SFTConfig
from training.trainer import (
    init_state,
    learning_rate_schedule,
    make_optimizer,
    make_train_step,
)

JOBS = {
    "sft": (SFTConfig, sft.prepare, conversations(12)),
    "reward-model": (RewardModelConfig, reward_model.prepare, colour_pairs(12)),
}


@pytest.mark.parametrize("kind", JOBS)
def test_two_steps_change_every_trainable_leaf(
    kind: str, small_model: Path, tmp_path: Path
) -> None:
    config_class, prepare, records = JOBS[kind]
    config = config_class(
        model=str(small_model),
        train_data=str(write_jsonl(tmp_path / "data.jsonl", records)),
        output_dir=str(tmp_path / "run"),
        steps=2,
        batch_size=4,
        grad_accum_steps=2,
        learning_rate=1e-3,
        max_length=32,
    )
    job = prepare(config)
    optimizer = make_optimizer(config)
    step = jax.jit(
        make_train_step(job.objective, optimizer, learning_rate_schedule(config))
    )
    state = init_state(job.params, optimizer, seed=0)
    batch = job.collate(job.train[:4], 4)
    batch = {
        name: array.reshape(2, 2, *array.shape[1:]) for name, array in batch.items()
    }
    for _ in range(2):
        state, metrics = step(state, batch)
        assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert int(state.step) == 2
    before, after = flatten(job.params), flatten(state.params)
    assert before.keys() == after.keys()
    unchanged = [k for k in before if np.array_equal(before[k], after[k])]
    assert not unchanged
