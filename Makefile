# Entry points for a fresh machine. Every target is idempotent: a second call reuses the
# virtualenv, the downloaded data and the warehouse file.
#
#   make run    set up, then run the whole pipeline end to end on the embedded default
#   make test   set up, then run the test suite
#
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= data
RUN_ARGS ?=
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONWARNINGS := ignore::FutureWarning

.PHONY: setup data browser run test lint lock clean

setup: $(STAMP) data

$(STAMP): pyproject.toml requirements/pipeline.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" wheel
	$(PY) -m pip install --quiet -c requirements/pipeline.lock -e '.[dev]'
	touch $@

# Fetches the Chicago taxi sample (checksum verified) and loads the embedded warehouse.
data: $(STAMP)
	$(PY) -m pipeline.data prepare --data-dir $(DATA_DIR)

# The validation report is checked in a real headless browser: Debian's chromium.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-liberation \
		fonts-dejavu-core >/dev/null; }

run: setup
	$(PY) -m pipeline.run --runner DirectRunner $(RUN_ARGS)

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock: $(STAMP)
	{ sed -n '1,/^# pyproject.toml/p' requirements/pipeline.lock; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^taxi-preprocessing'; } > requirements/pipeline.lock.new
	mv requirements/pipeline.lock.new requirements/pipeline.lock

clean:
	rm -rf runs models
