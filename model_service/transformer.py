"""The Gemma decoder: embed, blocks, final norm, tied output projection."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from model_service import cache as kv_cache
from model_service import layers, modules
from model_service.config import AttentionType, TransformerConfig
from model_service.quantize import LayerWeight, QuantizedWeight


class TransformerOutput(NamedTuple):
    """What a forward pass returns.

    Attributes:
        logits: float32 [B, T, vocab], soft-capped when the config says so.
        cache: the updated cache, or None when called without one.
        hidden: the final-normed hidden states [B, T, D] (for heads such as a reward
            model's); under `jit` they cost nothing when unused.
    """

    logits: jax.Array
    cache: kv_cache.Cache | None
    hidden: jax.Array


class Transformer(nn.Module):
    """Gemma as a Flax module; parameters are passed to `apply`, never held.

    Attributes:
        config: the model's shape and features.
        dtype: dtype of the activations (parameters keep their own).
    """

    config: TransformerConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,  # [B, T] int32
        positions: jax.Array,  # [B, T] int32, -1 = padding
        cache: kv_cache.Cache | None = None,
    ) -> TransformerOutput:
        """Runs the model on a batch of tokens.

        Args:
            tokens: token ids.
            positions: each token's position in its row; -1 marks padding, which is
                never attended to and never written to the cache.
            cache: from `cache.init_cache`, or None for plain causal attention inside
                the batch.

        Returns:
            Logits, the updated cache and the final hidden states.
        """
        cfg = self.config
        embedder = modules.Embedder(cfg.vocab_size, cfg.embed_dim, name="embedder")
        x = embedder.encode(tokens, self.dtype)
        if self.has_variable("params", STACKED_LAYERS):
            x, cache = self._scan_layers(x, positions, cache)
        else:
            for i, attn_type in enumerate(cfg.attention_types):
                block = modules.Block(cfg, attn_type, name=kv_cache.layer_name(i))
                index = kv_cache.stack_index(cfg, i)
                x, cache = _apply_block(block, attn_type, index, x, positions, cache)
        x = layers.RMSNorm(cfg.rms_norm_eps, name="final_norm")(x)
        logits = embedder.decode(x).astype(jnp.float32)
        logits = modules.soft_cap(logits, cfg.final_logit_soft_cap)
        return TransformerOutput(logits=logits, cache=cache, hidden=x)

    def _scan_layers(
        self, x: jax.Array, positions: jax.Array, cache: kv_cache.Cache | None
    ) -> tuple[jax.Array, kv_cache.Cache | None]:
        """The blocks of a model whose layers' parameters are stacked
        (`stack_layers`): a `scan` over the repeats of the attention pattern, and
        within a repeat over each run of layers of one type.

        The compiled program holds one block per run of the pattern (for Gemma 3 a
        local and a global one) where the unrolled model holds every layer; each
        compiled block keeps megabytes of XLA's data, and the generation worker
        compiles a program per prefill pass and batch size.
        """
        cfg = self.config
        stacked = self.get_variable("params", STACKED_LAYERS)
        pattern = cfg.attention_pattern
        repeats, tail = divmod(cfg.num_layers, len(pattern))

        def block(carry, j, *, attn_type, layer, index):
            """Layer `layer + j` of the stacked parameters, `index + j` in its type's
            cache stack."""
            module = modules.Block(cfg, attn_type, parent=None)
            params = _layer_params(stacked, layer + j)
            apply = functools.partial(module.apply, {"params": params})
            x, cache = carry
            return _apply_block(apply, attn_type, index + j, x, positions, cache), None

        def repeat(carry, r, types=pattern):
            for attn_type, start, length in _runs(types):
                run = functools.partial(
                    block,
                    attn_type=attn_type,
                    layer=r * len(pattern) + start,
                    index=r * pattern.count(attn_type)
                    + kv_cache.stack_index(cfg, start),
                )
                if length == 1:
                    carry, _ = run(carry, 0)
                else:
                    carry, _ = jax.lax.scan(run, carry, jnp.arange(length))
            return carry, None

        carry, _ = jax.lax.scan(repeat, (x, cache), jnp.arange(repeats))
        if tail:
            carry, _ = repeat(carry, repeats, types=pattern[:tail])
        return carry


# The parameter tree's entry of the stacked layers (`stack_layers`).
STACKED_LAYERS = "layers"


def _apply_block(
    block: Callable,
    attn_type: AttentionType,
    index: jax.Array | int,
    x: jax.Array,
    positions: jax.Array,
    cache: kv_cache.Cache | None,
) -> tuple[jax.Array, kv_cache.Cache | None]:
    """Runs a block on its layer's cache, at `index` in its type's stack."""
    if cache is None:
        return block(x, positions, None)[0], None
    name = kv_cache.stack_name(attn_type)
    x, stack = block(x, positions, kv_cache.LayerCache(cache[name], index))
    return x, {**cache, name: stack}


def _runs(pattern: Sequence[AttentionType]) -> list[tuple[AttentionType, int, int]]:
    """The runs of consecutive layers of one type: (type, first, length)."""
    runs, first = [], 0
    for attn_type, run in itertools.groupby(pattern):
        length = len(list(run))
        runs.append((attn_type, first, length))
        first += length
    return runs


def _layer_params(stacked: Any, layer: jax.Array | int) -> Any:
    """One layer's parameters of the stacked ones: int8 weights as `LayerWeight`s
    (read where they lie), the small rest sliced out."""

    def view(leaf: Any) -> Any:
        if isinstance(leaf, QuantizedWeight):
            return LayerWeight(leaf, jnp.asarray(layer, jnp.int32))
        return jax.lax.dynamic_index_in_dim(leaf, layer, keepdims=False)

    return jax.tree.map(
        view, stacked, is_leaf=lambda leaf: isinstance(leaf, QuantizedWeight)
    )


def stack_layers(params: Any, config: TransformerConfig) -> Any:
    """The parameters with every layer's stacked into one tree (`STACKED_LAYERS`),
    each leaf [layers, ...]: `Transformer` then scans over its layers.

    For serving (the generation worker): what training and checkpoints keep is the
    unstacked tree. The layers' arrays are copied into the stacks; callers drop the
    unstacked tree.
    """
    names = [kv_cache.layer_name(i) for i in range(config.num_layers)]
    rest = {name: tree for name, tree in params.items() if name not in names}
    stacked = jax.tree.map(
        lambda *leaves: jnp.stack(leaves), *(params[n] for n in names)
    )
    return {**rest, STACKED_LAYERS: stacked}


def abstract_params(config: TransformerConfig) -> dict:
    """The parameter tree's shapes and dtypes (float32), without allocating it."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = jax.eval_shape(
        Transformer(config=config).init, jax.random.key(0), tokens, tokens
    )
    return variables["params"]


def init_params(config: TransformerConfig, seed: int = 0) -> dict:
    """Random float32 parameters (the initializers of the official implementation)."""
    return _init(config, jax.random.key(seed))


@functools.partial(jax.jit, static_argnames="config")
def _init(config: TransformerConfig, key: jax.Array) -> dict:
    tokens = jnp.zeros((1, 1), jnp.int32)
    return Transformer(config=config).init(key, tokens, tokens)["params"]


def parameter_counts(config: TransformerConfig) -> tuple[int, int]:
    """(embedding, non-embedding) parameter counts, from the abstract tree."""
    params = abstract_params(config)
    embedding = params["embedder"]["input_embedding"].size
    total = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    return embedding, total - embedding
