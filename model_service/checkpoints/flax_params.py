"""The official Gemma Flax/Orbax parameter layout, and our own checkpoints in it.

Official checkpoints are Orbax PyTrees under a `transformer` key, either nested
(Gemma 2/3, `gemma.gm`) or with flat `"transformer/layer_0/attn/q_einsum"` keys
(Gemma 1). The feed-forward weights are `mlp/gating_einsum` and `mlp/linear`, either
bare or under `w`; Gemma 1 stores `gating_einsum` as [2, embed, hidden] where we (and
Gemma 2/3) keep [2, hidden, embed]. Official checkpoints carry no config: it is the
preset whose tree has the same shapes. Our weights keep their contracted axes last
(see `model_service.modules`), so four weights are transposed on the way in and back on
the way out (`OFFICIAL_TO_OURS`).

`save` writes `params/` (Orbax, official nested layout) and `gemma_config.json`
beside it, so a trained model loads back by path with its exact config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from model_service.checkpoints import (
    CheckpointError,
    check_tree,
    flatten,
    nest,
    to_device,
)
from model_service.config import PRESETS, TransformerConfig

CONFIG_FILE = "gemma_config.json"
PARAMS_DIR = "params"
ROOT = "transformer"

# Axis permutations from the official layout to ours, by the weight's name in a layer.
OFFICIAL_TO_OURS = {
    "attn/q_einsum/w": (0, 2, 1),  # [N, D, H] -> [N, H, D]
    "attn/kv_einsum/w": (0, 1, 3, 2),  # [2, K, D, H] -> [2, K, H, D]
    "attn/qkv_einsum/w": (0, 1, 3, 2),  # [3, N, D, H] -> [3, N, H, D]
    "attn/attn_vec_einsum/w": (2, 0, 1),  # [N, H, D] -> [D, N, H]
    "mlp/linear": (1, 0),  # [F, D] -> [D, F]
}


def _permutation(name: str) -> tuple[int, ...] | None:
    """The official-to-ours permutation of a flat parameter name, if it has one."""
    layer_path = name.split("/", 1)[-1]
    return OFFICIAL_TO_OURS.get(layer_path)


def to_official(params: Mapping[str, Any]) -> dict[str, Any]:
    """Our parameter tree in the official layout (numpy leaves)."""
    flat = {}
    for name, value in flatten(params).items():
        value = np.asarray(value)
        permutation = _permutation(name)
        flat[name] = (
            value if permutation is None else value.transpose(np.argsort(permutation))
        )
    return nest(flat)


def save(
    directory: str | PathLike[str], params: dict[str, Any], config: TransformerConfig
) -> None:
    """Writes a checkpoint that `load` (and the registry, by path) reads back.

    Args:
        directory: a new directory.
        params: the model's parameters.
        config: the model's config.
    """
    import orbax.checkpoint as ocp

    check_tree(params, config)
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=False)
    ocp.PyTreeCheckpointer().save(directory / PARAMS_DIR, {ROOT: to_official(params)})
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))


def read_config(directory: str | PathLike[str]) -> TransformerConfig:
    """The checkpoint's config: its `gemma_config.json`, else the matching preset."""
    directory = Path(directory)
    config_file = directory / CONFIG_FILE
    if config_file.exists():
        return TransformerConfig.from_dict(json.loads(config_file.read_text()))
    return infer_config(_restore(directory))


def load(directory: str | PathLike[str]) -> tuple[TransformerConfig, dict[str, Any]]:
    """Reads a checkpoint in the official layout (or one written by `save`).

    Args:
        directory: the Orbax checkpoint, or a directory holding `params/` and
            `gemma_config.json`.

    Returns:
        (config, float32 parameters on the default device).

    Raises:
        CheckpointError: missing or unexpected parameters, wrong shapes, no config.
    """
    directory = Path(directory)
    raw = _restore(directory)
    config_file = directory / CONFIG_FILE
    if config_file.exists():
        config = TransformerConfig.from_dict(json.loads(config_file.read_text()))
    else:
        config = infer_config(raw)
    params = params_from_official(raw, config)
    return config, to_device(params)


def _restore(directory: Path) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    path = directory / PARAMS_DIR if (directory / PARAMS_DIR).is_dir() else directory
    if not (path / "_METADATA").exists() and not (path / "checkpoint").exists():
        raise CheckpointError(f"{directory}: no Orbax checkpoint found")
    return ocp.PyTreeCheckpointer().restore(path.absolute())


def params_from_official(
    raw: Mapping[str, Any], config: TransformerConfig
) -> dict[str, Any]:
    """Rewrites an official-layout tree (nested or flat keys) into ours.

    Args:
        raw: the restored Orbax tree.
        config: the config the result must fit.

    Returns:
        Our parameter tree, numpy leaves; checked leaf by leaf against `config`.
    """
    flat = {}
    for name, value in flatten(raw).items():
        if not name.startswith(ROOT + "/"):
            raise CheckpointError(f"unexpected parameter {name} (outside {ROOT}/)")
        name = name.removeprefix(ROOT + "/")
        # The feed-forward weights may sit under `w` or be bare (share_scope).
        if "/mlp/" in name and name.endswith("/w"):
            name = name.removesuffix("/w")
        flat[name] = np.asarray(value)
    for name, value in flat.items():
        gating = (2, config.embed_dim, config.hidden_dim)
        if name.endswith("/mlp/gating_einsum") and value.shape == gating:
            flat[name] = value.transpose(0, 2, 1)
        elif (permutation := _permutation(name)) and value.ndim == len(permutation):
            # (a weight of the wrong rank is left for check_tree to name)
            flat[name] = value.transpose(permutation)
    params = nest(flat)
    check_tree(params, config)
    return params


def infer_config(raw: Mapping[str, Any]) -> TransformerConfig:
    """The preset whose parameter shapes match an official checkpoint's."""
    # Zero-stride stand-ins: shapes without memory.
    shapes = {
        name: np.broadcast_to(np.float32(0), np.shape(value))
        for name, value in flatten(raw).items()
    }
    for preset in PRESETS.values():
        config = preset()
        try:
            params_from_official(shapes, config)
        except CheckpointError:
            continue
        return config
    raise CheckpointError(
        f"no {CONFIG_FILE} and the parameter shapes match no preset "
        f"({', '.join(PRESETS)})"
    )
