"""Model configurations: frozen dataclasses with named presets.

The Gemma 1 presets follow Table 1 of the report; `gemma3-270m` follows the published
Gemma 3 270M configuration (google/gemma-3-270m `config.json` and
`gemma/gm/nn/_config.py`). `tiny` keeps the Gemma 3 features and vocabulary at toy
sizes, so tests and the `tiny-random` model run in milliseconds and share the real
tokenizer.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class AttentionType(enum.Enum):
    """Which keys a layer's queries may see."""

    GLOBAL = "global"
    LOCAL_SLIDING = "local_sliding"


GLOBAL = AttentionType.GLOBAL
LOCAL = AttentionType.LOCAL_SLIDING


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """Every number that shapes a Gemma decoder.

    Attributes:
        num_layers: transformer blocks.
        vocab_size: rows of the (tied) embedding table.
        embed_dim: d_model.
        hidden_dim: width of one feed-forward branch (gate or up); Table 1 lists
            gate+up, which is twice this.
        num_heads: query heads.
        num_kv_heads: key/value heads (1 = multi-query, num_heads = multi-head).
        head_dim: size of one head.
        max_seq_len: longest context the model was trained for.
        query_pre_attn_scalar: queries are multiplied by this ** -0.5.
        attention_pattern: attention types repeated cyclically over the layers.
        sliding_window: keys a local layer's query may see, itself included.
        global_rope_base: RoPE base frequency on global layers.
        local_rope_base: RoPE base frequency on local (sliding-window) layers.
        rope_scale_factor: positions on global layers are divided by this.
        use_post_attn_norm: RMSNorm after attention, before the residual add.
        use_post_ffw_norm: RMSNorm after the feed-forward, before the residual add.
        use_qk_norm: RMSNorm over each query and key head before RoPE.
        attn_logits_soft_cap: tanh soft cap on attention logits (Gemma 2), or None.
        final_logit_soft_cap: tanh soft cap on output logits (Gemma 2), or None.
        rms_norm_eps: epsilon of every RMSNorm.
    """

    num_layers: int
    vocab_size: int
    embed_dim: int
    hidden_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_seq_len: int = 8192
    query_pre_attn_scalar: float | None = None
    attention_pattern: tuple[AttentionType, ...] = (GLOBAL,)
    sliding_window: int | None = None
    global_rope_base: float = 10_000.0
    local_rope_base: float = 10_000.0
    rope_scale_factor: float = 1.0
    use_post_attn_norm: bool = False
    use_post_ffw_norm: bool = False
    use_qk_norm: bool = False
    attn_logits_soft_cap: float | None = None
    final_logit_soft_cap: float | None = None
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if LOCAL in self.attention_pattern and not self.sliding_window:
            raise ValueError("sliding_window must be set when layers are local")

    @property
    def attention_types(self) -> tuple[AttentionType, ...]:
        """The attention type of each layer, in order."""
        pattern = self.attention_pattern
        return tuple(pattern[i % len(pattern)] for i in range(self.num_layers))

    @property
    def query_scale(self) -> float:
        """The factor that multiplies queries before the dot product."""
        scalar = self.query_pre_attn_scalar or self.head_dim
        return scalar**-0.5

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_dict` reads back."""
        fields = dataclasses.asdict(self)
        fields["attention_pattern"] = [t.value for t in self.attention_pattern]
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> TransformerConfig:
        """Builds a config from `to_dict` output; unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        fields = dict(fields)
        if "attention_pattern" in fields:
            pattern = fields["attention_pattern"]
            fields["attention_pattern"] = tuple(AttentionType(t) for t in pattern)
        return cls(**fields)


def gemma_2b() -> TransformerConfig:
    """Gemma 1 2B (report Table 1): multi-query attention."""
    return TransformerConfig(
        num_layers=18,
        vocab_size=256_128,
        embed_dim=2048,
        hidden_dim=16_384,
        num_heads=8,
        num_kv_heads=1,
        head_dim=256,
    )


def gemma_7b() -> TransformerConfig:
    """Gemma 1 7B (report Table 1): multi-head attention."""
    return TransformerConfig(
        num_layers=28,
        vocab_size=256_128,
        embed_dim=3072,
        hidden_dim=24_576,
        num_heads=16,
        num_kv_heads=16,
        head_dim=256,
    )


GEMMA3_PATTERN = (LOCAL,) * 5 + (GLOBAL,)


def gemma3_270m() -> TransformerConfig:
    """Gemma 3 270M: 5 local layers to 1 global, QK-norm, pre and post norms."""
    return TransformerConfig(
        num_layers=18,
        vocab_size=262_144,
        embed_dim=640,
        hidden_dim=2048,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        max_seq_len=32_768,
        query_pre_attn_scalar=256,
        attention_pattern=GEMMA3_PATTERN,
        sliding_window=512,
        global_rope_base=1_000_000.0,
        local_rope_base=10_000.0,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
    )


def tiny() -> TransformerConfig:
    """Gemma 3 features at toy sizes, with the Gemma 3 vocabulary.

    Grouped-query attention (4 heads, 2 kv heads) and a window of 4 so that tests see
    every code path: ring-buffer caches, local and global layers, head groups.
    """
    return TransformerConfig(
        num_layers=4,
        vocab_size=262_144,
        embed_dim=32,
        hidden_dim=64,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_seq_len=256,
        attention_pattern=(LOCAL, GLOBAL),
        sliding_window=4,
        global_rope_base=1_000_000.0,
        local_rope_base=10_000.0,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
    )


PRESETS = {
    "gemma-2b": gemma_2b,
    "gemma-7b": gemma_7b,
    "gemma3-270m": gemma3_270m,
    "tiny": tiny,
}


def get_config(name: str) -> TransformerConfig:
    """Returns the preset called `name` (see `PRESETS`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown config {name!r}; known: {known}") from None
