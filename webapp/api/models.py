"""API keys: only a SHA-256 of each key is stored, so a leaked database leaks no key.

Keys are 256 random bits, so a fast hash is enough (no password stretching needed).
"""

import hashlib
import secrets

from django.conf import settings
from django.db import models

KEY_PREFIX = "gs-"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def create_key(self, user, name: str = "") -> tuple["ApiKey", str]:
        """Creates a key; returns the row and the raw key, which is shown only once."""
        raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
        key = self.create(
            user=user, name=name, prefix=raw_key[:10], key_hash=hash_key(raw_key)
        )
        return key, raw_key


class ApiKey(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    # The first characters, to tell keys apart in the admin without storing the key.
    prefix = models.CharField(max_length=10)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked = models.BooleanField(default=False)

    objects = ApiKeyQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
