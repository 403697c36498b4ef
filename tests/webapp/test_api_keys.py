"""API keys: created by a management command, stored only as a hash."""

import io

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import make_user
from webapp.api.models import ApiKey, hash_key


def test_create_api_key_prints_the_key_last_and_stores_its_hash(db):
    user = make_user("ada")
    out = io.StringIO()

    call_command("create_api_key", "ada", stdout=out)

    raw_key = out.getvalue().splitlines()[-1]
    key = ApiKey.objects.get()
    assert key.user == user
    assert key.key_hash == hash_key(raw_key)
    assert raw_key not in key.key_hash
    assert raw_key.startswith(key.prefix)


def test_create_api_key_rejects_an_unknown_user(db):
    with pytest.raises(CommandError, match="nobody"):
        call_command("create_api_key", "nobody")
    assert not ApiKey.objects.exists()
