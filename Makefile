# The README's two commands: `make run` (the whole system) and `make test` (the suite).
# Both set up .venv/ first; it is reinstalled only when the package's definition or its
# C++ kernels changed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install browsers compiler bench

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

# The benchmarks' peers (`make bench`: the `bench` extra, llama-cpp-python, which
# compiles llama.cpp with cmake for this CPU, minutes on 2 cores). Without AMX: its AMX
# kernels fault where the kernel does not grant the tile registers (a general
# protection fault at the first prompt here); it then takes its AVX-512 ones.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_CMAKE_ARGS := $(if $(filter x86_64,$(shell uname -m)),\
	-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
	-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16')

bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	CMAKE_ARGS="$(BENCH_CMAKE_ARGS)" $(BIN)/python -m pip install --no-cache-dir \
		-e ".[dev,bench]" --config-settings editable_mode=compat
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
