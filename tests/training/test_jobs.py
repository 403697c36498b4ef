"""Training jobs run whole, as the command line and a Celery task run them: metrics,
held-out evaluation, the trained model loading back, a stop and a resume, a diverged
run, and a reward model that learns a rater's taste."""

import math
from pathlib import Path

import jax
import numpy as np
import pytest

from model_service.checkpoints import reward_head
from model_service.registry import load_model
from tests.training.simulated import colour_pairs, rater_prefers, write_jsonl
from tests.training.test_resume import conversations
from training import reward_model, sft
from training.checkpointing import Checkpoints
from training.config import RewardModelConfig, SFTConfig, load_config
from training.data import example_order
from training.jobs import run
from training.loop import TrainingDiverged

STEP_METRICS = {"step", "loss", "grad_norm", "learning_rate", "tokens_per_second"}
REWARD_METRICS = {"accuracy", "reward_margin", "reward_mean", "reward_std"}


def test_sft_stops_when_asked_resumes_and_its_model_loads_back(
    small_model: Path, tmp_path: Path
) -> None:
    config = {
        "model": str(small_model),
        "train_data": str(write_jsonl(tmp_path / "train.jsonl", conversations(16))),
        "eval_data": str(write_jsonl(tmp_path / "eval.jsonl", conversations(5))),
        "output_dir": str(tmp_path / "run"),
        "steps": 4,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_length": 32,
        "eval_every": 2,
    }
    answers = iter([False, True])  # stop before the second step
    stopped = run("sft", config, should_stop=lambda: next(answers))
    assert stopped == {"status": "stopped", "step": 1}

    records = []
    final = run("sft", config, on_metrics=records.append)
    assert [r["step"] for r in records] == [2, 3, 4, 4]  # resumed after step 1
    assert all(
        STEP_METRICS <= r.keys() and math.isfinite(r["loss"]) for r in records[:-1]
    )
    assert "eval_loss" in records[0] and "eval_loss" not in records[1]
    assert final == records[-1]
    assert final["status"] == "finished" and final["step"] == 4

    # The saved model is the trained one: its held-out loss is the one reported.
    trained = load_model(final["checkpoint"])
    job = sft.prepare(load_config(SFTConfig, {**config, "model": final["checkpoint"]}))
    batch = job.collate(job.held_out, len(job.held_out))
    _, sums = jax.jit(job.objective.loss)(trained.params, batch, jax.random.key(0))
    eval_loss = float(job.objective.summarize(sums)["loss"])
    assert eval_loss == pytest.approx(final["eval_loss"], rel=1e-5)
    assert eval_loss != pytest.approx(records[0]["eval_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_reward_model_learns_the_taste_of_a_simulated_rater(
    small_model: Path, tmp_path: Path
) -> None:
    pairs = colour_pairs(200)
    assert all(rater_prefers(p["chosen"], p["rejected"]) for p in pairs)
    config = {
        "model": str(small_model),
        "train_data": str(write_jsonl(tmp_path / "pairs.jsonl", pairs)),
        "output_dir": str(tmp_path / "run"),
        "steps": 25,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "warmup_steps": 5,
        "max_length": 48,
        "eval_fraction": 0.2,
    }
    records = []
    final = run("reward-model", config, on_metrics=records.append)
    assert all(STEP_METRICS | REWARD_METRICS <= r.keys() for r in records[:-1])
    assert final["eval_accuracy"] >= 0.9

    # The head and the reward statistics are saved with the backbone, and the
    # model loaded back orders the held-out pairs as the run reported.
    head = reward_head.load(final["checkpoint"])
    assert head.reward_mean == pytest.approx(final["eval_reward_mean"])
    assert head.reward_std == pytest.approx(final["eval_reward_std"])
    backbone = load_model(final["checkpoint"])
    params = {"backbone": backbone.params, "head": {"weight": head.weight}}
    job = reward_model.prepare(load_config(RewardModelConfig, config))
    batch = job.collate(job.held_out, len(job.held_out))
    _, sums = jax.jit(job.objective.loss)(params, batch, jax.random.key(0))
    metrics = job.objective.summarize(sums)
    assert float(metrics["accuracy"]) == final["eval_accuracy"]
    assert float(metrics["loss"]) == pytest.approx(final["eval_loss"], rel=1e-4)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(
    small_model: Path, tmp_path: Path
) -> None:
    pairs = colour_pairs(5)
    pairs[3]["margin"] = 1e39  # infinite in float32: the loss of its step is too
    seed = 2
    bad_step = int(np.flatnonzero(example_order(5, seed, 0, 5) == 3)[0]) + 1
    assert bad_step > 1
    config = {
        "model": str(small_model),
        "train_data": str(write_jsonl(tmp_path / "pairs.jsonl", pairs)),
        "eval_data": str(write_jsonl(tmp_path / "eval.jsonl", colour_pairs(2))),
        "output_dir": str(tmp_path / "run"),
        "steps": 5,
        "batch_size": 1,
        "learning_rate": 1e-3,
        "max_length": 32,
        "seed": seed,
        "checkpoint_every": 1,
    }
    with pytest.raises(TrainingDiverged, match=f"at step {bad_step}"):
        run("reward-model", config)
    assert Checkpoints(tmp_path / "run", keep=2).latest_step() == bad_step - 1
    assert not (tmp_path / "run" / "model").exists()
