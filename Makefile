# The two commands the README opens with. Both work on a fresh machine with
# Python 3.11+ and make: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench proof proof-short clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml sandbox/pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -e ./sandbox
	@touch $(STAMP)

# `make run PORT=9000` to serve elsewhere (the sandbox takes the next port).
# Without STRIPE_SECRET_KEY the sandbox keeps its key, webhook secret and
# objects in .stripeline/sandbox.json: delete it to start afresh.
PORT         ?= 8000
SANDBOX_PORT ?= $(shell echo $$(( $(PORT) + 1 )))
SANDBOX_STATE ?= .stripeline/sandbox.json

run: $(STAMP)
	$(BIN)/stripeline migrate
	$(BIN)/stripeline serve --host 127.0.0.1 --port $(PORT) \
	  --sandbox-port $(SANDBOX_PORT) --sandbox-state $(SANDBOX_STATE)

lint: $(STAMP)
	$(BIN)/ruff check src tests sandbox examples $(wildcard bench) $(wildcard proof)
	$(BIN)/ruff format --check src tests sandbox examples $(wildcard bench) $(wildcard proof)

# Two runs: both test folders are a package named `tests`, so the sandbox's
# (with its own config in sandbox/pyproject.toml) is checked from its folder.
typecheck: $(STAMP)
	$(BIN)/mypy
	cd sandbox && ../$(BIN)/mypy

# In parallel (one xdist worker per core, tests handed out one at a time so the
# slow multi-process tests, collected first, start at once on different
# workers), with coverage combined across workers. Then core/ and the webhook
# route must be fully covered (.ci/check_coverage.py says what that means).
unit: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/pytest -q -n auto --maxschedchunk=1 --cov --cov-report=term-missing:skip-covered
	$(BIN)/python .ci/check_coverage.py

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/process.py
	$(BIN)/python bench/lookup.py
	$(BIN)/python bench/mirror.py --postgres $${STRIPELINE_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/entitlements.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/djstripe.py

# The proof suites (docs/reliability.md): the full form writes PROOF.md; the
# short form (CI, a few minutes) prints its report and writes nothing. Both use
# PostgreSQL too when STRIPELINE_TEST_POSTGRES_URL is set.
proof: $(STAMP)
	$(BIN)/python proof/run.py

proof-short: $(STAMP)
	$(BIN)/python proof/run.py --short

clean:
	rm -rf $(VENV) stripeline.db stripeline.db-wal stripeline.db-shm .coverage .coverage.*
