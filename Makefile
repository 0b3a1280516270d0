# The single entry point: CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The offline stack and the deploy tools (local/) and the BLE example (example/) are run as
# packages from here.
RUN := PYTHONPATH=local:example:. $(BIN)/python
REQS := requirements-dev.txt provisioning_lambda/requirements.txt \
        deployment_lambda/requirements.txt example/requirements.txt
# The SAM CLI has a virtualenv of its own (see requirements-sam.txt). It needs no credentials
# or network to validate; telemetry off so it never tries to phone home.
SAM_VENV := $(VENV)/sam-cli
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
# `make deploy SAM_BUILD_FLAGS=--use-container` builds inside the Lambda image (needs Docker)
# on a machine without python3.13.
SAM_BUILD_FLAGS ?=

.PHONY: help venv sam lint test unit integration e2e soak demo up down browser bench load params vectors webapp-protocol chromium deploy clean

help:  ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The project itself last, editable (pyproject.toml): the `devstack` command in $(BIN), and the
# packages of local/ and example/onboarding_ble importable with no PYTHONPATH. Re-run when a
# requirements file or pyproject.toml changes; a no-op otherwise. (PYTHONWARNINGS: setuptools'
# notice that an editable install is one is not a problem to show.)
$(BIN)/.installed: $(REQS) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --no-deps --editable .
	touch $@

$(SAM_VENV)/bin/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements-sam.txt
	touch $@

venv: $(BIN)/.installed  ## create .venv (all but the SAM CLI), with the `devstack` command

sam: $(SAM_VENV)/bin/.installed  ## the SAM CLI, in a virtualenv of its own (for lint and deploy)

lint: venv sam  ## ruff, mypy on the Lambda and example code, cfn-lint and sam validate on the template
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint --region us-east-1 --template template.yaml

# Python's bytecode cache stays on for the tests even where the shell turns it off
# (PYTHONDONTWRITEBYTECODE): otherwise every pytest-xdist worker rewrites and compiles every
# test module again, and every process a test starts (the stack's Lambda workers, each command
# of the printed-hints tests, the benchmarks) compiles the project's sources again.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

test: lint chromium node_modules/.installed  ## the whole suite: lint, then unit, integration and end-to-end tests (the browser journeys too)
	$(PYTEST)

unit: venv  ## unit tests only
	$(PYTEST) tests/unit

integration: venv  ## handler + adapters under moto
	$(PYTEST) tests/integration

e2e: venv chromium node_modules/.installed  ## through the offline stack
	$(PYTEST) tests/e2e

