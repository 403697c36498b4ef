"""REINFORCE on a tiny policy and a real reward model: k different answers a prompt,
no KL while the policy is the reference, a rewarded token that grows likelier, a
stopped run that resumes to the uninterrupted result, and config errors."""

import dataclasses
import functools
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from model_service.chat_format import format_conversation
from model_service.checkpoints import flatten, flax_params, reward_head
from model_service.config import get_config
from model_service.registry import load_model
from model_service.tokenizer import Tokenizer
from model_service.transformer import Transformer, init_params
from tests.model_service.test_tokenizer import train_tiny_model
from tests.training.simulated import write_jsonl
from training import reinforce
from training.cli import main
from training.config import ReinforceConfig, load_config
from training.jobs import run
from training.trainer import init_state, make_optimizer

REWARDED = 151  # the token the reward model prefers (a plain piece)
# The tiny config's weights at ten times their initial scale (std 0.1, not 0.01): at
# 0.01 an Adam step of 1e-3 moves every weight by a tenth of its size.
SCALE = 10.0
NAMES = ("Ann", "Bob", "Cy", "Di", "Ed", "Flo")
LENGTH = 32  # the padded length of the test's own forward passes
STEP_METRICS = {"loss", "grad_norm", "reward_mean", "reward_std", "kl"}
STEP_METRICS |= {"kl_per_token", "kl_k3", "kl_k3_per_token", "entropy", "beta"}
STEP_METRICS |= {"answer_length", "ended", "samples", "sampling_seconds"}
STEP_METRICS |= {"scoring_seconds", "reference_seconds", "train_step_seconds"}


@dataclasses.dataclass(frozen=True)
class Models:
    policy: Path
    reward_model: Path
    prompts: Path
    prompt_ids: list[list[int]]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """A policy that says REWARDED after a prompt about one time in thirty, and a
    reward model to which every other token looks alike: REWARDED scores 4, any
    other 0 (normalized)."""
    directory = tmp_path_factory.mktemp("reinforce")
    config = dataclasses.replace(get_config("tiny"), vocab_size=400)
    params = jax.tree.map(
        lambda w: np.array(w) * (SCALE if w.ndim >= 2 else 1.0),
        init_params(config, seed=0),
    )
    (directory / "tokenizer.model").write_bytes(train_tiny_model())
    tokenizer = Tokenizer.from_model_file(directory / "tokenizer.model")
    assert REWARDED not in (tokenizer.end_of_turn_id, tokenizer.eos_id)
    prompts = [f"Name a colour, {name}." for name in NAMES]
    prompt_ids = [
        format_conversation(tokenizer, [{"role": "user", "content": p}])
        for p in prompts
    ]

    reward_params = jax.tree.map(np.array, params)
    table = reward_params["embedder"]["input_embedding"]
    others = np.arange(len(table)) != REWARDED
    table[others] = table[others].mean(axis=0)
    rewarded = last_hidden(config, reward_params, [p + [REWARDED] for p in prompt_ids])
    other = last_hidden(config, reward_params, [p + [REWARDED + 1] for p in prompt_ids])
    weight = (rewarded - other).mean(axis=0)
    weight /= np.linalg.norm(weight)
    low, high = float((other @ weight).mean()), float((rewarded @ weight).mean())
    head = reward_head.RewardHead(weight, reward_mean=low, reward_std=(high - low) / 4)
    reward_head.save(directory / "reward", reward_params, config, head)

    # The policy: REWARDED's embedding turned toward the prompts' last hidden state.
    toward = last_hidden(config, params, prompt_ids).mean(axis=0)
    params["embedder"]["input_embedding"][REWARDED] += (
        0.7 * toward / np.linalg.norm(toward)
    )
    flax_params.save(directory / "policy", params, config)
    for model in ("reward", "policy"):
        (directory / model / "tokenizer.model").write_bytes(train_tiny_model())
    records = [
        {"id": str(i), "prompt": p, "category": "x"} for i, p in enumerate(prompts)
    ]
    return Models(
        directory / "policy",
        directory / "reward",
        write_jsonl(directory / "prompts.jsonl", records),
        prompt_ids,
    )


