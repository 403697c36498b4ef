"""Checkpoint loaders on tiny checkpoints that the tests write in each layout.

Each layout is written here from a known parameter tree by the inverse rewrite, then
read back with the loader: the tree must come back exactly, and any damage (a missing
tensor, a wrong shape, an unknown architecture) must be an error naming it.
"""

import dataclasses
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import save_file

from model_service.checkpoints import (
    CheckpointError,
    flatten,
    flax_params,
    gguf,
    safetensors_hf,
)
from model_service.config import get_config
from model_service.quantize import QuantizedWeight, quantize_params
from model_service.transformer import abstract_params


def random_params(config, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda leaf: rng.standard_normal(leaf.shape).astype(np.float32),
        abstract_params(config),
    )


def assert_same_tree(actual, expected):
    actual, expected = flatten(actual), flatten(expected)
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(np.asarray(actual[name]), expected[name], name)


SMALL = dataclasses.replace(get_config("tiny"), vocab_size=97)


# --- Flax / Orbax ---------------------------------------------------------------------


def test_it_saves_and_loads_our_flax_checkpoints_with_their_config(tmp_path):
    params = random_params(SMALL)
    flax_params.save(tmp_path / "ckpt", params, SMALL)
    config, loaded = flax_params.load(tmp_path / "ckpt")
    assert config == SMALL
    assert_same_tree(loaded, params)


def test_it_loads_the_official_gemma1_flat_layout_and_infers_the_preset(tmp_path):
    config = get_config("tiny")
    params = random_params(config)
    flat = {}
    for name, value in flatten(flax_params.to_official(params)).items():
        module, leaf = name.rsplit("/", 1)
        if name.endswith("mlp/gating_einsum"):
            # Gemma 1 keeps [2, embed, hidden], under "w" like every other weight.
            module, leaf, value = name, "w", value.transpose(0, 2, 1)
        elif name.endswith("mlp/linear"):
            module, leaf = name, "w"
        flat.setdefault(f"transformer/{module}", {})[leaf] = value
    ocp.PyTreeCheckpointer().save(tmp_path / "official", flat)

    loaded_config, loaded = flax_params.load(tmp_path / "official")
    assert loaded_config == config
    assert_same_tree(loaded, params)


def test_it_names_what_is_missing_from_a_flax_checkpoint(tmp_path):
    params = random_params(SMALL)
    del params["layer_2"]["attn"]["_key_norm"]
    directory = tmp_path / "broken"
    official = flax_params.to_official(params)
    ocp.PyTreeCheckpointer().save(directory / "params", {"transformer": official})
    (directory / "gemma_config.json").write_text(json.dumps(SMALL.to_dict()))
    with pytest.raises(CheckpointError, match="layer_2/attn/_key_norm/scale"):
        flax_params.load(tmp_path / "broken")


# --- Hugging Face safetensors ---------------------------------------------------------


def hf_tensors(params, config, *, norms):
    """Our tree in Hugging Face names and [out, in] layout."""
    n, k, h, d = (
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.embed_dim,
    )
    tensors = {
        "model.embed_tokens.weight": params["embedder"]["input_embedding"],
        "model.norm.weight": params["final_norm"]["scale"],
    }
    for i in range(config.num_layers):
        layer, prefix = params[f"layer_{i}"], f"model.layers.{i}."
        attn = layer["attn"]
        if "qkv_einsum" in attn:
            q, key, value = attn["qkv_einsum"]["w"]
        else:
            q, (key, value) = attn["q_einsum"]["w"], attn["kv_einsum"]["w"]
        for proj, w, count in (("q", q, n), ("k", key, k), ("v", value, k)):
            tensors[prefix + f"self_attn.{proj}_proj.weight"] = w.reshape(count * h, d)
        tensors[prefix + "self_attn.o_proj.weight"] = attn["attn_vec_einsum"][
            "w"
        ].reshape(d, n * h)
        if "_query_norm" in attn:
            tensors[prefix + "self_attn.q_norm.weight"] = attn["_query_norm"]["scale"]
            tensors[prefix + "self_attn.k_norm.weight"] = attn["_key_norm"]["scale"]
        for ours, theirs in norms.items():
            tensors[prefix + theirs] = layer[ours]["scale"]
        gate, up = layer["mlp"]["gating_einsum"]
        tensors[prefix + "mlp.gate_proj.weight"] = gate
        tensors[prefix + "mlp.up_proj.weight"] = up
        tensors[prefix + "mlp.down_proj.weight"] = layer["mlp"]["linear"]
    return {name: np.ascontiguousarray(t) for name, t in tensors.items()}


