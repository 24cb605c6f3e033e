# weightstream: two commands on a fresh machine.
#   make demo   create .venv, install, synthesise a sample and process it (embedded SQLite)
#   make test   create .venv, install the system tools the tests need (test-deps), run the suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo

# System tools the tests need. Each NAME has an idempotent scripts/install-NAME that exits at once
# when the tool is already there (root or sudo, apt-get). To add one (PostgreSQL, Chromium, ...),
# write scripts/install-NAME and append NAME here; `make test` then installs it when missing.
TEST_DEPS := promtool chromium postgresql

.PHONY: demo test test-deps venv lint typecheck bench clean example-config

$(BIN)/weightstream: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/weightstream

demo: venv
	@mkdir -p $(DEMO)
	$(BIN)/weightstream synth --users 200 --per-user 50 --seed 1 \
		--out $(DEMO)/export.csv --truth $(DEMO)/truth.csv
	rm -f $(DEMO)/weightstream.db $(DEMO)/weightstream.db-wal $(DEMO)/weightstream.db-shm
	$(BIN)/weightstream process $(DEMO)/export.csv --db $(DEMO)/weightstream.db \
		--out $(DEMO)/results.csv --metrics-file $(DEMO)/metrics.prom
	$(BIN)/weightstream report --all --db $(DEMO)/weightstream.db --input $(DEMO)/export.csv \
		--out $(DEMO)/report

# One at a time: two apt-get runs would contend for the dpkg lock.
test-deps:
	@for name in $(TEST_DEPS); do bash scripts/install-$$name || exit 1; done

test: venv test-deps
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src benchmarks

typecheck: venv
	$(BIN)/mypy --strict src/weightstream

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis

# Regenerate the shipped example configuration after changing a default.
example-config: venv
	{ head -n 3 weightstream.example.toml; echo; $(BIN)/weightstream config; } > weightstream.example.toml.tmp
	mv weightstream.example.toml.tmp weightstream.example.toml
