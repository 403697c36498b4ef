"""GGUF checkpoints (llama.cpp), dequantized to float32 with the `gguf` package, or
requantized to int8 per channel (`model_service.quantize`) tensor by tensor as read.

Only the Gemma 3 architecture is read. Its hyper-parameters that GGUF does not store are
the ones llama.cpp fixes for Gemma 3 (`src/llama-model.cpp`): local layers use RoPE base
10,000 and one layer in six is global; queries are scaled by head_dim ** -0.5 except on
the 27B model (d_model / heads).

Layout notes (checked by logit parity, see tests/data/parity/):
- GGUF lists shapes fastest-axis first; the arrays `gguf` gives back are [out, in],
  as in PyTorch.
- llama.cpp's converter stores Gemma RMSNorm weights as 1 + w; our scale is w.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any, BinaryIO

import gguf
import numpy as np

from model_service.checkpoints import (
    CheckpointError,
    TensorSource,
    check_tree,
    to_device,
)
from model_service.config import GEMMA3_PATTERN, TransformerConfig
from model_service.gguf_file import TensorInfo, read_header
from model_service.quantize import check_quantization, quantize_params, quantize_rows

ARCHITECTURE = "gemma3"
_LOCAL_ROPE_BASE = 10_000.0


def load(
    path: str | PathLike[str], *, quantize: str = "none"
) -> tuple[TransformerConfig, dict[str, Any]]:
    """Reads a Gemma 3 GGUF file.

    Args:
        path: the .gguf file.
        quantize: "none" for float32 parameters, "int8" for every matmul weight in
            int8 with per-channel scales. In int8 the float32 model is never held
            whole: the embedding is quantized a chunk of rows at a time as it is
            read, each layer once it is rewritten.

    Returns:
        (config, parameters on the default device).

    Raises:
        CheckpointError: another architecture, a missing field or tensor, a wrong shape.
    """
    metadata, tensors = read_header(path)
    config = config_from_metadata(metadata, vocab_size=_vocab_size(tensors))
    with open(path, "rb") as file:
        lazy = _LazyTensors(tensors, lambda info: _read(file, info, quantize))
        return config, params_from_tensors(lazy, config, quantize=quantize)


_ROWS_PER_CHUNK = 8192


def _read(file: BinaryIO, info: TensorInfo, quantize: str) -> Any:
    """A tensor, dequantized a chunk of rows at a time: the `gguf` package makes
    several temporary copies of what it dequantizes, which for the whole embedding
    would be gigabytes. In int8, a matrix of more rows than a chunk (the embedding)
    comes back quantized by rows (its contracted axis is its last, as every
    weight's), never whole in float32.

    The bytes are read from the file, not mapped: mapped pages would count in the
    process's resident memory until the whole file is loaded."""
    shape = tuple(reversed(info.shape))
    chunks = (
        _read_rows(file, info, start, min(start + _ROWS_PER_CHUNK, shape[0]))
        for start in range(0, shape[0], _ROWS_PER_CHUNK)
    )
    if quantize == "int8" and len(shape) == 2 and shape[0] > _ROWS_PER_CHUNK:
        return quantize_rows(chunks, shape)
    out = np.empty(shape, np.float32)
    start = 0
    for chunk in chunks:
        out[start : start + len(chunk)] = chunk
        start += len(chunk)
    return out


def _read_rows(file: BinaryIO, info: TensorInfo, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a tensor (along its slowest axis), as float32."""
    shape = tuple(reversed(info.shape))
    row_bytes = math.prod(gguf.quant_shape_to_byte_shape(shape, info.qtype)) // shape[0]
    file.seek(info.offset + start * row_bytes)
    data = np.frombuffer(file.read((stop - start) * row_bytes), np.uint8)
    rows = dataclasses.replace(info, shape=(*info.shape[:-1], stop - start), offset=0)
    values = gguf.quants.dequantize(rows.array(data), info.qtype)
    return values.astype(np.float32, copy=False)


def _vocab_size(tensors: Mapping[str, Any]) -> int:
    if "token_embd.weight" not in tensors:
        raise CheckpointError("missing tensor token_embd.weight")
    # GGUF lists the shape fastest axis first: [d_model, vocab].
    return int(tensors["token_embd.weight"].shape[-1])


def config_from_metadata(
    metadata: Mapping[str, Any], *, vocab_size: int
) -> TransformerConfig:
    """Builds the config from GGUF metadata (a pure function of the header).

    Args:
        metadata: GGUF key/value fields.
        vocab_size: rows of the token embedding.

    Returns:
        The model's config.
    """
    arch = metadata.get("general.architecture")
    if arch != ARCHITECTURE:
        raise CheckpointError(
            f"general.architecture is {arch!r}; only {ARCHITECTURE!r} is supported"
        )

    def field(name: str) -> Any:
        key = f"{arch}.{name}"
        if key not in metadata:
            raise CheckpointError(f"missing GGUF field {key}")
        return metadata[key]

    embed_dim = int(field("embedding_length"))
    num_layers = int(field("block_count"))
    num_heads = int(field("attention.head_count"))
    head_dim = int(field("attention.key_length"))
    is_27b = num_layers == 62
    return TransformerConfig(
        num_layers=num_layers,
        vocab_size=vocab_size,
        embed_dim=embed_dim,
        hidden_dim=int(field("feed_forward_length")),
        num_heads=num_heads,
        num_kv_heads=int(field("attention.head_count_kv")),
        head_dim=head_dim,
        max_seq_len=int(field("context_length")),
        query_pre_attn_scalar=embed_dim // num_heads if is_27b else head_dim,
        attention_pattern=GEMMA3_PATTERN,
        sliding_window=int(field("attention.sliding_window")),
        global_rope_base=float(field("rope.freq_base")),
        local_rope_base=_LOCAL_ROPE_BASE,
        rope_scale_factor=float(metadata.get(f"{arch}.rope.scaling.factor", 1.0)),
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
        # Stored as float32: 1e-6 reads back as 9.99999997e-07.
        rms_norm_eps=float(f"{field('attention.layer_norm_rms_epsilon'):.6g}"),
    )


def params_from_tensors(
    tensors: Mapping[str, Any], config: TransformerConfig, *, quantize: str = "none"
) -> dict[str, Any]:
    """Rewrites GGUF tensors ([out, in] arrays) into our parameter tree.

    Every tensor is read once and each layer is moved to the device (in int8, first
    quantized) as soon as it is complete, so memory holds one layer in float32 at
    most. All tensors must be used and all leaves filled.

    Args:
        tensors: GGUF tensor name -> float32 array (read lazily if it likes), or a
            `QuantizedWeight` already quantized as it was read.
        config: the model's config.
        quantize: "none" or "int8" (`model_service.quantize.quantize_params`).

    Returns:
        The parameter tree.
    """
    check_quantization(quantize)

    def place(tree: dict[str, Any]) -> dict[str, Any]:
        return to_device(quantize_params(tree) if quantize == "int8" else tree)

    src = TensorSource(tensors, config)

    def norm(name: str) -> np.ndarray:
        return src.take(name) - 1.0

    n, k = config.num_heads, config.num_kv_heads
    params: dict[str, Any] = {
        "embedder": place({"input_embedding": src.take("token_embd.weight")})
    }
    for i in range(config.num_layers):
        blk = f"blk.{i}."
        kv = [src.heads(blk + f"attn_{x}.weight", k) for x in "kv"]
        layer = {
            "pre_attention_norm": {"scale": norm(blk + "attn_norm.weight")},
            "attn": {
                "q_einsum": {"w": src.heads(blk + "attn_q.weight", n)},
                "kv_einsum": {"w": np.stack(kv)},
                "attn_vec_einsum": {"w": src.output_heads(blk + "attn_output.weight")},
                "_query_norm": {"scale": norm(blk + "attn_q_norm.weight")},
                "_key_norm": {"scale": norm(blk + "attn_k_norm.weight")},
            },
            "post_attention_norm": {"scale": norm(blk + "post_attention_norm.weight")},
            "pre_ffw_norm": {"scale": norm(blk + "ffn_norm.weight")},
            "mlp": {
                # [out, in] already, as our layout is.
                "gating_einsum": np.stack(
                    [src.take(blk + f"ffn_{x}.weight") for x in ("gate", "up")]
                ),
                "linear": src.take(blk + "ffn_down.weight"),
            },
            "post_ffw_norm": {"scale": norm(blk + "post_ffw_norm.weight")},
        }
        params[f"layer_{i}"] = place(layer)
    params["final_norm"] = place({"scale": norm("output_norm.weight")})

    src.check_all_taken()
    check_tree(params, config)
    return params


class _LazyTensors(Mapping[str, np.ndarray]):
    """GGUF tensors by name, dequantized only when read (each is read once)."""

    def __init__(
        self,
        tensors: Mapping[str, TensorInfo],
        read: Callable[[TensorInfo], np.ndarray],
    ) -> None:
        self._tensors = tensors
        self._read = read

    def __getitem__(self, name: str) -> np.ndarray:
        return self._read(self._tensors[name])

    def __contains__(self, name: object) -> bool:
        # Mapping's default would read (dequantize) the tensor to answer.
        return name in self._tensors

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)
