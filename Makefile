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

.PHONY: setup data browser redis redis-server run test lint lock clean
.PHONY: airflow-setup airflow-lock airflow-dag-test airflow-standalone

setup: $(STAMP) data

$(STAMP): pyproject.toml requirements/pipeline.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" wheel
	$(PY) -m pip install --quiet -c requirements/pipeline.lock -e '.[dev]'
	touch $@

# Fetches every shipped dataset's source (checksum verified) and loads its embedded warehouse.
data: $(STAMP)
	$(PY) -m pipeline.data prepare --all --data-dir $(DATA_DIR)

# The validation report is checked in a real headless browser: Debian's chromium.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-liberation \
		fonts-dejavu-core >/dev/null; }

# The online store's Redis (Debian's redis-server 7): the tests start their own on a free
# loopback port; `make redis-server` runs one for local serving on 127.0.0.1:$(REDIS_PORT).
REDIS_PORT ?= 6379
redis:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

redis-server: redis
	redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no

run: setup
	$(PY) -m pipeline.run --runner DirectRunner $(RUN_ARGS)

test: setup browser redis airflow-setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock: $(STAMP)
	{ sed -n '1,/^# pyproject.toml/p' requirements/pipeline.lock; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^preprocessing-pipeline'; } > requirements/pipeline.lock.new
	mv requirements/pipeline.lock.new requirements/pipeline.lock

clean:
	rm -rf runs models

# ---- Orchestration: Airflow in an environment of its own ----------------------------------
# Airflow 3.3 cannot share the pipeline environment (see requirements/airflow.in); DAG tasks run
# the pipeline with $(PY). AIRFLOW_HOME is .airflow/ in the checkout (SQLite metadata DB), the
# DAGs folder is dags/. By hand: export AIRFLOW_HOME=$$PWD/.airflow; .venv-airflow/bin/airflow ...
AIRFLOW_VENV := .venv-airflow
AIRFLOW := $(AIRFLOW_VENV)/bin/airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
AIRFLOW_HOME_DIR := $(CURDIR)/.airflow
# One DAG, ml_pipeline (its `dataset` setting picks the dataset), or one DAG ml_pipeline_<name>
# per dataset with DATASETS=<name>,<name> (the DAG file reads ML_PIPELINE_DATASETS).
DATASETS ?=
DAG_ID ?= ml_pipeline
# Logical date of the run for airflow-dag-test; the run processes the day before it.
DATE ?= $(shell date -u +%Y-%m-%d)
DAG_CONF ?= {}
AIRFLOW_RUN_ENV = AIRFLOW_HOME=$(AIRFLOW_HOME_DIR) $(if $(DATASETS),ML_PIPELINE_DATASETS=$(DATASETS))

airflow-setup: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): requirements/airflow.in requirements/airflow.lock
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24" wheel
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -c requirements/airflow.lock \
		-r requirements/airflow.in
	# Airflow writes a full airflow.cfg (with this home's secret keys) on first use.
	AIRFLOW_HOME=$(AIRFLOW_HOME_DIR) $(AIRFLOW) config get-value core dags_folder >/dev/null
	sed -i -e 's|^dags_folder = .*|dags_folder = $(CURDIR)/dags|' \
		-e 's|^load_examples = .*|load_examples = False|' $(AIRFLOW_HOME_DIR)/airflow.cfg
	AIRFLOW_HOME=$(AIRFLOW_HOME_DIR) $(AIRFLOW) db migrate >/dev/null
	touch $@

airflow-lock: $(AIRFLOW_STAMP)
	{ sed -n '1,/^# `make airflow-setup`/p' requirements/airflow.lock; \
	  $(AIRFLOW_VENV)/bin/python -m pip freeze; } > requirements/airflow.lock.new
	mv requirements/airflow.lock.new requirements/airflow.lock

# One real DAG run of the local target: make airflow-dag-test DATE=2024-01-02 DAG_CONF='{...}'
# (another dataset: DAG_CONF='{"dataset": "<name>", ...}', or DATASETS=<name>
# DAG_ID=ml_pipeline_<name>)
airflow-dag-test: setup airflow-setup
	$(AIRFLOW_RUN_ENV) $(AIRFLOW) dags test $(DAG_ID) $(DATE) -c '$(DAG_CONF)'

# Scheduler, DAG processor, API server and UI on http://localhost:8080 (login in the output).
airflow-standalone: setup airflow-setup
	PATH=$(CURDIR)/$(AIRFLOW_VENV)/bin:$$PATH $(AIRFLOW_RUN_ENV) $(AIRFLOW) standalone
