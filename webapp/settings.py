"""Django settings for Gemma Studio, read from the environment.

With no variables set, the values suit the embedded run (`make run`): SQLite and a
secret key under `var/`, the Redis server that `make run` starts on a socket in `var/`.
Production sets `DATABASE_URL` (PostgreSQL) and `REDIS_URL`. A value that cannot be
understood stops start-up with an ImproperlyConfigured error naming the variable.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def env_str(name: str, default: str) -> str:
    """The variable's value, or `default` when it is unset or empty."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use one of true, false, 1, 0, yes, no."
    )


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list, e.g. `ALLOWED_HOSTS=example.org,.example.net`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, path: Path) -> str:
    """The variable's value, else a secret generated once and kept in `path`.

    Several processes start at once under `make run`; the secret is written to a
    temporary file and linked into place, so all of them read the same complete value.
    """
    raw = os.environ.get(name, "").strip()
    if raw:
        return raw
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        candidate.write_text(secrets.token_urlsafe(50))
        candidate.chmod(0o600)
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
        finally:
            candidate.unlink()
    return path.read_text().strip()


def env_database(name: str, default: str) -> dict:
    url = env_str(name, default)
    try:
        # Connections are kept (and checked before reuse): a new SQLite connection costs
        # about a millisecond, on the way of every chat message.
        config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
    except ValueError as error:
        raise ImproperlyConfigured(
            f"{name}={url!r} is not a database URL ({error}). Examples: "
            "postgres://user:password@127.0.0.1:5432/name, sqlite:////abs/path.sqlite3"
        ) from None
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}={url!r} names no database.")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Web, Celery threads and tests write at once: wait for the lock instead of
        # failing, and take the write lock at BEGIN so waiting can work.
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI every request's sync code runs in a thread of its own, and a
        # connection kept per thread outlives it: under load, PostgreSQL runs out of
        # connections. A pool lends one per request and takes it back.
        config["CONN_MAX_AGE"] = 0
        config["CONN_HEALTH_CHECKS"] = False
        config.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 2,
            "max_size": env_int("DATABASE_POOL_SIZE", 20),
            "timeout": 30,
        }
    return config


def env_redis_url(name: str, default: str) -> str:
    url = env_str(name, default)
    if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"{name}={url!r} is not a Redis URL: use redis://host:port/db, "
            "rediss://... or unix:///path/to/redis.sock?db=0."
        )
    return url


def kombu_redis_url(redis_url: str) -> str:
    """Celery spells a Unix-socket Redis `redis+socket:///path?virtual_host=db`."""
    parts = urlsplit(redis_url)
    if parts.scheme != "unix":
        return redis_url
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


# --- core -------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY", VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# The embedded default: the Redis server that `make run` starts (webapp.launcher).
REDIS_URL = env_redis_url("REDIS_URL", f"unix://{VAR_DIR / 'redis.sock'}?db=0")

DATABASES = {
    "default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "webapp.accounts",
    "webapp.core",
    "webapp.chat",
    "webapp.api",
    "webapp.ratings",
    "webapp.evals",
    "webapp.runs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login unless its view is marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "core:home"
LOGOUT_REDIRECT_URL = "accounts:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# One host serves everything in the embedded run; behind a proxy set SERVE_STATIC=false.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- Cache --------------------------------------------------------------------------

# The dashboards' numbers, computed once per version of the ratings by a web process
# or a Celery worker, and read by all of them. Django's Redis cache takes the Unix
# socket URL (unix:///path?db=0) as it is; its keys sit under a prefix of their own,
# which `clear()` keeps to (a test session names its own).
CACHES = {
    "default": {
        "BACKEND": "webapp.core.cache.PrefixedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "gemma-studio"),
    }
}

# --- Channels -----------------------------------------------------------------------

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 times socket reads out after 5 s by default, exactly the time
        # channels_redis blocks in BZPOPMIN waiting for a message: every idle consumer
        # would die with "Timeout reading from socket". Reads get a longer limit.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}]},
    }
}

# --- Celery -------------------------------------------------------------------------

CELERY_BROKER_URL = kombu_redis_url(REDIS_URL)
CELERY_RESULT_BACKEND = kombu_redis_url(REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# `training` is consumed only by hosts with an accelerator (and by the embedded run).
CELERY_TASK_QUEUES = (Queue("default"), Queue("generation"), Queue("training"))
CELERY_TASK_ROUTES = {
    "training.tasks.*": {"queue": "training"},
    "webapp.ratings.tasks.judge_campaign": {"queue": "training"},
    "webapp.ratings.tasks.*": {"queue": "generation"},
}
CELERY_TASK_TRACK_STARTED = True
# Tasks are long (generation, training): a worker takes one at a time per slot.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_EXPIRES = 24 * 3600

# How long /healthz waits for each part to answer (seconds).
HEALTHZ_TIMEOUT = 1.0

# --- Training runs ----------------------------------------------------------------

# Each run's data, checkpoints and trained model go in a directory of its own here.
RUNS_DIR = Path(env_str("RUNS_DIR", str(VAR_DIR / "runs")))

# --- Chat ---------------------------------------------------------------------------

# The longest chat message a user may send; longer ones are rejected, nothing saved.
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 8000)

# --- Logging ------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
