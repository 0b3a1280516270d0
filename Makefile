# The single entry point: CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The offline stack (local/) and the BLE example (example/) are run as packages from here.
RUN := PYTHONPATH=local:example:. $(BIN)/python
REQS := requirements-dev.txt provisioning_lambda/requirements.txt \
        deployment_lambda/requirements.txt example/requirements.txt

.PHONY: help venv lint test unit integration e2e demo up down bench params deploy clean

help:  ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

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
	$(RUN) -m devstack demo

up: venv  ## start the offline stack and keep it running (Ctrl-C or `make down` stops it)
	$(RUN) -m devstack up

down:  ## stop the offline stack a `make up` started (from another terminal)
	@PYTHONPATH=local:. $(BIN)/python -m devstack down

bench: venv  ## benchmarks: print figures, assert nothing
	$(RUN) -m bench

params: venv  ## print provisioning_lambda/config.json as `sam deploy` parameter overrides
	@$(RUN) -m devstack params

deploy: venv  ## sam build + sam deploy --guided, with config.json as parameter overrides
	sam build --use-container
	eval sam deploy --guided --parameter-overrides "$$($(RUN) -m devstack params)"

clean:  ## remove the virtualenv, caches and local state
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
