"""Configs: the report's parameter counts, exactly, and the Gemma 3 270M layout."""

import dataclasses

import pytest

from model_service.config import (
    GLOBAL,
    LOCAL,
    TransformerConfig,
    get_config,
)
from model_service.transformer import parameter_counts


@pytest.mark.parametrize(
    "name, embedding, non_embedding",
    [
        ("gemma-2b", 524_550_144, 1_981_884_416),
        ("gemma-7b", 786_825_216, 7_751_248_896),
    ],
)
def test_it_adds_up_to_table_2_of_the_report(name, embedding, non_embedding):
    assert parameter_counts(get_config(name)) == (embedding, non_embedding)


def test_it_matches_table_1_of_the_report():
    two, seven = get_config("gemma-2b"), get_config("gemma-7b")
    assert (two.embed_dim, two.num_layers, 2 * two.hidden_dim) == (2048, 18, 32768)
    assert (two.num_heads, two.num_kv_heads, two.head_dim) == (8, 1, 256)
    assert (seven.embed_dim, seven.num_layers, 2 * seven.hidden_dim) == (
        3072,
        28,
        49152,
    )
    assert (seven.num_heads, seven.num_kv_heads, seven.head_dim) == (16, 16, 256)


def test_gemma3_270m_has_one_global_layer_in_six():
    config = get_config("gemma3-270m")
    types = config.attention_types
    assert [i for i, t in enumerate(types) if t == GLOBAL] == [5, 11, 17]
    assert types.count(LOCAL) == 15
    assert config.query_scale == 256**-0.5
    assert (config.local_rope_base, config.global_rope_base) == (10_000, 1_000_000)
    # 170M embedding + 100M transformer, as published.
    assert parameter_counts(config) == (167_772_160, 100_326_016)


def test_it_round_trips_through_a_dict():
    config = get_config("gemma3-270m")
    assert TransformerConfig.from_dict(config.to_dict()) == config


def test_it_rejects_unknown_fields_and_names():
    fields = get_config("tiny").to_dict() | {"num_experts": 8}
    with pytest.raises(ValueError, match="num_experts"):
        TransformerConfig.from_dict(fields)
    with pytest.raises(ValueError, match="gemma-9b"):
        get_config("gemma-9b")


def test_it_rejects_heads_that_do_not_group():
    with pytest.raises(ValueError, match="num_kv_heads"):
        dataclasses.replace(get_config("tiny"), num_kv_heads=3)
