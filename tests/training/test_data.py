"""Training data: the accepted forms, every bad line reported with its number before
anything trains, and held-out examples split by prompt."""

import json
from pathlib import Path

import numpy as np
import pytest

from model_service.registry import load_tokenizer
from tests.training.simulated import colour_pairs, write_jsonl
from training import reward_model
from training.config import RewardModelConfig
from training.data import DataError, example_order, read_jsonl, split_by_prompt
from training.reward_model import parse_pair
from training.sft import encode


@pytest.fixture(scope="module")
def tokenizer(small_model: Path):
    return load_tokenizer(small_model)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_conversations_in_every_form_give_the_same_example(tokenizer) -> None:
    forms = [
        {"messages": [{"role": "user", "content": "the cat"},
                      {"role": "assistant", "content": "sat on"}]},
        {"messages": [{"role": "user", "content": "the cat"},
                      {"role": "model", "content": "sat on"}]},
        {"prompt": "the cat", "completion": "sat on"},
        {"prompt": [{"role": "user", "content": "the cat"}],
         "completion": [{"role": "assistant", "content": "sat on"}]},
    ]  # fmt: skip
    examples = [encode(tokenizer, 64, form) for form in forms]
    for example in examples[1:]:
        np.testing.assert_array_equal(example.tokens, examples[0].tokens)
        np.testing.assert_array_equal(example.mask, examples[0].mask)
    assert tokenizer.decode(examples[0].targets[examples[0].mask]) == "sat on"


def test_system_text_goes_before_the_first_user_turn(tokenizer) -> None:
    with_system = encode(tokenizer, 64, {"messages": [
        {"role": "system", "content": "the dog"},
        {"role": "user", "content": "the cat"},
        {"role": "assistant", "content": "sat"},
    ]})  # fmt: skip
    folded = encode(
        tokenizer, 64, {"prompt": "the dog\n\nthe cat", "completion": "sat"}
    )
    np.testing.assert_array_equal(with_system.tokens, folded.tokens)


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path, tokenizer) -> None:
    good = json.dumps({"prompt": "the cat", "completion": "sat"})
    path = write_lines(tmp_path / "bad.jsonl", [
        good,
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        "",
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        json.dumps({"text": "plain"}),
        good,
        json.dumps({"messages": [{"role": "assistant", "content": "first"}]}),
    ])  # fmt: skip
    with pytest.raises(DataError) as caught:
        read_jsonl(path, lambda record: encode(tokenizer, 64, record))
    message = str(caught.value)
    assert message.startswith("5 bad line(s)")
    for number, reason in [
        (2, "not JSON"),
        (3, "no assistant turn"),
        (5, "role 'robot'"),
        (6, "expected 'messages', or 'prompt' and 'completion'"),
        (8, "turns alternate"),
    ]:
        assert f"bad.jsonl:{number}: " in message and reason in message
    assert "bad.jsonl:1:" not in message and "bad.jsonl:7:" not in message


def test_preference_pairs_in_both_forms(tokenizer) -> None:
    standard = parse_pair(
        tokenizer,
        64,
        {"prompt": "the cat", "chosen": "sat", "rejected": "on", "margin": 2},
    )
    conversational = parse_pair(tokenizer, 64, {
        "prompt": [{"role": "user", "content": "the cat"}],
        "chosen": [{"role": "assistant", "content": "sat"}],
        "rejected": [{"role": "assistant", "content": "on"}],
        "label": 0.5,
    })  # fmt: skip
    np.testing.assert_array_equal(standard.chosen, conversational.chosen)
    np.testing.assert_array_equal(standard.rejected, conversational.rejected)
    assert (standard.margin, standard.label) == (2.0, 1.0)
    assert (conversational.margin, conversational.label) == (0.0, 0.5)
    # read at the answer's last token: its <end_of_turn>
    assert standard.chosen[-1] == tokenizer.end_of_turn_id


