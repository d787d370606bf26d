# `make demo`: set up, start a throwaway PostgreSQL, roll the example registry out, show status. Run it twice.
# `make test`: install what the tests need, then run them (real PostgreSQL servers, started by the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-serve clean compile

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Byte-compile the package: an editable install writes no .pyc, and with PYTHONDONTWRITEBYTECODE set (as on these
# machines) every CLI start would compile it again (~0.1 s).
compile: $(STAMP)
	$(BIN)/python -m compileall -q orchestrator

demo: $(STAMP) compile
	bash scripts/demo.sh

test: $(STAMP)
	bash scripts/ensure-postgres.sh --tests
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/ruff format --check orchestrator tests bench
	$(BIN)/mypy

# The fleet figures at 1,000 schools, as the speed targets are stated (about 30 minutes on 2 cores).
BENCH_ARGS ?= --schools 1000 --cold-rounds 1 --repeat 3

bench: $(STAMP) compile
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

# Onboarding through `orchestrator serve` against the CLI, spares ready (bench/serve.py; about a minute).
bench-serve: $(STAMP) compile
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/serve.py $(BENCH_SERVE_ARGS)

clean:
	-$(BIN)/python -m orchestrator.devserver stop --dir .demo/pg 2>/dev/null
	rm -rf .demo $(VENV)
