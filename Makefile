# Thin wrappers. `make dev` runs the whole local stack; `make test` sets up and passes the tests.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   := torch==2.13.0

.PHONY: setup dev test lint typecheck pytest bench bench-capacity web fixtures clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: the CPU wheel; anything else pulls gigabytes of CUDA.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP) web

web:
	@if [ -f web/package.json ]; then $(MAKE) -C web build; fi

fixtures: $(STAMP)
	$(BIN)/python tests/fixtures/make_fixtures.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check llmrtc worker signalling tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) web fixtures
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

test: lint typecheck pytest

dev: setup
	$(BIN)/python -m scripts.dev

bench: $(STAMP)
	$(BIN)/python bench/vad.py
	$(BIN)/python bench/devserver.py
	$(BIN)/python bench/turn_latency.py
	$$(command -v taskset >/dev/null && echo taskset -c 0) $(BIN)/python bench/worker_density.py

# llmrtc against LiveKit Agents, N = 1, 4, 8 rooms, 3 interleaved repetitions (about 20 minutes; docs/benchmarks.md)
bench-capacity: $(STAMP) fixtures
	$(BIN)/python bench/capacity.py --n 1 4 8 --reps 3

clean:
	rm -rf $(VENV) web/node_modules signalling/static .pytest_cache .mypy_cache .ruff_cache
