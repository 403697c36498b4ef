import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts with no cached numbers: a test database rolled back may give
    the next test's rows the same ids, and so the same versions."""
    cache.clear()
