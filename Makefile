# Runa's entry points. `make run` and `make test` each set up everything first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
QUESTION ?= In one sentence, what is a microkernel?

.PHONY: setup run test lint clean

setup:
	@tools/setup

# Set up, install the default model (once), start the stack in the background, ask a question.
run: setup
	$(VENV)/bin/runa models setup
	$(VENV)/bin/runa up --detach
	$(VENV)/bin/runa ask "$(QUESTION)"

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
