# customer-pulse — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS_VENV := .venv-peers
PEERS_ARGS ?=
DEMO_SECONDS ?= 60
# 120 days of history replay in ~15 s, then live traffic (live KPIs: NPS, CSAT...)
DEMO_HISTORY_DAYS ?= 120
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install system-deps demo test test-unit test-integration lint typecheck bench bench-peers bench-ceiling clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the project with its dev tools (and redis-server, promtool)

$(STAMP): pyproject.toml
	@bash .ci/system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

system-deps:  ## install the Debian packages the stack and tests need (redis-server, prometheus)
	@bash .ci/system-deps

demo: install  ## run the embedded stack on simulated traffic for DEMO_SECONDS (default 60)
	$(BIN)/pulse dev --duration $(DEMO_SECONDS) --history-days $(DEMO_HISTORY_DAYS)

# Test processes (pytest-xdist): each starts its own broker and Redis and runs whole test
# files (loadfile: a file's fixtures stay in one process). The integration tests mostly
# wait on the broker, workers and Redis, so one per core halves the suite's time on 2 cores.
TEST_PROCS ?= auto
PYTEST := $(BIN)/pytest -q -p no:cacheprovider -n $(TEST_PROCS) --dist loadfile

test: install  ## the whole test suite (unit + integration on a real Tansu broker and redis-server)
	$(PYTEST)

test-unit: install  ## pure tests only (fast)
	$(PYTEST) tests/unit

test-integration: install  ## tests on the real broker and Redis
	$(PYTEST) tests/integration

lint: install  ## ruff
	$(BIN)/ruff check schemas processors streams tests bench

typecheck: install  ## mypy on the package code
	$(BIN)/mypy

bench: install  ## throughput, latency and state-size benchmarks (prints numbers)
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/hotpath.py

# the peers bench/peers.py measures us against live in their own venv: not product dependencies
$(PEERS_VENV)/.installed: pyproject.toml bench/peers-requirements.txt
	@bash .ci/system-deps
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --upgrade pip
	$(PEERS_VENV)/bin/pip install -q -e . -r bench/peers-requirements.txt
	@touch $@

bench-ceiling: $(PEERS_VENV)/.installed install  ## how far any purchase-history ranking goes on CDNOW (churn AUC ceiling)
	$(PEERS_VENV)/bin/python bench/churn_ceiling.py

bench-peers: $(PEERS_VENV)/.installed  ## ours vs Quix Streams and a no-op Faust agent, same events and broker (PEERS_ARGS)
	$(PEERS_VENV)/bin/python bench/peers.py $(PEERS_ARGS)

clean:  ## remove the venvs and caches
	rm -rf $(VENV) $(PEERS_VENV) .pulse .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