def forward(config, params, sequences: list[list[int]]):
    """The model's output [N, LENGTH, ...] and each sequence's last index [N]."""
    tokens = np.zeros((len(sequences), LENGTH), np.int32)
    positions = np.full((len(sequences), LENGTH), -1, np.int32)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = sequence
        positions[row, : len(sequence)] = np.arange(len(sequence))
    out = _apply(config, params, tokens, positions)
    return out, np.asarray([len(s) - 1 for s in sequences])


@functools.partial(jax.jit, static_argnums=0)
def _apply(config, params, tokens, positions):
    return Transformer(config=config).apply({"params": params}, tokens, positions)


def last_hidden(config, params, sequences: list[list[int]]) -> np.ndarray:
    """Final hidden states [N, D] at the last position of each sequence."""
    out, last = forward(config, params, sequences)
    return np.asarray(out.hidden)[np.arange(len(last)), last]


def next_token_probabilities(models: Models, directory: Path) -> np.ndarray:
    """The policy's distribution [prompts, vocab] of the first token of an answer."""
    model = load_model(directory)
    out, last = forward(model.config, model.params, models.prompt_ids)
    return np.asarray(jax.nn.softmax(out.logits[np.arange(len(last)), last]))


def settings(models: Models, output_dir: Path, **changes) -> dict:
    return {
        "model": str(models.policy),
        "reward_model": str(models.reward_model),
        "train_data": str(models.prompts),
        "output_dir": str(output_dir),
        "steps": 6,
        "prompts_per_step": 2,
        "k": 8,
        "learning_rate": 2e-3,
        "max_length": 32,
        "max_new_tokens": 1,
        "beta": 0.0,
        "eval_every": 100,
        **changes,
    }


def test_k_answers_to_a_prompt_differ_and_start_with_no_kl(
    models: Models, tmp_path: Path
) -> None:
    config = load_config(
        ReinforceConfig,
        settings(models, tmp_path, max_new_tokens=6, temperature=0.7, beta=0.1),
    )
    job = reinforce.prepare(config)
    state = init_state(job.params, make_optimizer(config), config.seed)

    answers, metrics, host = job.rollout(state, job.train[:2], {"beta": 0.1})

    assert len(answers) == 16
    for group in (answers[:8], answers[8:]):
        assert len({tuple(a.targets[a.mask]) for a in group}) == 8
        assert sum(a.advantage for a in group) == pytest.approx(0.0, abs=1e-5)
    # The policy is the reference: the sampler's log-probs (at temperature 0.7)
    # are the reference's, and the KL estimates are 0.
    assert abs(metrics["kl"]) < 1e-4 and metrics["kl_k3"] < 1e-8
    assert STEP_METRICS - {"loss", "grad_norm", "train_step_seconds"} <= set(metrics)
    assert [s["prompt"] for s in metrics["samples"]] == [
        p.turns[-1][0][1] for p in job.train[:2]
    ]
    assert host == {"beta": 0.1}  # no target_kl: beta stays


def test_a_rewarded_token_grows_likelier_and_the_kl_grows(
    models: Models, tmp_path: Path
) -> None:
    records = []
    final = run("reinforce", settings(models, tmp_path), on_metrics=records.append)

    before = next_token_probabilities(models, models.policy)
    after = next_token_probabilities(models, Path(final["checkpoint"]))
    assert after[:, REWARDED].mean() > 2 * before[:, REWARDED].mean()
    assert all(STEP_METRICS <= r.keys() for r in records[:-1])
    first, last = records[0], records[-2]
    assert abs(first["kl"]) < 1e-4 and first["kl_k3"] < 1e-8
    assert last["kl_k3"] > 1e-3
    exact_kl = np.sum(after * (np.log(after) - np.log(before)), axis=1).mean()
    assert exact_kl > 0.02


