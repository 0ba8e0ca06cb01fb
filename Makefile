# Entry points: `make demo` shows piagent answering from a real model with no Ollama,
# `make run` serves piagent (in front of Ollama), `make test` runs its tests (the
# real-model ones included, hence the demo packages), `make install` only installs
# what serving needs (a deploy, before starting the systemd service).
# Each creates the virtual environment in .venv on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run demo demo-deps test lint

install: $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

demo: $(VENV)/.runtime $(VENV)/.demo
	$(BIN)/python -m demo

demo-deps: $(VENV)/.demo

test: $(VENV)/.dev $(VENV)/.demo
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.demo: requirements-demo.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-demo.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@
