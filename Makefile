# Runa's entry points. `make run` and `make test` each set up everything first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint clean

setup:
	@tools/setup

# Set up, install the default model (once), start the stack in the background, open the chat.
# With standard input not a terminal, the chat answers one question per line and ends at the
# end of input (`make run < /dev/null` ends at once).
run: setup
	$(VENV)/bin/runa models setup
	$(VENV)/bin/runa up --detach
	$(VENV)/bin/runa chat

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