# The browser journeys (tests/e2e/browser/) drive Debian's chromium with Playwright (never a
# browser Playwright downloads). Installed with apt-get where it is missing and this user can
# (root, or sudo without a password); otherwise the command to run, and a failure.
CHROMIUM := /usr/bin/chromium
chromium:  ## Debian's chromium, for the browser journeys and `make browser`
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "Debian's chromium is missing: run \`sudo apt-get install -y chromium\`, then make again" >&2; exit 1; fi; \
	echo "installing Debian's chromium (apt-get)"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	{ $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# axe-core (the accessibility check the browser journeys inject), pinned by package-lock.json.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 18 or newer with npm (Debian: \`sudo apt-get install -y nodejs npm\`), then make again" >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# `make browser BROWSER_ARGS="--state PATH"` for another stack; `--help` lists all.
BROWSER_ARGS ?=
browser: venv chromium  ## chromium on the running stack's phone app, its Web Bluetooth bridged to the virtual radio
	$(RUN) -m onboarding_ble.webbluetooth $(BROWSER_ARGS)

# `make soak SOAK_EXAMPLES=2000 SOAK_STEPS=60`: longer still. pytest's 300 s limit is off here,
# and it runs in pytest's own process (-n 0), which prints Hypothesis's statistics.
SOAK_EXAMPLES ?= 300
SOAK_STEPS ?= 40
soak: venv  ## the lifecycle model test long: random sequences with kills; prints what it ran
	LIFECYCLE_MODEL_EXAMPLES=$(SOAK_EXAMPLES) LIFECYCLE_MODEL_STEPS=$(SOAK_STEPS) \
	$(BIN)/pytest tests/integration/test_lifecycle_model.py -p no:cacheprovider --timeout=0 -n 0 \
	--hypothesis-show-statistics

demo: venv  ## the whole flow offline: stack, BLE, MQTT
	$(RUN) example/demo.py

up: venv  ## start the offline stack and keep it running (Ctrl-C or `make down` stops it)
	$(RUN) -m devstack up

# No venv, so nothing was ever started: nothing to stop either (and nothing to install).
down:  ## stop the offline stack a `make up` started (from another terminal); nothing up is fine
	@if [ -x $(BIN)/python ]; then PYTHONPATH=local $(BIN)/python -m devstack down; \
	else echo "no offline stack is up (no $(VENV)): nothing to stop"; fi

bench: venv  ## benchmarks: print figures, assert nothing
	$(RUN) -m bench
	$(RUN) -m bench.disconnect

# `make load LOAD_ARGS="--devices 50"` for a quick run; `.venv/bin/python -m bench.load --help`
# lists all.
LOAD_ARGS ?=
load: venv  ## onboard 1,000 devices offline under AWS quotas and the stage throttle; print figures
	$(RUN) -m bench.load $(LOAD_ARGS)

vectors: venv  ## regenerate docs/test-vectors/ from the product's code (CHECK=1: only compare)
	PYTHONPATH=local:example:provisioning_lambda:. $(BIN)/python -m tools.vectors $(if $(CHECK),--check)

webapp-protocol: venv  ## regenerate webapp/js/protocol.js from the BLE protocol's code (CHECK=1: only compare)
	$(RUN) -m tools.webapp_protocol $(if $(CHECK),--check)

params: venv  ## print provisioning_lambda/config.json as `sam deploy` parameter overrides
	@$(RUN) -m tools.params

# `make deploy DEPLOY_ENV=first DEPLOY_PARAMS="AdminEmail=you@example.com"`: no prompts, the
# answers of samconfig.toml's [first] environment. DEPLOY_PARAMS (Key=Value ...) win over them
# and over config.json. The pre-flight runs before the SAM CLI is installed.
DEPLOY_ENV ?= default
DEPLOY_PARAMS ?=
.PHONY: smoke ca-cert app-config destroy
DEPLOY_MODE = $(if $(filter default,$(DEPLOY_ENV)),--guided,--config-env $(DEPLOY_ENV))
deploy: venv  ## pre-flight checks, then the SAM CLI, sam build, sam deploy (--guided by default)
	$(RUN) -m tools.preflight --config-env $(DEPLOY_ENV) --build-flags "$(SAM_BUILD_FLAGS)" \
		$(DEPLOY_PARAMS)
	@$(MAKE) --no-print-directory sam
	$(SAM) build $(SAM_BUILD_FLAGS)
	eval $(SAM) deploy $(DEPLOY_MODE) --parameter-overrides \
		"$$($(RUN) -m tools.answers --config-env $(DEPLOY_ENV) $(DEPLOY_PARAMS))"

# After `make deploy`, against the stack samconfig.toml names (STACK_ARGS="--stack-name X
# --region R" for another; "--state .local/stack.json" for the offline stack but destroy).
STACK_ARGS ?=
smoke: venv  ## a member provisions and revokes one test device on the deployed stack; all removed
	$(RUN) -m tools.smoke $(STACK_ARGS)

CA_CERT_OUT ?= device-ca.pem
ca-cert: venv  ## write the deployed Private CA's certificate, which devices pin, to CA_CERT_OUT
	$(RUN) -m tools.ca_cert --out $(CA_CERT_OUT) $(STACK_ARGS)

# The phone app's config.json beside webapp/index.html (git-ignored; the offline stack's own app
# server needs none). Then host webapp/ on the origin the stack's AppOrigin names (README.md).
APP_CONFIG_OUT ?= webapp/config.json
app-config: venv  ## write the phone app's APP_CONFIG_OUT from the deployed stack's Outputs
	$(RUN) -m tools.app_config --out $(APP_CONFIG_OUT) $(STACK_ARGS)

# `make destroy DESTROY_ARGS=--yes` retires the Private CA without asking.
DESTROY_ARGS ?=
destroy: venv  ## sam delete, then (asked) retire the Private CA; lists what the stack keeps
	$(RUN) -m tools.destroy --check $(STACK_ARGS)
	$(MAKE) --no-print-directory sam
	$(RUN) -m tools.destroy --sam $(SAM_VENV)/bin/sam $(STACK_ARGS) $(DESTROY_ARGS)

clean:  ## stop the offline stack, then remove the virtualenv, caches, local state and build output
	@$(MAKE) --no-print-directory down
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .coverage .aws-sam build \
	    *.egg-info node_modules