GEMMA3_NORMS = {
    "pre_attention_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "pre_ffw_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def gemma3_hf_config(config):
    types = {"local_sliding": "sliding_attention", "global": "full_attention"}
    return {
        "model_type": "gemma3_text",
        "num_hidden_layers": config.num_layers,
        "vocab_size": config.vocab_size,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.rms_norm_eps,
        "query_pre_attn_scalar": config.head_dim,
        "sliding_window": config.sliding_window,
        "layer_types": [types[t.value] for t in config.attention_types],
        "rope_theta": config.global_rope_base,
        "rope_local_base_freq": config.local_rope_base,
        "rope_scaling": None,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
    }


def write_hf(directory, hf_config, tensors):
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(hf_config))
    save_file(tensors, directory / "model.safetensors")
    return directory


def test_it_loads_a_gemma3_safetensors_checkpoint(tmp_path):
    params = random_params(SMALL)
    directory = write_hf(
        tmp_path / "hf",
        gemma3_hf_config(SMALL),
        hf_tensors(params, SMALL, norms=GEMMA3_NORMS),
    )
    assert safetensors_hf.is_checkpoint(directory)
    config, loaded = safetensors_hf.load(directory)
    assert config == dataclasses.replace(SMALL, query_pre_attn_scalar=SMALL.head_dim)
    assert_same_tree(loaded, params)


def test_it_loads_a_gemma1_multi_head_safetensors_checkpoint(tmp_path):
    config = dataclasses.replace(
        get_config("gemma-7b"),
        num_layers=2,
        vocab_size=97,
        embed_dim=16,
        hidden_dim=24,
        num_heads=2,
        num_kv_heads=2,
        head_dim=8,
    )
    params = random_params(config)
    assert "qkv_einsum" in params["layer_0"]["attn"]
    hf_config = {
        "model_type": "gemma",
        "num_hidden_layers": 2,
        "vocab_size": 97,
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10_000.0,
    }
    norms = {
        "pre_attention_norm": "input_layernorm",
        "pre_ffw_norm": "post_attention_layernorm",
    }
    tensors = hf_tensors(params, config, norms=norms)
    directory = write_hf(tmp_path / "hf", hf_config, tensors)
    loaded_config, loaded = safetensors_hf.load(directory)
    assert loaded_config == config
    assert_same_tree(loaded, params)


