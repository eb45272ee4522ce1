# The README's two commands: `make run` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
TORCH := torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test lint format install install-dev services chromium clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, from the local CPU wheel, so the project's range never pulls a CUDA build.
$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make run: the main job, the validation suite (a Celery chord) on the embedded default model.
run: install
	$(VENV)/bin/embedctl validate

## make test: set up, make sure PostgreSQL and Redis are up, run the whole suite.
test: install-dev services chromium
	$(PY) -m pytest

services:
	bash scripts/ensure_services.sh

chromium:
	bash scripts/ensure_chromium.sh

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache artifacts embedding.db
