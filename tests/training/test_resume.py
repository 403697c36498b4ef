"""Resumption: a run killed with SIGKILL and started again with the same command ends
with the same parameters as a run never interrupted."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from model_service.checkpoints import flatten
from model_service.registry import load_model
from tests.training.simulated import write_jsonl
from training.checkpointing import Checkpoints
from training.jobs import run

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
    killed = {**config, "output_dir": str(tmp_path / "killed")}
    config_file = tmp_path / "killed.json"
    config_file.write_text(json.dumps(killed))
    command = [sys.executable, "-m", "training", "sft", "--config", str(config_file)]

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # The run writes a line per step; once this test stops reading, the pipe fills
    # (about 200 lines) and the run blocks, far from its end, until it is killed.
    for line in process.stdout:
        if json.loads(line)["step"] == KILL_AFTER:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    latest = Checkpoints(killed["output_dir"], keep=2).latest_step()
    assert latest is not None and latest < STEPS

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert lines[0]["step"] == latest + 1  # it resumed, not started over
    final = lines[-1]

    uninterrupted = run("sft", {**config, "output_dir": str(tmp_path / "whole")})
    assert final["eval_loss"] == uninterrupted["eval_loss"]
    got = flatten(load_model(final["checkpoint"]).params)
    want = flatten(load_model(uninterrupted["checkpoint"]).params)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
