# swarm — the two commands are `make demo` (lab + reference fleet) and `make test`.
PY ?= python3
PYTEST_ARGS ?=
EXAMPLE ?=

.PHONY: setup test unit integration examples reliability lint typecheck render-check demo lab-down bench

setup:
	./scripts/setup.sh

## Everything CI runs: lint, rendered tree fresh, unit tests (2 workers), then the lab's
## integration tests and fault suite (one lab per machine: one session, in order; the tests
## of other lab shapes last: phase 5's four-node fleet and the four example projects).
test: setup
	$(PY) -m ruff check orchestrator tests
	$(PY) -m mypy orchestrator
	$(PY) -m orchestrator.cli render --check
	$(PY) -m pytest -q -p no:cacheprovider -n 2 tests/unit $(PYTEST_ARGS)
	$(PY) -m pytest -q -p no:cacheprovider -rfEs --durations=25 tests/integration tests/reliability $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q -n 2 tests/unit $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

## Only the four example projects' lab tests (also in `make test`), each on a lab in its inventory's shape (~8 min).
examples: setup
	$(PY) -m pytest -q -p no:cacheprovider -rfEs tests/integration/test_example_*.py $(PYTEST_ARGS)

reliability: setup
	$(PY) -m pytest -q -s tests/reliability $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check orchestrator tests

typecheck: setup
	$(PY) -m mypy orchestrator

render-check: setup
	$(PY) -m orchestrator.cli render --check

## Bring the local lab up and deploy the reference fleet to it, phase by phase;
## `make demo EXAMPLE=vllm-server` (or litellm-saas, litellm-tailnet-ollama, gateway): a lab
## in that example's shape, the example deployed, then `swarm verify` (exit 0 only if it passes).
demo: setup
ifeq ($(strip $(EXAMPLE)),)
	./scripts/demo.sh
else
	PY=$(PY) ./scripts/demo-example.sh $(EXAMPLE)
endif

lab-down:
	$(PY) -m orchestrator.cli lab down

bench: setup
	$(PY) bench/run.py
