"""A small model for the training tests: the tiny config with a 400-piece
vocabulary (its tokenizer.model beside the checkpoint), so that a step costs
milliseconds where the 262,144-piece vocabulary would dominate."""

import dataclasses
from pathlib import Path

import pytest

from model_service.checkpoints import flax_params
from model_service.config import get_config
from model_service.transformer import init_params
from tests.model_service.test_tokenizer import train_tiny_model

SMALL_VOCAB = 400


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint directory that `registry.load_model` reads."""
    directory = tmp_path_factory.mktemp("small") / "model"
    config = dataclasses.replace(get_config("tiny"), vocab_size=SMALL_VOCAB)
    flax_params.save(directory, init_params(config, seed=0), config)
    (directory / "tokenizer.model").write_bytes(train_tiny_model())
    return directory
