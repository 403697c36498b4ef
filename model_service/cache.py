"""The key/value cache: slots by position, a ring of `sliding_window` slots on local
layers.

A cache is a dict of arrays with one entry per attention type the model uses
(`stack_name`), holding the layers of that type stacked, in order; every function
here is pure and returns new arrays, so a cache can live inside `jax.jit`. Stacked,
a model scanned over its layers (`transformer.stack_layers`) updates a layer's cache
in place with a traced index, and the decode kernel reads it where it lies.

- `k`: [layers, batch, slots, kv_heads, head_dim] (keys stored after RoPE);
- `v`: [layers, batch, kv_heads, head_dim, slots]: values keep the slots last, the
  axis the attention sums over, so that XLA reads them in place instead of
  transposing the whole cache on every step (keys are summed over head_dim, already
  last);
- `positions`: [layers, batch, slots] int32, the position held by each slot, -1
  when empty.

The batch is the second axis (`BATCH_AXIS`). Global layers hold `length` slots,
slot = position. Local layers hold min(length, sliding_window) slots, slot =
position % slots: a local layer only ever looks back `sliding_window` tokens, so a
ring of that size is all it needs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from model_service.config import LOCAL, AttentionType, TransformerConfig

LayerStack = dict[str, jax.Array]
Cache = dict[str, LayerStack]

BATCH_AXIS = 1

_NO_POSITION = jnp.iinfo(jnp.int32).max


class LayerCache(NamedTuple):
    """One layer's cache: its type's stack and its index there (an int, or traced in
    a scan over layers)."""

    stack: LayerStack
    index: jax.Array | int

    def read(self, name: str) -> jax.Array:
        """The layer's `k`, `v` or `positions`, without the layer axis."""
        return jax.lax.dynamic_index_in_dim(
            self.stack[name], self.index, keepdims=False
        )


def layer_name(index: int) -> str:
    """The name of layer `index` in parameter trees."""
    return f"layer_{index}"


def stack_name(attn_type: AttentionType) -> str:
    """The cache entry that holds the layers of `attn_type`."""
    return attn_type.value


def stack_index(config: TransformerConfig, layer: int) -> int:
    """Layer `layer`'s index in its type's stack: the layers of its type before it."""
    types = config.attention_types
    return types[:layer].count(types[layer])


def num_slots(config: TransformerConfig, attn_type: AttentionType, length: int) -> int:
    """How many slots a layer of `attn_type` keeps in a cache of `length` positions."""
    if attn_type == LOCAL:
        return min(length, config.sliding_window)
    return length


def init_cache(
    config: TransformerConfig,
    *,
    batch_size: int,
    length: int,
    dtype: jnp.dtype = jnp.float32,
) -> Cache:
    """An empty cache for `batch_size` rows of up to `length` positions each.

    Args:
        config: the model's config.
        batch_size: rows.
        length: positions 0 .. length-1 fit on global layers.
        dtype: dtype of the stored keys and values.

    Returns:
        A cache whose slots all hold position -1 (empty).
    """
    cache = {}
    for attn_type in dict.fromkeys(config.attention_types):
        layers = config.attention_types.count(attn_type)
        slots = num_slots(config, attn_type, length)
        heads = (config.num_kv_heads, config.head_dim)
        cache[stack_name(attn_type)] = {
            "k": jnp.zeros((layers, batch_size, slots, *heads), dtype),
            "v": jnp.zeros((layers, batch_size, *heads, slots), dtype),
            "positions": jnp.full((layers, batch_size, slots), -1, jnp.int32),
        }
    return cache


def put_row(cache: Cache, row: Cache, slot: jax.Array) -> Cache:
    """`cache` with its row `slot` replaced by the one row of `row`, in place."""
    return jax.tree.map(
        lambda rows, one: jax.lax.dynamic_update_slice_in_dim(
            rows, one, slot, BATCH_AXIS
        ),
        cache,
        row,
    )


