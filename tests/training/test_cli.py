"""`python -m training`: a bad config, bad data or a missing model is a clear error,
exit code 2, before any work."""

import json
from pathlib import Path

import pytest

from tests.training.simulated import write_jsonl
from tests.training.test_resume import conversations
from training.cli import main
from training.config import SFTConfig, load_config, to_dict


@pytest.fixture
def config(small_model: Path, tmp_path: Path) -> dict:
    return {
        "model": str(small_model),
        "train_data": str(write_jsonl(tmp_path / "train.jsonl", conversations(8))),
        "output_dir": str(tmp_path / "run"),
        "steps": 2,
        "batch_size": 2,
        "learning_rate": 1e-3,
    }


def run_cli(tmp_path: Path, fields: dict, job: str = "sft") -> int:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(fields))
    return main([job, "--config", str(path)])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": 0.1}, "unknown key(s): lr"),
        ({"steps": None}, "missing key(s): steps"),
        ({"steps": 0}, "steps: must be at least 1"),
        ({"steps": 2.5}, "steps: must be an integer, not 2.5"),
        ({"learning_rate": "fast"}, 'learning_rate: must be a number, not "fast"'),
        ({"batch_size": 3, "grad_accum_steps": 2}, "batch_size: must be a multiple"),
        ({"mesh": {"data": 2, "tensor": 2}}, "mesh: unknown axis tensor"),
        ({"mesh": {"data": 4}}, "mesh: the micro-batch (2 examples) must split"),
        ({"model": "gemma-9000"}, "model: 'gemma-9000' is neither a registered"),
        ({"train_data": "nowhere.jsonl"}, "train_data: no such file: nowhere.jsonl"),
        ({"dtype": "float8"}, "dtype: must be one of auto, float32, bfloat16"),
        ({"ties": "drop"}, "unknown key(s): ties"),  # a reward-model key
    ],
)
def test_a_bad_config_is_refused_before_any_work(
    config: dict, tmp_path: Path, capsys, change: dict, message: str
) -> None:
    fields = {**config, **change}
    fields = {k: v for k, v in fields.items() if v is not None}
    assert run_cli(tmp_path, fields) == 2
    assert message in capsys.readouterr().err
    assert not Path(config["output_dir"]).exists()


def test_bad_data_is_refused_with_every_bad_line(
    config: dict, tmp_path: Path, capsys
) -> None:
    data = Path(config["train_data"])
    data.write_text(data.read_text() + "{oops\n" + json.dumps({"text": "x"}) + "\n")
    assert run_cli(tmp_path, config) == 2
    err = capsys.readouterr().err
    assert "train.jsonl:9: not JSON" in err and "train.jsonl:10: expected" in err
    assert not Path(config["output_dir"]).exists()


def test_a_missing_config_file_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["reward-model", "--config", str(tmp_path / "none.json")]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_an_output_dir_of_another_run_is_refused(
    config: dict, tmp_path: Path, capsys
) -> None:
    output = Path(config["output_dir"])
    output.mkdir()
    earlier = load_config(SFTConfig, {**config, "steps": 7})
    (output / "config.json").write_text(json.dumps(to_dict(earlier)))
    assert run_cli(tmp_path, config) == 2
    assert "holds a run with other values of steps" in capsys.readouterr().err
