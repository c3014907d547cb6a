# Runa's entry points. `make run` and `make test` each set up everything first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint clean deb rpm package-test

setup:
	@tools/setup

# Set up, install the default model (once), start the stack in the background, open the chat.
# With standard input not a terminal, the chat answers one question per line and ends at the
# end of input (`make run < /dev/null` ends at once).
run: setup
	$(VENV)/bin/runa models setup
	$(VENV)/bin/runa up --detach
	$(VENV)/bin/runa chat

test: lint
	$(PY) -m pytest

# ruff, mypy (0 errors) and the import rules of DESIGN §7 (.importlinter, docs/architecture.md).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy runa
	$(VENV)/bin/lint-imports --no-cache --no-logo

# The Debian packages into build/deb/ (lintian must be clean) and the RPMs into build/rpm/
# (rpmbuild on Debian with packaging/fedora's shim macros; rpmlint). docs/packaging.md.
deb:
	tools/setup --packaging
	packaging/build-deb

rpm:
	tools/setup --packaging
	packaging/build-rpm

# Build the .debs, install them with apt, run Runa from them as a plain user, purge; check
# the polkit rules with a real polkitd. Installs system-wide: root, on a machine you may change.
package-test: deb
	RUNA_PACKAGING_TEST=1 $(PY) -m pytest -m packaging tests/packaging

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
