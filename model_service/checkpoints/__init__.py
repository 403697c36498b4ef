"""Checkpoint loaders: GGUF, the official Gemma Flax/Orbax layout, Hugging Face
safetensors. Each reads files in one function and rewrites trees in pure ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from model_service.config import TransformerConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded whole: the message names what is wrong."""


def check_tree(params: Mapping[str, Any], config: TransformerConfig) -> None:
    """Raises `CheckpointError` unless `params` has the model's leaves and shapes.

    Args:
        params: a parameter tree (arrays or anything with `.shape`).
        config: the config the tree must fit.
    """
    from model_service.transformer import abstract_params  # avoid an import cycle

    expected = flatten(abstract_params(config))
    found = flatten(params)
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(f"missing parameter(s): {', '.join(missing)}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"unexpected parameter(s): {', '.join(unexpected)}")
    for name, leaf in expected.items():
        if tuple(found[name].shape) != tuple(leaf.shape):
            raise CheckpointError(
                f"{name}: expected shape {tuple(leaf.shape)}, "
                f"found {tuple(found[name].shape)}"
            )


class TensorSource:
    """A checkpoint's tensors, taken by name while rewriting them into our tree.

    Strict both ways: taking a missing name raises, and `check_all_taken` refuses
    tensors that were never taken. Weights are [out, in], as PyTorch and GGUF keep
    them.
    """

    def __init__(
        self, tensors: Mapping[str, np.ndarray], config: TransformerConfig
    ) -> None:
        self._tensors = tensors
        self._config = config
        self._taken: set[str] = set()

    def take(self, name: str) -> Any:
        """The tensor as a float32 array, or as the reader quantized it (a
        `model_service.quantize.QuantizedWeight`: the GGUF embedding in int8)."""
        if name not in self._tensors:
            raise CheckpointError(f"missing tensor {name}")
        self._taken.add(name)
        tensor = self._tensors[name]
        return tensor if _is_quantized(tensor) else np.asarray(tensor, np.float32)

    def heads(self, name: str, count: int) -> np.ndarray:
        """A query, key or value projection: [count * H, D] -> [count, H, D]."""
        cfg = self._config
        return self.take(name).reshape(count, cfg.head_dim, cfg.embed_dim)

    def output_heads(self, name: str) -> np.ndarray:
        """The attention output projection: [D, N * H] -> [D, N, H]."""
        cfg = self._config
        return self.take(name).reshape(cfg.embed_dim, cfg.num_heads, cfg.head_dim)

    def check_all_taken(self) -> None:
        """Raises `CheckpointError` naming the tensors never taken."""
        unused = sorted(set(self._tensors) - self._taken)
        if unused:
            raise CheckpointError(f"unexpected tensor(s): {', '.join(unused)}")


def to_device(params: dict[str, Any]) -> dict[str, Any]:
    """Moves a tree of numpy leaves to float32 jax arrays, freeing each as it goes.

    Leaves are converted one at a time and dropped from the input, so host memory holds
    at most one leaf twice. Quantized weights (on the device already) stay as they are.
    """
    # Imported here: the tokenizer reads GGUF files through this package's error
    # type, and the web app imports the tokenizer without needing jax.
    import jax

    out = {}
    for key in list(params):
        value = params.pop(key)
        if isinstance(value, dict):
            out[key] = to_device(value)
        elif _is_quantized(value):
            out[key] = value
        else:
            out[key] = jax.device_put(np.asarray(value, np.float32))
            del value
    return out


def _is_quantized(tensor: Any) -> bool:
    # Imported here: `model_service.quantize` needs jax (see `to_device`).
    from model_service.quantize import QuantizedWeight

    return isinstance(tensor, QuantizedWeight)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a/b/c": leaf}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf} as a nested dict (the inverse of `flatten`)."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *path, leaf = name.split("/")
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree
