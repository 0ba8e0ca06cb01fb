# Entry points: `make demo` shows piagent answering from a real model with no Ollama,
# `make run` serves piagent (in front of Ollama), `make test` runs its tests (the
# real-model ones included, hence the demo packages), `make fuzz` its generated tests at
# length, `make install` only installs what serving needs (a deploy, before starting the
# systemd service). Each also installs
# the `piagent` command (.venv/bin/piagent: chat, ask, doctor).
# Each creates the virtual environment in .venv on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run demo demo-deps test fuzz lint

install: $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

demo: $(VENV)/.runtime $(VENV)/.demo
	$(BIN)/python -m demo

demo-deps: $(VENV)/.demo

test: $(VENV)/.dev $(VENV)/.demo
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The generated tests at length, with a new random seed each run (minutes, not seconds):
# schemathesis against live servers, and the memory stores against their model.
fuzz: $(VENV)/.dev
	PIAGENT_FUZZ=1 $(BIN)/python -m pytest -rA tests/integration/test_api_fuzz.py \
		tests/integration/test_memory_model.py $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The checkout itself goes in editable, without dependencies (requirements.txt pins them):
# that makes .venv/bin/piagent, which runs this checkout's code, also after a `git pull`.
$(VENV)/.runtime: requirements.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	touch $@

$(VENV)/.demo: requirements-demo.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-demo.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@
