"""Device meshes and shardings: data parallelism and FSDP-style parameter sharding.

The mesh has two axes. Every example of a batch goes to one device of the whole mesh
(the batch axis is split over `data` x `fsdp`); each large parameter, and its optimizer
state, is split along one of its axes over `fsdp` and replicated over `data`. XLA
inserts the all-gathers and reduce-scatters (`jax.sharding`, GSPMD), so the train step
is the same function on one device and on many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from training.config import MESH_AXES, ConfigError

BATCH_AXES = MESH_AXES  # the batch axis is split over both
# Leaves smaller than this (norm scales) stay whole on every device: splitting them
# saves nothing.
MIN_SHARDED_SIZE = 1024


def make_mesh(axes: Mapping[str, int] | None) -> Mesh:
    """A mesh over the first devices, e.g. {"data": 4, "fsdp": 2}.

    Args:
        axes: devices per axis (missing axes have one); None puts every device on
            `data`.

    Returns:
        The mesh, axes in `MESH_AXES` order.

    Raises:
        ConfigError: more devices asked for than there are.
    """
    available = jax.devices()
    if axes is None:
        axes = {"data": len(available)}
    shape = tuple(axes.get(axis, 1) for axis in MESH_AXES)
    count = math.prod(shape)
    if count > len(available):
        raise ConfigError(
            f"mesh: {dict(zip(MESH_AXES, shape, strict=True))} needs {count} "
            f"devices; there are {len(available)}"
        )
    devices = np.asarray(available[:count]).reshape(shape)
    return Mesh(devices, MESH_AXES)


def batch_devices(mesh: Mesh) -> int:
    """How many devices split a batch (a micro-batch must be a multiple)."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def leaf_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """A parameter's (or optimizer moment's) sharding: its largest axis that `fsdp`
    divides is split over `fsdp`; small leaves are replicated."""
    fsdp = mesh.shape["fsdp"]
    spec = [None] * len(shape)
    if fsdp > 1 and math.prod(shape) >= MIN_SHARDED_SIZE:
        divisible = [i for i, size in enumerate(shape) if size % fsdp == 0]
        if divisible:
            spec[max(divisible, key=lambda i: shape[i])] = "fsdp"
    return NamedSharding(mesh, PartitionSpec(*spec))


def tree_shardings(mesh: Mesh, tree: Any) -> Any:
    """`leaf_sharding` for every array leaf of a tree (abstract or concrete)."""
    return jax.tree.map(lambda leaf: leaf_sharding(mesh, tuple(leaf.shape)), tree)


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """A batch's sharding: its example axis (after `leading` axes, such as the
    micro-batch axis) split over the whole mesh."""
    return NamedSharding(mesh, PartitionSpec(*([None] * leading), BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """Whole on every device (metrics, scalars)."""
    return NamedSharding(mesh, PartitionSpec())
