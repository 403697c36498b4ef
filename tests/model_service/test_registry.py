"""The model registry: names, checkpoint paths, and the real Gemma 3 270M weights."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from model_service.checkpoints import flax_params
from model_service.config import get_config
from model_service.registry import load_model, load_tokenizer
from model_service.scoring import score
from model_service.transformer import abstract_params

MAX_LOAD_RSS_BYTES = 2.5e9


def test_it_loads_tiny_random_from_its_seed(tiny_random):
    assert tiny_random.name == "tiny-random"
    assert tiny_random.config == get_config("tiny")
    assert tiny_random.tokenizer.vocab_size == tiny_random.config.vocab_size
    again = load_model("tiny-random")
    for a, b in zip(
        jax.tree_util.tree_leaves(tiny_random.params),
        jax.tree_util.tree_leaves(again.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_it_loads_a_saved_checkpoint_by_path(tiny_random, tmp_path):
    path = tmp_path / "policy"
    flax_params.save(path, tiny_random.params, tiny_random.config)
    loaded = load_model(path)
    assert loaded.name == str(path)
    assert loaded.config == tiny_random.config
    # No tokenizer.model beside it: the Gemma 3 vocabulary size picks Gemma 3's.
    assert loaded.tokenizer.encode("Hello") == tiny_random.tokenizer.encode("Hello")
    assert load_tokenizer(path).vocab_size == 262_144
    embedding = loaded.params["embedder"]["input_embedding"]
    np.testing.assert_array_equal(
        embedding, tiny_random.params["embedder"]["input_embedding"]
    )


def test_it_rejects_unknown_names():
    with pytest.raises(ValueError, match="gemma-9000.*gemma3-270m, tiny-random"):
        load_model("gemma-9000")


@pytest.mark.real_weights
def test_the_real_270m_model_knows_the_capital_of_france(gemma3_270m):
    assert gemma3_270m.config == get_config("gemma3-270m")
    tokenizer = gemma3_270m.tokenizer
    ids = tokenizer.encode("The capital of France is the city of", add_bos=True)
    prediction = score(gemma3_270m, ids).top1[-1]
    assert tokenizer.decode([prediction]) == " Paris"


LOAD_AND_MEASURE = """
import json, re
from pathlib import Path
from model_service.registry import load_model
model = load_model("gemma3-270m")
# VmHWM: this process's peak RSS. (ru_maxrss would also count the parent's, since a
# forked child inherits the high-water mark across exec.)
peak_kb = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]
print(json.dumps({
    "max_rss_bytes": int(peak_kb) * 1024,
    "leaves": len(__import__("jax").tree_util.tree_leaves(model.params)),
}))
"""


@pytest.mark.real_weights
@pytest.mark.slow
def test_loading_the_real_270m_model_peaks_below_2_5_gb():
    run = subprocess.run(
        [sys.executable, "-c", LOAD_AND_MEASURE],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    expected = jax.tree_util.tree_leaves(abstract_params(get_config("gemma3-270m")))
    assert report["leaves"] == len(expected)
    assert report["max_rss_bytes"] < MAX_LOAD_RSS_BYTES, report