def test_it_names_a_missing_or_misshapen_hf_tensor(tmp_path):
    params = random_params(SMALL)
    tensors = hf_tensors(params, SMALL, norms=GEMMA3_NORMS)
    hf_config = gemma3_hf_config(SMALL)
    missing = dict(tensors)
    del missing["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj"):
        safetensors_hf.load(write_hf(tmp_path / "missing", hf_config, missing))

    misshapen = dict(tensors)
    misshapen["model.norm.weight"] = np.zeros(SMALL.embed_dim + 1, np.float32)
    with pytest.raises(CheckpointError, match="final_norm/scale: expected shape"):
        safetensors_hf.load(write_hf(tmp_path / "misshapen", hf_config, misshapen))

    extra = dict(tensors, **{"model.layers.9.mlp.up_proj.weight": np.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*layers\.9"):
        safetensors_hf.load(write_hf(tmp_path / "extra", hf_config, extra))


def test_it_rejects_an_unknown_hf_architecture():
    with pytest.raises(CheckpointError, match="'llama'"):
        safetensors_hf.config_from_hf({"model_type": "llama"})
    with pytest.raises(CheckpointError, match="'sliding_window'"):
        hf_config = gemma3_hf_config(SMALL)
        del hf_config["sliding_window"]
        safetensors_hf.config_from_hf(hf_config)


# --- GGUF -----------------------------------------------------------------------------


def gguf_tensors(params, config):
    """Our tree as llama.cpp's Gemma 3 GGUF holds it: [out, in], norms as 1 + w."""
    hf = hf_tensors(params, config, norms=GEMMA3_NORMS)
    renames = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    tensors = {
        "token_embd.weight": hf.pop("model.embed_tokens.weight"),
        "output_norm.weight": hf.pop("model.norm.weight") + 1,
    }
    for name, value in hf.items():
        _, _, i, rest = name.split(".", 3)
        module = renames[rest.removesuffix(".weight")]
        tensors[f"blk.{i}.{module}.weight"] = value + 1 if "norm" in module else value
    return tensors


GEMMA3_METADATA = {
    "general.architecture": "gemma3",
    "gemma3.embedding_length": 640,
    "gemma3.block_count": 18,
    "gemma3.feed_forward_length": 2048,
    "gemma3.attention.head_count": 4,
    "gemma3.attention.head_count_kv": 1,
    "gemma3.attention.key_length": 256,
    "gemma3.context_length": 32768,
    "gemma3.attention.sliding_window": 512,
    "gemma3.rope.freq_base": 1_000_000.0,
    "gemma3.attention.layer_norm_rms_epsilon": np.float32(1e-6),
}


def test_it_reads_the_gemma3_270m_config_from_gguf_metadata():
    config = gguf.config_from_metadata(GEMMA3_METADATA, vocab_size=262_144)
    assert config == get_config("gemma3-270m")


def test_it_rejects_other_gguf_architectures_and_missing_fields():
    with pytest.raises(CheckpointError, match="'llama'"):
        gguf.config_from_metadata({"general.architecture": "llama"}, vocab_size=10)
    metadata = dict(GEMMA3_METADATA)
    del metadata["gemma3.attention.sliding_window"]
    with pytest.raises(CheckpointError, match="gemma3.attention.sliding_window"):
        gguf.config_from_metadata(metadata, vocab_size=10)


def test_it_rewrites_gguf_tensors_into_the_parameter_tree():
    params = random_params(SMALL)
    loaded = gguf.params_from_tensors(gguf_tensors(params, SMALL), SMALL)
    flat_loaded, flat_params = flatten(loaded), flatten(params)
    for name, value in flat_params.items():
        # Norms come back through 1 + w - 1 in float32.
        np.testing.assert_allclose(flat_loaded[name], value, atol=1e-6, err_msg=name)


def test_it_names_a_missing_gguf_tensor():
    tensors = gguf_tensors(random_params(SMALL), SMALL)
    del tensors["blk.3.ffn_down.weight"]
    with pytest.raises(CheckpointError, match=r"blk\.3\.ffn_down\.weight"):
        gguf.params_from_tensors(tensors, SMALL)


def write_gguf(path, params, config):
    """A Gemma 3 GGUF file as llama.cpp writes one, the embedding quantized to Q8_0."""
    import gguf as gguf_package

    writer = gguf_package.GGUFWriter(path, "gemma3")
    writer.add_uint32("gemma3.embedding_length", config.embed_dim)
    writer.add_uint32("gemma3.block_count", config.num_layers)
    writer.add_uint32("gemma3.feed_forward_length", config.hidden_dim)
    writer.add_uint32("gemma3.attention.head_count", config.num_heads)
    writer.add_uint32("gemma3.attention.head_count_kv", config.num_kv_heads)
    writer.add_uint32("gemma3.attention.key_length", config.head_dim)
    writer.add_uint32("gemma3.context_length", config.max_seq_len)
    writer.add_uint32("gemma3.attention.sliding_window", config.sliding_window)
    writer.add_float32("gemma3.rope.freq_base", config.global_rope_base)
    writer.add_float32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
    # A vocabulary the loader must skip over.
    writer.add_array("tokenizer.ggml.tokens", ["<pad>", "▁a", "ü"] * 50)
    writer.add_array("tokenizer.ggml.scores", [0.5] * 150)
    q8 = gguf_package.GGMLQuantizationType.Q8_0
    for name, value in gguf_tensors(params, config).items():
        if name == "token_embd.weight":
            writer.add_tensor(
                name, gguf_package.quants.quantize(value, q8), raw_dtype=q8
            )
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_it_loads_a_gguf_file_in_int8_as_its_float32_load_quantized(tmp_path):
    """The embedding is quantized as it is read, 8192 rows at a time (two chunks
    here), each layer once rewritten: the same bytes as quantizing the float32 load."""
    config = dataclasses.replace(SMALL, vocab_size=9000)
    write_gguf(tmp_path / "tiny.gguf", random_params(config), config)

    _, floats = gguf.load(tmp_path / "tiny.gguf")
    _, int8 = gguf.load(tmp_path / "tiny.gguf", quantize="int8")

    assert isinstance(int8["embedder"]["input_embedding"], QuantizedWeight)
    for a, b in zip(
        jax.tree_util.tree_leaves(int8),
        jax.tree_util.tree_leaves(quantize_params(floats)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_it_loads_a_gguf_file_dequantizing_its_tensors(tmp_path):
    import gguf as gguf_package

    params = random_params(SMALL)
    write_gguf(tmp_path / "tiny.gguf", params, SMALL)
    config, loaded = gguf.load(tmp_path / "tiny.gguf")
    # GGUF keeps no layer pattern: Gemma 3's 5 local to 1 global is implied.
    assert config == dataclasses.replace(
        SMALL,
        attention_pattern=get_config("gemma3-270m").attention_pattern,
        query_pre_attn_scalar=SMALL.head_dim,
    )
    q8 = gguf_package.GGMLQuantizationType.Q8_0
    embedding = params["embedder"]["input_embedding"]
    expected = gguf_package.quants.dequantize(
        gguf_package.quants.quantize(embedding, q8), q8
    )
    np.testing.assert_array_equal(loaded["embedder"]["input_embedding"], expected)
    assert not np.array_equal(expected, embedding)  # it really was quantized
    np.testing.assert_allclose(
        loaded["layer_3"]["mlp"]["linear"], params["layer_3"]["mlp"]["linear"]
    )
    np.testing.assert_allclose(
        loaded["final_norm"]["scale"], params["final_norm"]["scale"], atol=1e-6
    )
