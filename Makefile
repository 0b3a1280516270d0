# The single entry point: CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REQS := requirements-dev.txt provisioning_lambda/requirements.txt \
        deployment_lambda/requirements.txt example/requirements.txt

.PHONY: help venv lint test unit integration e2e demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: $(REQS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed  ## create .venv and install everything from the project's files

lint: venv  ## ruff, mypy on the Lambda and example code, cfn-lint on the template
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml

test: lint  ## the whole suite: lint, then unit, integration and end-to-end tests
	$(BIN)/pytest

unit: venv  ## unit tests only
	$(BIN)/pytest tests/unit

integration: venv  ## handler + adapters under moto
	$(BIN)/pytest tests/integration

e2e: venv  ## through the offline stack
	$(BIN)/pytest tests/e2e

demo: venv  ## the whole flow offline: stack, BLE, MQTT
	$(BIN)/python -m devstack demo

bench: venv  ## benchmarks: print figures, assert nothing
	$(BIN)/python -m bench

clean:  ## remove the virtualenv, caches and local state
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
