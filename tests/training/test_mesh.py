"""Sharding: on 8 simulated CPU devices, a step sharded over {"data": 4, "fsdp": 2}
gives the single-device step's loss and parameters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.training.simulated import colour_pairs, write_jsonl

ROOT = Path(__file__).resolve().parents[2]

# Runs in a process of its own: the device count is fixed when JAX starts.
SCRIPT = """
import json, sys
import jax
import numpy as np
import pytest
from model_service.checkpoints import flatten
from training import reward_model
from training.config import RewardModelConfig, load_config
from training.loop import Trainer

base, directory = json.loads(sys.argv[1]), sys.argv[2]
out = {"devices": jax.device_count()}
for name, mesh in [("single", {"data": 1}), ("sharded", {"data": 4, "fsdp": 2})]:
    config = load_config(RewardModelConfig, {**base, "mesh": mesh})
    trainer = Trainer(config, reward_model.prepare(config))
    state, losses = trainer.initial_state(), []
    for position in (0, config.batch_size):
        state, metrics = trainer.train_step(state, trainer.train_batch(position))
        losses.append(float(metrics["loss"]))
    embedding = state.params["backbone"]["embedder"]["input_embedding"]
    out[name] = {"losses": losses, "shard": embedding.addressable_shards[0].data.shape}
    np.savez(f"{directory}/{name}.npz", **flatten(jax.device_get(state.params)))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_sharded_step_equals_the_single_device_step(
    small_model: Path, tmp_path: Path
) -> None:
    config = {
        "model": str(small_model),
        "train_data": str(write_jsonl(tmp_path / "pairs.jsonl", colour_pairs(40))),
        "output_dir": str(tmp_path / "run"),
        "steps": 2,
        "batch_size": 16,
        "grad_accum_steps": 2,
        "learning_rate": 1e-3,
        "max_length": 32,
    }
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["devices"] == 8
    # the 400 x 32 embedding: whole on one device, halved over fsdp on eight
    assert out["single"]["shard"] == [400, 32]
    assert out["sharded"]["shard"] == [200, 32]
    np.testing.assert_allclose(
        out["sharded"]["losses"], out["single"]["losses"], rtol=1e-5
    )
    single, sharded = (
        np.load(tmp_path / "single.npz"),
        np.load(tmp_path / "sharded.npz"),
    )
    for name in single.files:
        # Sums over other device splits round differently, and Adam divides by the
        # root of tiny second moments (1.1e-5 seen once in CI); a wrong reduction
        # is off by a whole step (the learning rate, 1e-3).
        np.testing.assert_allclose(sharded[name], single[name], atol=1e-4, err_msg=name)
