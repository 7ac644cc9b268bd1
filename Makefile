# Development tasks. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLI := $(BIN)/trpc-kafka
TEST_BROKER_DIR := .kafka/test
BROKER_DIR ?= .kafka/dev
BROKERS ?= 1
PYTEST_ARGS ?=

.PHONY: venv test demo lint broker-start broker-stop clean

venv: $(STAMP)

# Reinstalls only when pyproject.toml changed (or the venv is new).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $@

# One broker for the whole suite; it is stopped on every exit, pass, fail or Ctrl-C, and
# the recipe exits with pytest's status.
test: $(STAMP)
	@set -e; \
	trap '$(CLI) broker stop --dir $(TEST_BROKER_DIR) >/dev/null' EXIT; \
	out="$$($(CLI) broker start --dir $(TEST_BROKER_DIR))"; \
	bootstrap="$$(tail -n 1 <<<"$$out")"; \
	echo "test broker: $$bootstrap"; \
	TRPC_KAFKA_BOOTSTRAP="$$bootstrap" $(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

broker-start: $(STAMP)
	$(CLI) broker start --brokers $(BROKERS) --dir $(BROKER_DIR)

broker-stop: $(STAMP)
	$(CLI) broker stop --dir $(BROKER_DIR)

# The project's main job in one command: a local broker, the example consumer service
# (examples/consumer) and producer (examples/producer); everything is stopped at the end.
demo: $(STAMP)
	$(BIN)/python examples/demo.py

clean:
	if [ -x $(CLI) ]; then \
		$(CLI) broker stop --dir $(TEST_BROKER_DIR); $(CLI) broker stop --dir $(BROKER_DIR); \
	fi
	rm -rf .kafka build dist .pytest_cache .mypy_cache .ruff_cache
