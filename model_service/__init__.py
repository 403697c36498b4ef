"""Gemma in JAX/Flax: model, tokenizer, checkpoints, registry and generation."""
