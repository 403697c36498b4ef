"""Hugging Face checkpoints: `config.json` plus `*.safetensors` (Gemma 1 and Gemma 3
text models).

HF keeps PyTorch's [out, in] weights, query/key/value as separate projections, and the
RMSNorm weight as the offset from 1 (as we do). Gemma 1 names its pre-feed-forward norm
`post_attention_layernorm`; Gemma 2/3 use that name for the post-attention norm.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from model_service.checkpoints import (
    CheckpointError,
    TensorSource,
    check_tree,
    to_device,
)
from model_service.config import GLOBAL, LOCAL, TransformerConfig

# model_type -> {our norm name: HF norm name}
_NORMS = {
    "gemma": {
        "pre_attention_norm": "input_layernorm",
        "pre_ffw_norm": "post_attention_layernorm",
    },
    "gemma3_text": {
        "pre_attention_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "pre_ffw_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}
_LAYER_TYPES = {"sliding_attention": LOCAL, "full_attention": GLOBAL}


def is_checkpoint(directory: str | PathLike[str]) -> bool:
    """Whether `directory` looks like a Hugging Face checkpoint."""
    directory = Path(directory)
    return (directory / "config.json").exists() and any(directory.glob("*.safetensors"))


def read_config(directory: str | PathLike[str]) -> TransformerConfig:
    """The config from `config.json`."""
    return config_from_hf(json.loads((Path(directory) / "config.json").read_text()))


def load(directory: str | PathLike[str]) -> tuple[TransformerConfig, dict[str, Any]]:
    """Reads a Hugging Face Gemma checkpoint directory.

    Args:
        directory: holds `config.json` and one or more `*.safetensors` files.

    Returns:
        (config, float32 parameters on the default device).

    Raises:
        CheckpointError: an unknown model_type, a missing field or tensor, a wrong
            shape, a tensor left over.
    """
    from safetensors.numpy import load_file

    directory = Path(directory)
    hf_config = json.loads((directory / "config.json").read_text())
    config = config_from_hf(hf_config)
    tensors: dict[str, np.ndarray] = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    params = params_from_hf(tensors, config, model_type=hf_config["model_type"])
    return config, to_device(params)


def config_from_hf(hf: Mapping[str, Any]) -> TransformerConfig:
    """Our config from a Hugging Face `config.json` dict (a pure function)."""
    model_type = hf.get("model_type")
    if model_type not in _NORMS:
        raise CheckpointError(
            f"config.json model_type is {model_type!r}; supported: {', '.join(_NORMS)}"
        )

    def field(name: str) -> Any:
        if name not in hf:
            raise CheckpointError(f"config.json lacks the field {name!r}")
        return hf[name]

    common = {
        "num_layers": field("num_hidden_layers"),
        "vocab_size": field("vocab_size"),
        "embed_dim": field("hidden_size"),
        "hidden_dim": field("intermediate_size"),
        "num_heads": field("num_attention_heads"),
        "num_kv_heads": field("num_key_value_heads"),
        "head_dim": field("head_dim"),
        "max_seq_len": field("max_position_embeddings"),
        "rms_norm_eps": field("rms_norm_eps"),
    }
    if model_type == "gemma":
        return TransformerConfig(**common, global_rope_base=field("rope_theta"))
    global_base, local_base, scale = _gemma3_rope(hf, field)
    return TransformerConfig(
        **common,
        query_pre_attn_scalar=field("query_pre_attn_scalar"),
        attention_pattern=_shortest_period(
            [_LAYER_TYPES[t] for t in field("layer_types")]
        ),
        sliding_window=field("sliding_window"),
        global_rope_base=global_base,
        local_rope_base=local_base,
        rope_scale_factor=scale,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
        attn_logits_soft_cap=hf.get("attn_logit_softcapping"),
        final_logit_soft_cap=hf.get("final_logit_softcapping"),
    )


def _gemma3_rope(
    hf: Mapping[str, Any], field: Callable[[str], Any]
) -> tuple[float, float, float]:
    """(global base, local base, global linear scale) from either config generation:
    transformers 5 `rope_parameters` per layer type, or 4.x `rope_theta`,
    `rope_local_base_freq` and `rope_scaling`."""
    if "rope_parameters" in hf:
        full = hf["rope_parameters"]["full_attention"]
        local = hf["rope_parameters"]["sliding_attention"]
        return full["rope_theta"], local["rope_theta"], full.get("factor", 1.0)
    scaling = hf.get("rope_scaling") or {}
    return (
        field("rope_theta"),
        field("rope_local_base_freq"),
        scaling.get("factor", 1.0),
    )


def _shortest_period(types: list[Any]) -> tuple[Any, ...]:
    for period in range(1, len(types) + 1):
        if all(t == types[i % period] for i, t in enumerate(types)):
            return tuple(types[:period])
    raise CheckpointError("config.json layer_types is empty")


def params_from_hf(
    tensors: Mapping[str, np.ndarray], config: TransformerConfig, *, model_type: str
) -> dict[str, Any]:
    """Rewrites HF tensors into our parameter tree (numpy leaves), strictly.

    Args:
        tensors: HF tensor name -> array.
        config: the config the result must fit.
        model_type: `gemma` or `gemma3_text` (they name the norms differently).

    Returns:
        Our parameter tree, checked against `config`.
    """
    src = TensorSource(tensors, config)
    n, k = config.num_heads, config.num_kv_heads
    params: dict[str, Any] = {
        "embedder": {"input_embedding": src.take("model.embed_tokens.weight")},
        "final_norm": {"scale": src.take("model.norm.weight")},
    }
    for i in range(config.num_layers):
        prefix = f"model.layers.{i}."
        q = src.heads(prefix + "self_attn.q_proj.weight", n)
        kv = [src.heads(prefix + f"self_attn.{x}_proj.weight", k) for x in "kv"]
        if n == k:
            attn = {"qkv_einsum": {"w": np.stack([q, *kv])}}
        else:
            attn = {"q_einsum": {"w": q}, "kv_einsum": {"w": np.stack(kv)}}
        out = src.output_heads(prefix + "self_attn.o_proj.weight")
        attn["attn_vec_einsum"] = {"w": out}
        if config.use_qk_norm:
            attn["_query_norm"] = {
                "scale": src.take(prefix + "self_attn.q_norm.weight")
            }
            attn["_key_norm"] = {"scale": src.take(prefix + "self_attn.k_norm.weight")}
        layer = {
            ours: {"scale": src.take(prefix + theirs)}
            for ours, theirs in _NORMS[model_type].items()
        }
        layer["attn"] = attn
        layer["mlp"] = {
            "gating_einsum": np.stack(
                [src.take(prefix + f"mlp.{x}_proj.weight") for x in ("gate", "up")]
            ),
            "linear": src.take(prefix + "mlp.down_proj.weight"),
        }
        params[f"layer_{i}"] = layer

    # Some exports store the tied output projection too; it must be the embedding.
    if "lm_head.weight" in tensors:
        if not np.array_equal(
            src.take("lm_head.weight"), src.take("model.embed_tokens.weight")
        ):
            raise CheckpointError("lm_head.weight differs from the tied embedding")
    src.check_all_taken()
    check_tree(params, config)
    return params
