"""The model registry: names, checkpoint paths, and the real Gemma 3 270M weights."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from model_service.checkpoints import flax_params
from model_service.config import get_config
from model_service.quantize import QuantizedWeight, quantize_params
from model_service.registry import load_model, load_tokenizer
from model_service.scoring import score
from model_service.transformer import abstract_params


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


def test_it_loads_int8_weights_on_request(tiny_random, tmp_path):
    path = tmp_path / "policy"
    flax_params.save(path, tiny_random.params, tiny_random.config)
    expected = quantize_params(tiny_random.params)

    for loaded in (
        load_model("tiny-random", quantize="int8"),
        load_model(path, quantize="int8"),
    ):
        leaves = jax.tree_util.tree_leaves(
            loaded.params, is_leaf=lambda leaf: isinstance(leaf, QuantizedWeight)
        )
        quantized = [leaf for leaf in leaves if isinstance(leaf, QuantizedWeight)]
        assert len(quantized) == 1 + 5 * tiny_random.config.num_layers
        for a, b in zip(
            jax.tree_util.tree_leaves(loaded.params),
            jax.tree_util.tree_leaves(expected),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)


def test_it_rejects_unknown_quantizations():
    with pytest.raises(ValueError, match="none.*int8.*not .int4."):
        load_model("tiny-random", quantize="int4")


@pytest.mark.real_weights
def test_the_real_270m_model_knows_the_capital_of_france(gemma3_270m):
    assert gemma3_270m.config == get_config("gemma3-270m")
    tokenizer = gemma3_270m.tokenizer
    ids = tokenizer.encode("The capital of France is the city of", add_bos=True)
    prediction = score(gemma3_270m, ids).top1[-1]
    assert tokenizer.decode([prediction]) == " Paris"


LOAD_AND_MEASURE = """
import json, re, sys
from pathlib import Path
import jax
from model_service.quantize import QuantizedWeight
from model_service.registry import load_model
model = load_model("gemma3-270m", quantize=sys.argv[1])
leaves = jax.tree_util.tree_leaves(
    model.params, is_leaf=lambda leaf: isinstance(leaf, QuantizedWeight)
)
# VmHWM: this process's peak RSS. (ru_maxrss would also count the parent's, since a
# forked child inherits the high-water mark across exec.)
peak_kb = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]
print(json.dumps({
    "max_rss_bytes": int(peak_kb) * 1024,
    "leaves": len(leaves),
    "int8": sum(isinstance(leaf, QuantizedWeight) for leaf in leaves),
}))
"""


# Float32 (training, parity) and int8 (the generation worker on a CPU), which holds
# one layer in float32 at most and the embedding a chunk of rows at a time (before:
# 2.6 GB, the whole float32 model and then the int8 one beside it).
@pytest.mark.real_weights
@pytest.mark.slow
@pytest.mark.parametrize(
    "quantize, max_rss_bytes, int8", [("none", 2.5e9, 0), ("int8", 0.8e9, 91)]
)
def test_loading_the_real_270m_model_peaks_below_its_bound(
    quantize, max_rss_bytes, int8
):
    run = subprocess.run(
        [sys.executable, "-c", LOAD_AND_MEASURE, quantize],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    expected = jax.tree_util.tree_leaves(abstract_params(get_config("gemma3-270m")))
    assert report["leaves"] == len(expected)
    assert report["int8"] == int8  # the embedding and 5 weights in each of 18 layers
    assert report["max_rss_bytes"] < max_rss_bytes, report
