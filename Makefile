# `make demo` and `make test` set everything up on first use (a .venv in the repo, pinned packages, Java 17+).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
TEST_WORKERS ?= 4
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-browser setup-prometheus setup-postgres setup-docs docs demo test test-unit test-cluster bench broker report dashboard clean

setup: $(STAMP)

# $(call debian_packages,CHECK,PACKAGES,WHY): Debian's PACKAGES, installed only when the shell command CHECK
# fails (what set-up needs beside Python's packages: nothing is downloaded by a test tool).
define debian_packages
@{ $(1); } >/dev/null 2>&1 || { \
  echo "installing Debian's $(2) $(3)"; \
  $(SUDO) apt-get update -qq && \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    --no-install-recommends $(2); }
endef

# The dashboard's browser tests drive Debian's chromium through chromium-driver: nothing is downloaded by a
# test tool. Installs them only when missing.
setup-browser:
	$(call debian_packages,command -v chromium && command -v chromedriver,chromium chromium-driver,for the browser tests)

# The metrics test scrapes /metrics with a real Prometheus: Debian's, installed only when missing.
setup-prometheus:
	$(call debian_packages,command -v prometheus,prometheus,for the metrics test)

# PostgreSQL as the results store (--results, `python -m sfcrime postgres`) and its tests: Debian's server,
# installed only when missing.
setup-postgres:
	$(call debian_packages,ls /usr/lib/postgresql/*/bin/postgres,postgresql,for the PostgreSQL results store)

# The README's picture, drawn from docs/architecture.dot by Debian's graphviz (installed only when missing).
setup-docs:
	$(call debian_packages,command -v dot,graphviz,to draw the docs' picture)

docs: setup setup-docs
	$(PY) docs/draw.py

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml sfcrime/local/setup.py sfcrime/local/jars.py sfcrime/local/class_archive.py sfcrime/local/kafka_archive.py sfcrime/local/pyspark_zips.py \
		sfcrime/stream/jvm/sfcrime/StrictJsonReason.java
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	$(PY) -m sfcrime.local.setup
	touch $(STAMP)

demo: setup
	$(PY) -m sfcrime demo

# Four tests at a time (pytest-xdist, each worker with its own broker): most tests spend much of their time
# waiting on a JVM, a broker or a job, so they overlap well even on 2 cores (on a fresh clone, 2 cores: 23 min
# with two, 20 min with three, 13 min with four on a quieter day). TEST_WORKERS=0 runs one at a time.
# Longest first (tests/durations.json; refresh it with PYTEST_ARGS=--record-durations), and an idle worker
# takes queued tests from a busy one (worksteal), so the four end together.
test: setup setup-browser setup-prometheus setup-postgres
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit -m "not cluster" $(PYTEST_ARGS)

# The secured broker, the three-node Kafka cluster and the Spark standalone cluster, together.
test-cluster: setup setup-postgres
	$(PY) -m pytest -m cluster -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: setup
	$(PY) -m sfcrime bench

broker: setup
	$(PY) -m sfcrime broker

report: setup
	$(PY) -m sfcrime report --output out

dashboard: setup
	$(PY) -m sfcrime dashboard --output out

clean:
	rm -rf out .pytest_cache spark-warehouse metastore_db derby.log
