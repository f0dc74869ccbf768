# Two commands on a fresh machine: `make run` (the service on config.example.toml) and
# `make test`. Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint fuzz bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mailer run -c config.example.toml

check: $(STAMP)
	$(BIN)/mailer check -c config.example.toml

lint: $(STAMP)
	$(BIN)/ruff check mailer tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

# The PostgreSQL tests start their own server from Debian's binaries (tests/postgres.py),
# the browser tests drive Debian's chromium (tests/browser.py); without them they skip,
# except in CI (CI=true), where .ci/run installs both (apt-get, as root).
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# The property tests with fresh random examples (CI draws the same ones every run).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q -m hypothesis tests

# Benchmarks (issue 8): figures beside their baselines, in bench/results/latest.json.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# The long crash loop (issue 7): thousands of deliveries, kill -9 at seeded moments.
soak: $(STAMP)
	$(BIN)/python -m tests.crash_loop --people 3000 --kills 20

clean:
	rm -rf $(VENV) var preview .pytest_cache