def test_long_pairs_keep_the_end_of_the_answer(tokenizer) -> None:
    pair = parse_pair(
        tokenizer,
        16,
        {
            "prompt": "the cat sat on the mat " * 5,
            "chosen": "the dog",
            "rejected": "a fox",
        },
    )
    assert len(pair.chosen) == 16 and pair.chosen[0] == tokenizer.bos_id
    assert pair.chosen[-1] == tokenizer.end_of_turn_id


def test_an_answer_cut_at_its_budget_is_read_without_its_end_of_turn(tokenizer):
    record = {"prompt": "the cat", "chosen": "sat", "rejected": "on the mat"}
    ended = parse_pair(tokenizer, 64, record)
    cut = parse_pair(tokenizer, 64, {**record, "rejected_truncated": True})

    np.testing.assert_array_equal(cut.chosen, ended.chosen)
    np.testing.assert_array_equal(cut.rejected, ended.rejected[:-1])
    assert ended.rejected[-1] == tokenizer.end_of_turn_id
    assert tokenizer.end_of_turn_id not in cut.rejected[-3:]


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"chosen": "a", "rejected": "b"}, "missing key 'prompt'"),
        ({"prompt": "p", "chosen": "a"}, "missing key 'rejected'"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "label": 2}, "label must"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "x"}, "margin"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "chosen_truncated": 1},
         "chosen_truncated and rejected_truncated must be true or false"),
        ({"prompt": "p", "chosen": [{"role": "user", "content": "a"}],
          "rejected": "b"}, "chosen must be assistant messages"),
    ],
)  # fmt: skip
def test_bad_pairs_say_why(tmp_path: Path, tokenizer, record, reason) -> None:
    path = write_lines(tmp_path / "pairs.jsonl", [json.dumps(record)])
    with pytest.raises(DataError, match=reason):
        read_jsonl(path, lambda r: parse_pair(tokenizer, 64, r))


def test_held_out_examples_are_split_by_prompt() -> None:
    pairs = colour_pairs(60) + colour_pairs(60, seed=1)  # two pairs per prompt
    train, held_out = split_by_prompt(pairs, lambda p: p["prompt"], 0.2, seed=3)
    train_prompts = {p["prompt"] for p in train}
    held_out_prompts = {p["prompt"] for p in held_out}
    assert not train_prompts & held_out_prompts
    assert len(held_out_prompts) == 12 and len(held_out) == 24
    again = split_by_prompt(pairs, lambda p: p["prompt"], 0.2, seed=3)
    assert again == (train, held_out)


def test_the_data_order_depends_only_on_the_position() -> None:
    whole = example_order(10, seed=4, start=0, size=25)
    parts = [example_order(10, 4, start, 5) for start in range(0, 25, 5)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert sorted(whole[:10]) == list(range(10))  # each epoch is a permutation
    assert not np.array_equal(whole[:10], whole[10:20])


def test_a_file_without_examples_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="no examples"):
        read_jsonl(path, dict)


@pytest.mark.parametrize(
    "ties, labels", [("drop", [1.0] * 3), ("soft", [0.5, 1.0] * 3)]
)
def test_ties_are_dropped_or_trained_on_as_half_labels(
    small_model: Path, tmp_path: Path, ties: str, labels: list[float]
) -> None:
    pairs = colour_pairs(6)
    for pair in pairs[::2]:
        pair["label"] = 0.5
    config = RewardModelConfig(
        model=str(small_model),
        train_data=str(write_jsonl(tmp_path / "train.jsonl", pairs)),
        eval_data=str(write_jsonl(tmp_path / "eval.jsonl", colour_pairs(2))),
        output_dir=str(tmp_path / "run"),
        steps=1,
        batch_size=2,
        learning_rate=1e-3,
        ties=ties,
    )
    assert [pair.label for pair in reward_model.prepare(config).train] == labels
