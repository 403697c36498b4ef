"""Transformer sub-modules: embedder, attention, feed-forward and block.

Parameter names follow the official Gemma Flax checkpoints (`gemma/gm/nn/_modules.py`).
Every weight keeps the axes it contracts last ([out..., in...], as PyTorch and GGUF
store them): decoding one token is a product of a vector with each weight, and on a CPU
XLA runs that over contiguous rows without first copying the weight into another layout
(the official Flax layout made it copy 5 of the 7 weights on every step).
`model_service.checkpoints` rewrites the official layout into this one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from model_service import cache as kv_cache
from model_service import cpu_kernels, layers
from model_service.config import LOCAL, AttentionType, TransformerConfig

# A large negative logit for masked keys: finite, so a query with nothing to attend to
# (padding) still gets a finite, unused output instead of NaN.
K_MASK = -2.3819763e38
# The caches whose decode step the C++ kernel reads on a CPU (with float32 queries).
STEP_KERNEL_CACHE_DTYPES = (jnp.float32, jnp.float16)


def attention_mask(
    query_positions: jax.Array,  # [B, T]
    key_positions: jax.Array,  # [B, S]
    *,
    sliding_window: int | None,
) -> jax.Array:  # [B, T, S] bool
    """Which keys each query may attend to, decided by positions alone.

    A key is visible when it is not padding (position >= 0), not in the future, and, on
    local layers, fewer than `sliding_window` positions back (the query itself counts).
    """
    q = query_positions[:, :, None]
    k = key_positions[:, None, :]
    mask = (k >= 0) & (k <= q)
    if sliding_window is not None:
        mask &= q - k < sliding_window
    return mask


def soft_cap(x: jax.Array, cap: float | None) -> jax.Array:
    """cap * tanh(x / cap), or x when there is no cap."""
    if cap is None:
        return x
    return jnp.tanh(x / cap) * cap


class Embedder(nn.Module):
    """The token embedding, also used (tied) as the output projection."""

    vocab_size: int
    embed_dim: int

    def setup(self) -> None:
        self.input_embedding = self.param(
            "input_embedding",
            nn.initializers.normal(),
            (self.vocab_size, self.embed_dim),
        )

    def encode(self, tokens: jax.Array, dtype: jnp.dtype) -> jax.Array:
        """Embeds tokens [B, T] -> [B, T, D], scaled by sqrt(D) in `dtype`."""
        x = layers.embedding_lookup(self.input_embedding, tokens).astype(dtype)
        return x * jnp.sqrt(self.embed_dim).astype(dtype)

    def decode(self, x: jax.Array) -> jax.Array:
        """Logits over the vocabulary: [B, T, D] -> [B, T, V]."""
        return layers.weight_einsum("BTD,VD->BTV", x, self.input_embedding)


class Attention(nn.Module):
    """Multi-query, grouped-query or multi-head attention with an optional cache."""

    config: TransformerConfig
    attn_type: AttentionType

    @property
    def sliding_window(self) -> int | None:
        return self.config.sliding_window if self.attn_type == LOCAL else None

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        cfg = self.config
        if cfg.num_kv_heads == cfg.num_heads:
            # Multi-head checkpoints store one stacked weight (as the official ones do).
            qkv = layers.Einsum(
                (3, cfg.num_heads, cfg.head_dim, cfg.embed_dim), name="qkv_einsum"
            )
            return qkv("BTD,SNHD->SBTNH", x)
        q = layers.Einsum(
            (cfg.num_heads, cfg.head_dim, cfg.embed_dim), name="q_einsum"
        )("BTD,NHD->BTNH", x)
        k, v = layers.Einsum(
            (2, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim), name="kv_einsum"
        )("BSD,CKHD->CBSKH", x)
        return q, k, v

    def _logits(
        self,
        q: jax.Array,  # [B, T, K, G, H]
        keys: jax.Array,  # [B, S, K, H]
        positions: jax.Array,  # [B, T]
        key_positions: jax.Array,  # [B, S]
    ) -> jax.Array:  # [B, T, K, G, S] float32, masked
        logits = jnp.einsum("BTKGH,BSKH->BTKGS", q, keys).astype(jnp.float32)
        logits = soft_cap(logits, self.config.attn_logits_soft_cap)
        mask = attention_mask(
            positions, key_positions, sliding_window=self.sliding_window
        )
        return jnp.where(mask[:, :, None, None, :], logits, K_MASK)

    def _attend(
        self,
        q: jax.Array,  # [B, T, K, G, H]
        k: jax.Array,  # [B, T, K, H]
        v: jax.Array,  # [B, T, K, H]
        cache: kv_cache.LayerCache | None,
        positions: jax.Array,  # [B, T]
    ) -> jax.Array:  # [B, T, K, G, H]
        """Attention of the queries to the cache's visible keys and to this call's own.

        Keys in two parts: what the row stored before (read from the cache as it
        lies) and this call's own tokens. The cache is written afterwards, so a call
        longer than a ring still sees all its tokens, and XLA updates the cache in
        place instead of copying it for a concatenation.
        """
        # Each part: keys, their positions, values and how the values are laid out.
        parts = [(k, positions, v, "BSKH")]
        if cache is not None:
            past = kv_cache.visible_positions(cache.read("positions"), positions)
            keys = cache.read("k").astype(k.dtype)
            values = cache.read("v").astype(v.dtype)
            parts.insert(0, (keys, past, values, "BKHS"))
        logits = jnp.concatenate(
            [self._logits(q, keys, positions, key_pos) for keys, key_pos, *_ in parts],
            axis=-1,
        )
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        encoded = 0
        for keys, _, values, layout in parts:
            part, probs = jnp.split(probs, [keys.shape[1]], axis=-1)
            encoded += jnp.einsum(f"BTKGS,{layout}->BTKGH", part, values)
        return encoded

    def _attend_step(
        self,
        q: jax.Array,  # [B, 1, K, G, H]
        k: jax.Array,  # [B, 1, K, H]
        v: jax.Array,  # [B, 1, K, H]
        cache: kv_cache.LayerCache,
        positions: jax.Array,  # [B, 1]
    ) -> jax.Array:  # [B, 1, K, G, H]
        """`_attend` for one token per row, on a CPU: the C++ kernel reads only the
        cache's visible stretch of keys and values (XLA's products read all of it),
        in the layer's stack where it lies."""
        encoded = cpu_kernels.decode_attention(
            q[:, 0],
            k[:, 0],
            v[:, 0],
            cache.stack["k"],
            cache.stack["v"],
            kv_cache.visible_positions(cache.read("positions"), positions),
            positions[:, 0],
            layer=cache.index,
            window=self.sliding_window or 0,
            soft_cap=self.config.attn_logits_soft_cap or 0.0,
        )
        return encoded[:, None]

    @nn.compact
    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        positions: jax.Array,  # [B, T]
        cache: kv_cache.LayerCache | None,
    ) -> tuple[jax.Array, kv_cache.LayerStack | None]:
        """The attention's output, and the cache's stack with this call's keys and
        values written to the layer's place in it."""
        cfg = self.config
        q, k, v = self._project(x)
        if cfg.use_qk_norm:
            q = layers.RMSNorm(cfg.rms_norm_eps, name="_query_norm")(q)
            k = layers.RMSNorm(cfg.rms_norm_eps, name="_key_norm")(k)
        if self.attn_type == LOCAL:
            rope = {"base_frequency": cfg.local_rope_base}
        else:
            rope = {
                "base_frequency": cfg.global_rope_base,
                "scale_factor": cfg.rope_scale_factor,
            }
        ring = self.attn_type == LOCAL
        q = layers.apply_rope(q, positions, **rope) * jnp.asarray(
            cfg.query_scale, q.dtype
        )
        k = layers.apply_rope(k, positions, **rope)

        batch, time, _, _ = q.shape
        groups = cfg.num_heads // cfg.num_kv_heads
        q = q.reshape(batch, time, cfg.num_kv_heads, groups, cfg.head_dim)
        if (
            cache is not None
            and time == 1
            and q.dtype == jnp.float32
            and cache.stack["k"].dtype in STEP_KERNEL_CACHE_DTYPES
        ):
            encoded = jax.lax.platform_dependent(
                q, k, v, cache, positions, cpu=self._attend_step, default=self._attend
            )
        else:
            encoded = self._attend(q, k, v, cache, positions)
        encoded = encoded.reshape(batch, time, cfg.num_heads, cfg.head_dim)
        stack = None
        if cache is not None:
            write = kv_cache.write_step if time == 1 else kv_cache.write
            stack = write(cache, k=k, v=v, positions=positions, ring=ring)
        out = layers.Einsum(
            (cfg.embed_dim, cfg.num_heads, cfg.head_dim), name="attn_vec_einsum"
        )("BTNH,DNH->BTD", encoded)
        return out, stack