def take_rows(cache: Cache, sources: jax.Array) -> Cache:
    """A cache whose row i is row `sources[i]` of `cache`.

    Row by row: a gather along the batch axis, the second, took about 80 MB more
    while the worker's batch grew to 8 rows of 4,096 positions.
    """

    def take(stack: jax.Array) -> jax.Array:
        rows = [
            jax.lax.dynamic_slice_in_dim(stack, source, 1, BATCH_AXIS)
            for source in sources
        ]
        return jnp.concatenate(rows, axis=BATCH_AXIS)

    return jax.tree.map(take, cache)


def visible_positions(
    stored: jax.Array,  # [B, S], a layer's `positions`
    positions: jax.Array,  # [B, T]
) -> jax.Array:  # [B, S]
    """The stored positions that new tokens at `positions` may attend to, -1 elsewhere.

    A row sees what it stored before its first new position; entries at or past that
    position are left over from an earlier sequence in the same row (a row that starts
    over at position 0 for a new request), or are about to be written again, so they are
    hidden.
    """
    first_new = jnp.min(
        jnp.where(positions >= 0, positions, _NO_POSITION), axis=1, keepdims=True
    )
    return jnp.where(stored < first_new, stored, -1)


def write(
    layer: LayerCache,
    *,
    k: jax.Array,  # [B, T, K, H]
    v: jax.Array,  # [B, T, K, H]
    positions: jax.Array,  # [B, T]
    ring: bool,
) -> LayerStack:
    """Stores each token's key and value at the slot of its own position.

    Padding (position -1) is never written. In a ring only the last `slots` positions of
    each row can be kept; older tokens of the same call are dropped rather than left to
    collide on a slot. On a global layer a position past the end is dropped.

    Args:
        layer: one layer's cache.
        k: new keys (after RoPE).
        v: new values.
        positions: the new tokens' positions, -1 for padding.
        ring: whether slots wrap around (local layers).

    Returns:
        The updated stack of the layer's type.
    """
    stack, index = layer
    _, batch, slots = stack["positions"].shape
    if ring:
        last = jnp.max(positions, axis=1, keepdims=True)
        keep = (positions >= 0) & (positions > last - slots)
        slot = positions % slots
    else:
        keep = (positions >= 0) & (positions < slots)
        slot = positions
    # An index past the end is dropped by the scatter: that is how nothing is written.
    slot = jnp.where(keep, slot, slots)
    rows = jnp.arange(batch)[:, None]
    return {
        "k": stack["k"]
        .at[index, rows, slot]
        .set(k.astype(stack["k"].dtype), mode="drop"),
        # (the advanced indices come first: the update is [B, T, K, H] as `v` is)
        "v": stack["v"]
        .at[index, rows, :, :, slot]
        .set(v.astype(stack["v"].dtype), mode="drop"),
        "positions": stack["positions"]
        .at[index, rows, slot]
        .set(positions, mode="drop"),
    }


def write_step(
    layer: LayerCache,
    *,
    k: jax.Array,  # [B, 1, K, H]
    v: jax.Array,  # [B, 1, K, H]
    positions: jax.Array,  # [B, 1]
    ring: bool,
) -> LayerStack:
    """`write` for one token per row (a decode step), done in place.

    One `dynamic_update_slice` per row: XLA updates the cache where it lies, while a
    scatter (what `write` needs for many tokens) makes it copy the whole cache first
    to guard writes that could fall out of bounds. A free row (position -1) writes its
    unused token to slot 0: its cache is replaced whole when it starts a request.
    """
    stack, index = layer
    _, batch, slots = stack["positions"].shape
    slot = positions[:, 0] % slots if ring else positions[:, 0]
    slot = jnp.where(positions[:, 0] >= 0, slot, 0)
    out = dict(stack)
    for row in range(batch):
        at = slot[row]
        updates = (
            ("k", k[row : row + 1], (index, row, at, 0, 0)),
            ("v", jnp.moveaxis(v[row : row + 1], 1, -1), (index, row, 0, 0, at)),
            ("positions", positions[row : row + 1], (index, row, at)),
        )
        for name, update, start in updates:
            out[name] = jax.lax.dynamic_update_slice(
                out[name], update[None].astype(out[name].dtype), start
            )
    return out
