# skewless: `make help` lists the targets. Every target works on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

USERS ?= 10000
DAYS ?= 120
SEED ?= 7
PORT ?= 8000
BENCH_USERS ?= 100000
PYTEST_ARGS ?=
UV_VERSION := 0.13.9

VENV := .venv
PY := $(VENV)/bin/python
# Load .state/env (written by the Redis helper) so every target sees the same Redis.
WITH_ENV := set -a; [ -f .state/env ] && . .state/env; set +a;
# MLflow's usage telemetry phones home from a background thread; a service should not.
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: help setup redis-up data validate apply materialize train pipeline serve demo stop test test-unit test-integration test-fault lint format bench

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v python3 >/dev/null || { echo "error: python3 (3.11) is required"; exit 1; }
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	@[ -x $(VENV)/bin/uv ] || { $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip -q; \
		$(PY) -m pip install -q "uv==$(UV_VERSION)"; }
	@# Bytecode compiled once here, for plain and -O runs (the API and the jobs run with -O): with
	@# PYTHONDONTWRITEBYTECODE set (as on CI machines) every command would otherwise recompile
	@# Feast, MLflow and the rest at each start.
	$(VENV)/bin/uv sync --frozen --compile-bytecode --python $(PY)
	@echo "compiling bytecode for python -O"; $(PY) -m compileall -qq -j 0 -o 1 $(VENV)/lib
	@touch $@

setup: $(VENV)/.synced ## Install Python deps into .venv (from uv.lock) and redis-server if missing
	@bash infra/local/redis.sh install

redis-up: setup ## Start (or reuse) the private Redis; writes .state/env
	@bash infra/local/redis.sh up

data: setup ## Generate the churn source tables (USERS, DAYS, SEED); replaces the dataset and what was derived from it
	$(PY) -m feature_repo.datagen.generate --out data --users $(USERS) --days $(DAYS) --seed $(SEED)
	@# A new dataset, not an append: the registry's record of materialized windows and the private
	@# online store belong to the old one (see `forget` in infra/local/redis.sh). `make apply` recreates the registry.
	@bash infra/local/redis.sh forget

validate: setup ## Validate the source tables (schema, nulls, ranges, timestamps, duplicates)
	@$(WITH_ENV) $(PY) -m feature_repo.pipeline.cli validate

apply: redis-up ## feast apply the feature repo
	@$(WITH_ENV) $(PY) -m feature_repo.pipeline.cli apply

materialize: redis-up ## Incrementally materialize validated features into Redis
	@$(WITH_ENV) $(PY) -O -m feature_repo.pipeline.cli materialize

train: redis-up ## Train, evaluate and register the churn model in MLflow (gated promotion)
	@$(WITH_ENV) $(PY) -O -m training train

pipeline: ## data -> validate -> apply -> materialize -> train
	@$(MAKE) --no-print-directory data validate apply materialize train

serve: redis-up ## Serve the champion model on 127.0.0.1:$(PORT)
	@$(WITH_ENV) $(PY) -O -m serving.server --host 127.0.0.1 --port $(PORT) --log-level info

demo: ## The whole job end to end, then serve: make demo USERS=10000 PORT=8000
	@$(MAKE) --no-print-directory pipeline
	@$(MAKE) --no-print-directory serve

stop: ## Stop the private Redis
	@bash infra/local/redis.sh down

test: setup ## Install everything and run the full test suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: setup ## Unit tests only (no services)
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

test-integration: setup ## Integration tests (private redis-server, Feast, MLflow)
	$(VENV)/bin/pytest -m "integration or model" $(PYTEST_ARGS)

test-fault: setup ## Fault-injection tests (Redis killed, paused, slowed; 10x load)
	$(VENV)/bin/pytest -m fault $(PYTEST_ARGS)

lint: setup ## ruff, mypy, bandit (fails on any high-severity finding)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/bandit -q -r serving feature_repo training observability --severity-level high

format: setup ## Format the code with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup ## Benchmarks side by side, USERS=100000 by default (not part of `make test`)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "error: install wrk (apt-get install wrk)"; exit 1; }
	$(PY) -m benchmarks --users $(BENCH_USERS)
