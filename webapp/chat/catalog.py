"""Which models people can chat with: the ones live generation workers serve."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from model_service.client import GenerationClient


def served_models(workers: dict[str, dict[str, Any]]) -> list[str]:
    """The models named in the workers' heartbeats."""
    return sorted({model for info in workers.values() for model in info["models"]})


def available_models() -> list[str]:
    client = GenerationClient(settings.REDIS_URL)
    try:
        return served_models(client.alive_workers())
    finally:
        client.close()
