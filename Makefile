# Verbs: run, seed, test, lint, format, bench, clean (and venv). Docker Compose where a Docker
# engine answers, local processes from .venv otherwise (override with DOCKER=yes or DOCKER=no).
SHELL := bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DOCKER ?= $(shell docker info >/dev/null 2>&1 && echo yes || echo no)
# Compose v2 (the `docker compose` plugin) where present, else v1 (`docker-compose`, Debian's).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: venv run seed test lint format bench clean
COMPAT := e2e/compat
NODE_CLIENTS := $(if $(shell command -v npm 2>/dev/null),$(COMPAT)/node_modules/.package-lock.json)
BENCH_SECONDS ?= 8
BENCH_ROUNDS ?= 4

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

ifeq ($(DOCKER),yes)
run:
	@echo "make: the Docker path, with $(COMPOSE)"
	$(COMPOSE) up --build redis proxy

# Inside the running proxy container, where REDIS_URL names the compose Redis.
seed:
	$(COMPOSE) exec -T proxy python - < scripts/seed.py

# The suite in its container; then the containers, network and images it made are removed.
test:
	@echo "make: the Docker path, with $(COMPOSE)"
	$(COMPOSE) --profile test build e2e
	$(COMPOSE) --profile test run --rm e2e; status=$$?; \
	  $(COMPOSE) --profile test down --rmi local --remove-orphans; exit $$status
else
run: venv
	scripts/run-local

# A few sample keys into REDIS_URL (environment over .env), the Redis `make run` uses.
seed: venv
	PYTHONPATH=. $(BIN)/python scripts/seed.py

test: venv $(NODE_CLIENTS)
	$(BIN)/pytest
endif

# The npm Redis clients e2e/test_clients.py drives, pinned by their lock file; that test skips
# them when npm is missing or could not install them.
$(COMPAT)/node_modules/.package-lock.json: $(COMPAT)/package-lock.json
	-cd $(COMPAT) && npm ci --no-audit --no-fund --loglevel=error

# Needs wrk, redis-benchmark and the anchors (Debian: apt-get install wrk redis-tools varnish
# webdis nutcracker). Local processes only.
bench: venv $(VENV)/.bench
	BENCH_SECONDS=$(BENCH_SECONDS) BENCH_ROUNDS=$(BENCH_ROUNDS) $(BIN)/python -m bench.run

$(VENV)/.bench: requirements-bench.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache $(COMPAT)/node_modules
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