class FeedForward(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x)).

    `gating_einsum` is [2, hidden, embed] (gate, up), `linear` is [embed, hidden].
    """

    embed_dim: int
    hidden_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gating = layers.weight(
            self, "gating_einsum", (2, self.hidden_dim, self.embed_dim)
        )
        linear = layers.weight(self, "linear", (self.embed_dim, self.hidden_dim))
        gate, up = layers.weight_einsum("BTD,CFD->CBTF", x, gating)
        hidden = layers.gelu_tanh(gate) * up
        return layers.weight_einsum("BTF,DF->BTD", hidden, linear)


class Block(nn.Module):
    """Pre-norm attention and feed-forward, each with an optional post-norm."""

    config: TransformerConfig
    attn_type: AttentionType

    @nn.compact
    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        positions: jax.Array,  # [B, T]
        cache: kv_cache.LayerCache | None,
    ) -> tuple[jax.Array, kv_cache.LayerStack | None]:
        cfg = self.config
        eps = cfg.rms_norm_eps
        h = layers.RMSNorm(eps, name="pre_attention_norm")(x)
        h, cache = Attention(cfg, self.attn_type, name="attn")(h, positions, cache)
        if cfg.use_post_attn_norm:
            h = layers.RMSNorm(eps, name="post_attention_norm")(h)
        x = x + h
        h = layers.RMSNorm(eps, name="pre_ffw_norm")(x)
        h = FeedForward(cfg.embed_dim, cfg.hidden_dim, name="mlp")(h)
        if cfg.use_post_ffw_norm:
            h = layers.RMSNorm(eps, name="post_ffw_norm")(h)
        return x + h, cache
