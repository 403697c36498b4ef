"""`python -m model_service`: info, tokenize and score, as users and scripts call it."""

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from model_service.cli import main
from model_service.transformer import Transformer

# Long enough (> 256 tokens) that scoring crosses a chunk boundary of the cache.
TEXT = " ".join(
    f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(25)
)


def run_cli(capsys, *argv):
    status = main(list(argv))
    out = capsys.readouterr().out
    assert status == 0
    return json.loads(out)


def test_info_prints_the_report_s_parameter_counts_as_json():
    run = subprocess.run(
        [sys.executable, "-m", "model_service", "info", "gemma-2b", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(run.stdout)
    assert info["embedding_params"] == 524_550_144
    assert info["non_embedding_params"] == 1_981_884_416
    assert info["num_kv_heads"] == 1


def test_info_counts_gemma_7b(capsys):
    info = run_cli(capsys, "info", "gemma-7b", "--json")
    assert (info["embedding_params"], info["non_embedding_params"]) == (
        786_825_216,
        7_751_248_896,
    )


def test_tokenize_prints_the_tokenizer_s_ids(capsys, tiny_random):
    out = run_cli(capsys, "tokenize", "--model", "tiny-random", "--json", "Hi  there")
    assert out["token_ids"] == tiny_random.tokenizer.encode("Hi  there")
    assert "".join(out["pieces"]).replace("▁", " ") == "Hi  there"


def test_score_gives_top1_and_logprobs_of_each_next_token(
    capsys, tmp_path, tiny_random
):
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    out = run_cli(
        capsys,
        "score",
        "--model",
        "tiny-random",
        "--text-file",
        str(text_file),
        "--json",
    )
    ids = out["token_ids"]
    assert ids == tiny_random.tokenizer.encode(TEXT, add_bos=True)
    assert ids[0] == tiny_random.tokenizer.bos_id
    assert len(ids) > 256
    assert len(out["top1"]) == len(ids)
    assert len(out["logprobs"]) == len(ids) - 1
    assert out["perplexity"] == pytest.approx(math.exp(-np.mean(out["logprobs"])))

    # The same numbers from one plain forward pass over the whole text.
    forward = jax.jit(Transformer(config=tiny_random.config).apply)
    positions = np.arange(len(ids))[None]
    output = forward({"params": tiny_random.params}, np.array([ids]), positions)
    logits = output.logits[0]
    logprobs = np.asarray(jax.nn.log_softmax(logits))
    expected = logprobs[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(out["logprobs"], expected, atol=1e-4)
    # top1[i] is the argmax after ids[: i + 1] (up to float ties).
    picked = logprobs[np.arange(len(ids)), out["top1"]]
    np.testing.assert_allclose(picked, logprobs.max(axis=-1), atol=1e-5)


def test_it_exits_with_a_message_for_an_unknown_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenize", "--model", "gemma-9000", "hello"])
    assert exit_info.value.code == 2
    assert "unknown model 'gemma-9000'" in capsys.readouterr().err


def test_generate_is_greedy_by_default_and_equals_the_sampler(capsys, tiny_random):
    from model_service.sampler import Sampler
    from model_service.sampling import SamplingParams

    out = run_cli(
        capsys,
        "generate",
        "--model",
        "tiny-random",
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "6",
        "--json",
    )
    prompt = tiny_random.tokenizer.encode("Once upon a time", add_bos=True)
    sampler = Sampler(tiny_random.config, tiny_random.params)
    [expected] = sampler.generate(
        [prompt], SamplingParams(max_new_tokens=6), tiny_random.tokenizer
    )
    assert out["params"]["temperature"] == 0.0
    assert out["token_ids"] == list(expected.token_ids)
    assert len(out["logprobs"]) == len(out["token_ids"]) <= 6
    assert out["finish_reason"] in ("stop", "length")