def test_a_stopped_run_resumes_to_the_uninterrupted_result(
    models: Models, tmp_path: Path
) -> None:
    changes = {"steps": 4, "max_new_tokens": 3, "beta": 0.1, "target_kl": 0.01}
    changes |= {"judge": str(models.policy)}
    whole = []
    uninterrupted = run(
        "reinforce",
        settings(models, tmp_path / "whole", **changes),
        on_metrics=whole.append,
    )
    config = settings(models, tmp_path / "stopped", **changes)
    answers = iter([False, False, True])  # stop before the third step
    assert run("reinforce", config, should_stop=lambda: next(answers)) == {
        "status": "stopped",
        "step": 2,
    }
    resumed = []
    final = run("reinforce", config, on_metrics=resumed.append)

    assert [r["step"] for r in resumed] == [3, 4, 4]
    # beta, adapted at every step, came back with the checkpoint
    assert whole[0]["beta"] == 0.1 and whole[1]["beta"] != 0.1
    for got, want in zip(resumed[:2], whole[2:4], strict=True):
        for key in ("beta", "reward_mean", "kl", "loss"):
            assert got[key] == want[key], key
    got = flatten(load_model(final["checkpoint"]).params)
    want = flatten(load_model(uninterrupted["checkpoint"]).params)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    held_out = {"eval_reward", "eval_kl", "eval_answer_length", "eval_ended"}
    assert held_out | {"eval_judge_win_rate"} <= final.keys()
    assert 0.0 <= final["eval_judge_win_rate"] <= 1.0
    assert final["eval_reward"] == uninterrupted["eval_reward"]


@pytest.fixture
def config_file(models: Models, tmp_path: Path):
    def write(**changes) -> str:
        fields = {
            k: v for k, v in settings(models, tmp_path / "run", **changes).items()
        }
        path = tmp_path / "config.json"
        path.write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
        return str(path)

    return write


@pytest.mark.parametrize(
    "change, message",
    [
        ({"reward_model": None}, "missing key(s): reward_model"),
        ({"k": 1}, "k: must be at least 2"),
        ({"batch_size": 8}, "batch_size: is prompts_per_step x k (16)"),
        ({"temperature": 0}, "temperature: must be positive"),
        ({"top_p": 1.5}, "top_p: must be in (0, 1]"),
        ({"target_kl": 0.1}, "beta: must be positive to adapt to target_kl"),
        ({"truncated": "drop"}, "truncated: must be one of keep, mask"),
        ({"max_new_tokens": 32}, "max_new_tokens: must leave room for the prompt"),
        ({"reward_model": "nowhere"}, "reward_model: 'nowhere' is not a reward model"),
        ({"judge": "gemma-9000"}, "judge: 'gemma-9000' is neither a registered"),
    ],
)
def test_a_bad_config_is_refused_before_any_work(
    config_file, tmp_path: Path, capsys, change: dict, message: str
) -> None:
    assert main(["reinforce", "--config", config_file(**change)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_reward_model_of_another_vocabulary_is_refused(
    config_file, tmp_path: Path, capsys
) -> None:
    config = dataclasses.replace(get_config("tiny"), vocab_size=300)
    head = reward_head.RewardHead(np.ones(config.embed_dim, np.float32), 0.0, 1.0)
    reward_head.save(tmp_path / "rm", init_params(config), config, head)
    (tmp_path / "rm" / "tokenizer.model").write_bytes(train_tiny_model())
    assert (
        main(["reinforce", "--config", config_file(reward_model=str(tmp_path / "rm"))])
        == 2
    )
    assert "reward_model: its vocabulary (300 pieces)" in capsys.readouterr().err


def test_bad_prompts_are_refused_with_every_bad_line(
    config_file, tmp_path: Path, capsys
) -> None:
    data = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"prompt": "Fine."}, {"text": "x"}, {"prompt": "Fine too."}, {"prompt": 3}],
    )
    assert main(["reinforce", "--config", config_file(train_data=str(data))]) == 2
    err = capsys.readouterr().err
    assert "prompts.jsonl:2: expected 'prompt' or 'messages'" in err
    assert "prompts.jsonl:4: prompt must be a string or a list of messages" in err
