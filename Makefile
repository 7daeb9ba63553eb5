# `make demo` and `make test` set everything up on first use (a .venv in the repo, pinned packages, Java 17+).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-unit bench broker report clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	$(PY) -m sfcrime.local.setup
	touch $(STAMP)

demo: setup
	$(PY) -m sfcrime demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: setup
	$(PY) -m sfcrime bench

broker: setup
	$(PY) -m sfcrime broker

report: setup
	$(PY) -m sfcrime report --output out

clean:
	rm -rf out .pytest_cache spark-warehouse metastore_db derby.log
