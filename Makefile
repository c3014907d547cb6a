# Runa's entry points. `make run` and `make test` each set up everything first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UP_ARGS ?=

.PHONY: setup run test lint clean

setup:
	@tools/setup

run: setup
	$(VENV)/bin/runa up $(UP_ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
