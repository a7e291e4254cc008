# Two commands: `make run` (dashboard on demo data) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: run test test-postgres test-browser lint fmt bench bench-postgres cron-example clean migration

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-install only when the requirement files change.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# Demo mode also starts the demo's own local Stripe (billing_core/demo/serve.py); Ctrl-C stops both.
run: $(VENV)/.runtime
	$(BIN)/python -m billing_core.demo.serve --port $(PORT)

# Everything on SQLite: unit, integration, AppTest, and browser tests when chromium is installed.
test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite (browser tests aside) on a throwaway PostgreSQL server from Debian's
# `postgresql` package; set TEST_DATABASE_URL to use a server of your own instead.
test-postgres: $(VENV)/.dev
	$(BIN)/python -m tests.support.pg_cluster run -- $(BIN)/python -m pytest -m "not browser" $(PYTEST_ARGS)

test-browser: $(VENV)/.dev
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.dev
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The benchmark again with PostgreSQL beside SQLite (sections that support it print a
# "(PostgreSQL)" row under each SQLite one), on the same throwaway server as test-postgres.
# BENCH_ARGS="--only usage" runs one section.
bench-postgres: $(VENV)/.dev
	$(BIN)/python -m tests.support.pg_cluster run -- \
		sh -c 'BENCH_POSTGRES_URL="$$TEST_DATABASE_URL" exec $(BIN)/python -m bench.run $(BENCH_ARGS)'

# New schema revision from the models: make migration MSG="add x"
migration: $(VENV)/.dev
	$(BIN)/python -c "import sys; from billing_core.db import new_revision; new_revision(sys.argv[1])" "$(MSG)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data test-artifacts
