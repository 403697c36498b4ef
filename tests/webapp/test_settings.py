"""Settings come from the environment; bad values stop start-up with a clear message."""

import os
import subprocess
import sys

from webapp.launcher import BASE_DIR


def start_django(**env: str) -> subprocess.CompletedProcess:
    """Sets Django up in a fresh interpreter with `env` added to the environment."""
    script = "import django; django.setup(); from django.conf import settings as s;"
    script += "print(s.DEBUG, s.DATABASES['default']['ENGINE'])"
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_rejects_a_database_url_it_cannot_parse():
    done = start_django(DATABASE_URL="mysq1://db.example.org/shop")

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "DATABASE_URL='mysq1://db.example.org/shop' is not a database URL" in (
        done.stderr
    )


def test_it_rejects_a_database_url_without_a_database_name():
    done = start_django(DATABASE_URL="postgres://127.0.0.1:5432")

    assert done.returncode != 0
    assert "DATABASE_URL='postgres://127.0.0.1:5432' names no database" in done.stderr


def test_it_rejects_a_debug_value_that_is_not_a_boolean():
    done = start_django(DEBUG="maybe")

    assert done.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in done.stderr


def test_it_accepts_good_values():
    done = start_django(DEBUG="yes", DATABASE_URL="postgres://127.0.0.1:5432/shop")

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "django.db.backends.postgresql"]
