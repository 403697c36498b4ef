# The README's two commands: `make run` (the whole system) and `make test` (the suite).
# Both set up .venv/ first; it is reinstalled only when the package's definition or its
# C++ kernels changed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install browsers compiler

run: $(STAMP)
	$(BIN)/python -m webapp.launcher

# With CI=true, or DATABASE_URL / REDIS_URL set, the tests use those services; otherwise
# SQLite and a Redis server of their own (see tests/session_services.py).
test: install
	$(BIN)/python -m pytest

install: $(STAMP) browsers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# compat mode: the repository root goes on sys.path, so packages added later import too.
$(STAMP): pyproject.toml setup.py model_service/cpu_kernels.cc | $(BIN)/python compiler
	$(BIN)/python -m pip install -e ".[dev]" --config-settings editable_mode=compat
	touch $@

# The package compiles its C++ kernels (setup.py).
compiler:
	@if ! command -v g++ >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends g++; \
	fi

# The browser tests drive Debian's Chromium (Playwright cannot download its own here).
browsers:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends chromium chromium-driver; \
	fi
