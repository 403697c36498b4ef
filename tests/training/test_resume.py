"""Resumption: a run killed with SIGKILL and started again with the same command ends
with the same parameters as a run never interrupted."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_service.checkpoints import flatten
from model_service.registry import load_model
from tests.training.simulated import write_jsonl
from training.checkpointing import Checkpoints

ROOT = Path(__file__).resolve().parents[2]
STEPS = 300
KILL_AFTER = 120


def conversations(count: int) -> list[dict]:
    words = "the cat dog sat on mat river stone light tree quick brown fox".split()
    return [
        {
            "messages": [
                {"role": "user", "content": " ".join(words[i % 7 : i % 7 + 3])},
                {"role": "assistant", "content": " ".join(words[i % 5 :: 2])},
            ]
        }
        for i in range(count)
    ]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(
    small_model: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", conversations(24))
    config = {
        "model": str(small_model),
        "train_data": str(data),
        "steps": STEPS,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_length": 32,
        "checkpoint_every": 50,
        "eval_every": 1000,
    }
    # The three runs share compiled programs (and so start faster).
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }

    def command(name: str) -> list[str]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**config, "output_dir": str(tmp_path / name)}))
        return [sys.executable, "-m", "training", "sft", "--config", str(path)]

    def run_to_the_end(name: str) -> list[dict]:
        done = subprocess.run(
            command(name), cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines()]

    uninterrupted = run_to_the_end("whole")[-1]

    process = subprocess.Popen(
        command("killed"), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    # The run writes a line per step; once this test stops reading, the pipe fills
    # (about 200 lines) and the run blocks, far from its end, until it is killed.
    for line in process.stdout:
        if json.loads(line)["step"] == KILL_AFTER:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    latest = Checkpoints(tmp_path / "killed", keep=2).latest_step()
    assert latest is not None and latest < STEPS

    lines = run_to_the_end("killed")
    assert lines[0]["step"] == latest + 1  # it resumed, not started over
    final = lines[-1]
    assert final["eval_loss"] == uninterrupted["eval_loss"]
    got = flatten(load_model(final["checkpoint"]).params)
    want = flatten(load_model(uninterrupted["checkpoint"]).params)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
