# impala — make targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: help setup run test lint typecheck pytest proto proto-check bench chart-test chart-docs images clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

setup: ## Install system packages (root), .venv, pinned packages, generated code (idempotent)
	@bash scripts/setup.sh

run: setup ## Train CartPole on the whole local stack (= impala local); ARGS="--seed 2" to pass flags
	$(VENV)/bin/impala local $(ARGS)

test: setup ## Everything CI runs: lint, typecheck, proto-check, pytest (fails when no test ran)
	@$(MAKE) --no-print-directory lint typecheck proto-check pytest

lint: ## ruff over services/, tests/ and bench/; import contracts (tests/test_layers.py)
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layers.py

typecheck: ## mypy --strict over services/
	$(VENV)/bin/mypy services/impala

pytest: ## pytest only (ARGS="-k vtrace" to filter); exit code 5 (no tests) fails
	$(PY) -m pytest -q -ra $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

proto: ## Regenerate Python code from proto/
	@bash scripts/proto.sh

proto-check: ## Fail when generated code is stale
	@bash scripts/proto.sh --check

bench: setup ## Benchmarks against bare baselines; writes bench/results/latest.json
	$(VENV)/bin/impala bench all $(ARGS)

chart-test: setup ## Render, lint and validate the Helm chart and monitoring rules
	$(PY) -m pytest -q tests/chart tests/monitoring

chart-docs: ## Regenerate helm/impala/values.schema.json (settings parts) and helm/impala/README.md
	$(PY) scripts/chart_schema.py
	$(PY) scripts/chart_readme.py

REGISTRY ?= ghcr.io/impala-rl
TAG ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*/\1/p' helm/impala/Chart.yaml)
IMAGE_TARGETS := $(shell sed -n 's/^FROM .* AS \(cpu\|cuda\|weights\|control\)$$/\1/p' docker/Dockerfile)
BUILD_ARGS ?=
PUSH ?=
images: ## Build every image target of docker/Dockerfile as $(REGISTRY)/impala-<target>:$(TAG); PUSH=1 pushes; BUILD_ARGS="--build-arg EXTRAS=atari"
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "images: no Docker daemon here; run it where docker works" >&2; exit 1; }
	@for target in $(IMAGE_TARGETS); do \
		echo "== $(REGISTRY)/impala-$$target:$(TAG)"; \
		docker build -f docker/Dockerfile --target $$target $(BUILD_ARGS) -t $(REGISTRY)/impala-$$target:$(TAG) . || exit 1; \
		if [ -n "$(PUSH)" ]; then docker push $(REGISTRY)/impala-$$target:$(TAG) || exit 1; fi; \
	done

clean: ## Remove the venv, caches and run outputs
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis runs bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
