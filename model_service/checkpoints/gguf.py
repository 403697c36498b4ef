"""GGUF checkpoints (llama.cpp), dequantized to float32 with the `gguf` package.

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
import mmap
import struct
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

import gguf
import numpy as np

from model_service.checkpoints import CheckpointError, check_tree, to_device
from model_service.config import GEMMA3_PATTERN, TransformerConfig

ARCHITECTURE = "gemma3"
_LOCAL_ROPE_BASE = 10_000.0


def load(path: str | PathLike[str]) -> tuple[TransformerConfig, dict[str, Any]]:
    """Reads a Gemma 3 GGUF file.

    Args:
        path: the .gguf file.

    Returns:
        (config, float32 parameters on the default device).

    Raises:
        CheckpointError: another architecture, a missing field or tensor, a wrong shape.
    """
    metadata, tensors = read_header(path)
    config = config_from_metadata(metadata, vocab_size=_vocab_size(tensors))
    data = np.memmap(path, dtype=np.uint8, mode="r")
    lazy = _LazyTensors(tensors, lambda info: _dequantize(info, data))
    return config, params_from_tensors(lazy, config)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lies in a GGUF file.

    Attributes:
        shape: GGUF order, fastest axis first (`[d_model, vocab]` for the embedding).
        qtype: the ggml type (F32, Q8_0, Q4_K, ...).
        offset: of its first byte in the file.
    """

    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    offset: int

    def array(self, data: np.ndarray) -> np.ndarray:
        """The tensor's bytes in `data` (the whole file) laid out as `gguf` expects:
        float arrays in numpy order, or rows of quantized blocks as uint8."""
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        shape = tuple(reversed(self.shape))
        nbytes = math.prod(shape) * type_size // block_size
        raw = data[self.offset : self.offset + nbytes]
        if self.qtype in _FLOAT_TYPES:
            return raw.view(_FLOAT_TYPES[self.qtype]).reshape(shape)
        return raw.reshape(gguf.quant_shape_to_byte_shape(shape, self.qtype))


_FLOAT_TYPES = {
    gguf.GGMLQuantizationType.F32: np.float32,
    gguf.GGMLQuantizationType.F16: np.float16,
}


