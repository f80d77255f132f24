# The two commands the README opens with. Both work on a fresh machine with
# Python 3.11+ and make: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml sandbox/pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -e ./sandbox
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/stripeline migrate
	$(BIN)/stripeline serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check src tests sandbox $(wildcard bench)
	$(BIN)/ruff format --check src tests sandbox $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/process.py
	$(BIN)/python bench/lookup.py
	$(BIN)/python bench/mirror.py --postgres $${STRIPELINE_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
	$(BIN)/python bench/sandbox.py

clean:
	rm -rf $(VENV) stripeline.db stripeline.db-wal stripeline.db-shm
