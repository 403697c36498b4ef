"""The Gemma decoder: embed, blocks, final norm, tied output projection."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from model_service import cache as kv_cache
from model_service import layers, modules
from model_service.config import TransformerConfig


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
        new_cache = None if cache is None else {}
        for i, attn_type in enumerate(cfg.attention_types):
            name = kv_cache.layer_name(i)
            block = modules.Block(cfg, attn_type, name=name)
            x, layer_cache = block(x, positions, None if cache is None else cache[name])
            if cache is not None:
                new_cache[name] = layer_cache
        x = layers.RMSNorm(cfg.rms_norm_eps, name="final_norm")(x)
        logits = embedder.decode(x).astype(jnp.float32)
        logits = modules.soft_cap(logits, cfg.final_logit_soft_cap)
        return TransformerOutput(logits=logits, cache=new_cache, hidden=x)


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
