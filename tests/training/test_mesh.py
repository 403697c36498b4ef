"""Sharding: on 8 simulated CPU devices, a step sharded over {"data": 4, "fsdp": 2}
gives the single-device step's loss and parameters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.training.simulated import colour_pairs, write_jsonl

ROOT = Path(__file__).resolve().parents[2]

# Runs in a process of its own: the device count is fixed when JAX starts.
SCRIPT = """
import json, sys
import jax
import numpy as np
from model_service.checkpoints import flatten, reward_head
from model_service.registry import load_model
from training.jobs import run

base = json.loads(sys.argv[1])
out = {"devices": jax.device_count()}
for name, mesh in [("single", {"data": 1}), ("sharded", {"data": 4, "fsdp": 2})]:
    records = []
    config = {**base, "mesh": mesh, "output_dir": base["output_dir"] + name}
    final = run("reward-model", config, on_metrics=records.append)
    params = flatten(load_model(final["checkpoint"]).params)
    params["head"] = reward_head.load(final["checkpoint"]).weight
    np.savez(config["output_dir"] + ".npz", **params)
    out[name] = [r["loss"] for r in records if "loss" in r]
print(json.dumps(out))
"""


def test_a_sharded_step_equals_the_single_device_step(
    small_model: Path, tmp_path: Path
) -> None:
    config = {
        "model": str(small_model),
        "train_data": str(write_jsonl(tmp_path / "pairs.jsonl", colour_pairs(40))),
        "output_dir": str(tmp_path / "run_"),
        "steps": 2,
        "batch_size": 16,
        "grad_accum_steps": 2,
        "learning_rate": 1e-3,
        "max_length": 32,
    }
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["devices"] == 8
    np.testing.assert_allclose(out["sharded"], out["single"], rtol=1e-5)
    single = np.load(tmp_path / "run_single.npz")
    sharded = np.load(tmp_path / "run_sharded.npz")
    for name in single.files:
        # Sums over other device splits round differently; far below a step (1e-3).
        np.testing.assert_allclose(sharded[name], single[name], atol=1e-5, err_msg=name)