def read_header(
    path: str | PathLike[str],
) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    """Reads a GGUF header sequentially: metadata and where each tensor lies.

    `gguf.GGUFReader` maps each of the 262,144 vocabulary strings separately (half a
    minute and 0.6 GB); here array values (the vocabulary) are skipped, since the
    tokenizer reads them on its own.

    Returns:
        (metadata with its scalar and string values, tensor name -> TensorInfo).
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return _HeaderReader(m, str(path)).read()


class _HeaderReader:
    """Sequential reader of a GGUF header (format: ggml-org/ggml docs/gguf.md)."""

    _SCALARS = {
        gguf.GGUFValueType.UINT8: "<B",
        gguf.GGUFValueType.INT8: "<b",
        gguf.GGUFValueType.UINT16: "<H",
        gguf.GGUFValueType.INT16: "<h",
        gguf.GGUFValueType.UINT32: "<I",
        gguf.GGUFValueType.INT32: "<i",
        gguf.GGUFValueType.FLOAT32: "<f",
        gguf.GGUFValueType.BOOL: "<?",
        gguf.GGUFValueType.UINT64: "<Q",
        gguf.GGUFValueType.INT64: "<q",
        gguf.GGUFValueType.FLOAT64: "<d",
    }

    def __init__(self, data: mmap.mmap, name: str) -> None:
        self.data = data
        self.name = name
        self.offset = 0

    def read(self) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
        if self._unpack("<I") != gguf.GGUF_MAGIC:
            raise CheckpointError(f"{self.name} is not a GGUF file")
        version = self._unpack("<I")
        if version < 2:
            raise CheckpointError(f"{self.name}: GGUF version {version} is too old")
        tensor_count, field_count = self._unpack("<Q"), self._unpack("<Q")
        metadata = {}
        for _ in range(field_count):
            key = self._string()
            value_type = gguf.GGUFValueType(self._unpack("<I"))
            if value_type == gguf.GGUFValueType.ARRAY:
                self._skip_array()
            else:
                metadata[key] = self._value(value_type)
        infos = []
        for _ in range(tensor_count):
            name = self._string()
            shape = tuple(self._unpack("<Q") for _ in range(self._unpack("<I")))
            qtype = gguf.GGMLQuantizationType(self._unpack("<I"))
            infos.append((name, shape, qtype, self._unpack("<Q")))
        alignment = int(metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
        start = -(-self.offset // alignment) * alignment  # round up
        return metadata, {
            name: TensorInfo(shape, qtype, start + offset)
            for name, shape, qtype, offset in infos
        }

    def _value(self, value_type: gguf.GGUFValueType) -> Any:
        if value_type == gguf.GGUFValueType.STRING:
            return self._string()
        return self._unpack(self._SCALARS[value_type])

    def _skip_array(self) -> None:
        item_type = gguf.GGUFValueType(self._unpack("<I"))
        count = self._unpack("<Q")
        if item_type == gguf.GGUFValueType.STRING:
            unpack_length = struct.Struct("<Q").unpack_from
            for _ in range(count):
                self.offset += 8 + unpack_length(self.data, self.offset)[0]
        elif item_type == gguf.GGUFValueType.ARRAY:
            for _ in range(count):
                self._skip_array()
        else:
            self.offset += count * struct.calcsize(self._SCALARS[item_type])

    def _string(self) -> str:
        length = self._unpack("<Q")
        text = self.data[self.offset : self.offset + length].decode("utf-8")
        self.offset += length
        return text

    def _unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value


_ROWS_PER_CHUNK = 8192


def _dequantize(info: TensorInfo, data: np.ndarray) -> np.ndarray:
    """Dequantizes in chunks of rows: the `gguf` package makes several temporary copies
    of what it dequantizes, which for the whole embedding would be gigabytes."""
    raw = info.array(data)
    if raw.ndim < 2 or raw.shape[0] <= _ROWS_PER_CHUNK:
        return gguf.quants.dequantize(raw, info.qtype)
    out = np.empty(tuple(reversed(info.shape)), np.float32)
    for start in range(0, raw.shape[0], _ROWS_PER_CHUNK):
        chunk = raw[start : start + _ROWS_PER_CHUNK]
        out[start : start + len(chunk)] = gguf.quants.dequantize(chunk, info.qtype)
    return out


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
    tensors: Mapping[str, np.ndarray], config: TransformerConfig
) -> dict[str, Any]:
    """Rewrites GGUF tensors ([out, in] arrays) into our parameter tree.

    Every tensor is read once, converted to a float32 jax array and released, so memory
    holds one tensor twice at most. All tensors must be used and all leaves filled.

    Args:
        tensors: GGUF tensor name -> float32 array (read lazily if it likes).
        config: the model's config.

    Returns:
        The parameter tree.
    """
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(f"missing tensor {name}")
        used.add(name)
        return np.asarray(tensors[name], np.float32)

    def norm(name: str) -> np.ndarray:
        return take(name) - 1.0

    n, k, h, d = (
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.embed_dim,
    )

    def heads(name: str, count: int) -> np.ndarray:
        # [count * H, D] -> [count, D, H]
        return take(name).reshape(count, h, d).transpose(0, 2, 1)

    params: dict[str, Any] = {
        "embedder": to_device({"input_embedding": take("token_embd.weight")})
    }
    for i in range(config.num_layers):
        blk = f"blk.{i}."
        kv = [heads(blk + f"attn_{x}.weight", k) for x in "kv"]
        layer = {
            "pre_attention_norm": {"scale": norm(blk + "attn_norm.weight")},
            "attn": {
                "q_einsum": {"w": heads(blk + "attn_q.weight", n)},
                "kv_einsum": {"w": np.stack(kv)},
                # [D, N * H] -> [N, H, D]
                "attn_vec_einsum": {
                    "w": take(blk + "attn_output.weight").T.reshape(n, h, d)
                },
                "_query_norm": {"scale": norm(blk + "attn_q_norm.weight")},
                "_key_norm": {"scale": norm(blk + "attn_k_norm.weight")},
            },
            "post_attention_norm": {"scale": norm(blk + "post_attention_norm.weight")},
            "pre_ffw_norm": {"scale": norm(blk + "ffn_norm.weight")},
            "mlp": {
                # gate and up are [F, D] already; down is [D, F].
                "gating_einsum": np.stack(
                    [take(blk + f"ffn_{x}.weight") for x in ("gate", "up")]
                ),
                "linear": take(blk + "ffn_down.weight").T,
            },
            "post_ffw_norm": {"scale": norm(blk + "post_ffw_norm.weight")},
        }
        params[f"layer_{i}"] = to_device(layer)
    params["final_norm"] = to_device({"scale": norm("output_norm.weight")})

    unused = sorted(set(tensors) - used)
    if unused:
        raise CheckpointError(f"unexpected tensor(s): {', '.join(unused)}")
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
