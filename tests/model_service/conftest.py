"""Models shared by the model_service tests, loaded once per session."""

import pytest

from model_service.registry import load_model


@pytest.fixture(scope="session")
def gemma3_270m():
    """The real Gemma 3 270M weights (use with `@pytest.mark.real_weights`)."""
    return load_model("gemma3-270m")


@pytest.fixture(scope="session")
def tiny_random():
    """The seeded tiny model with the Gemma 3 tokenizer."""
    return load_model("tiny-random")
