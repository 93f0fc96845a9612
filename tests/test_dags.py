"""The Airflow DAGs ``dags/ml_pipeline.py``, checked in the orchestrator environment.

Airflow cannot share the pipeline environment, so these tests drive ``.venv-airflow`` (made by
``make airflow-setup``; another one with ``AIRFLOW_VENV``) through subprocesses with throwaway
AIRFLOW_HOMEs whose DAG folder is this checkout's ``dags/``: a parse of the DAG folder (import
errors, parse time, no heavy imports), the DAGs' structure and rendered commands for both
targets, for the default DAG and the per-dataset ones (one subprocess renders every case),
``airflow tasks test`` runs of single tasks against a stub interpreter for each exit status, and
real ``airflow dags test`` runs of the local target: a synthetic taxi interval that ends with a
pushed, servable model, one with bad data (fares x100) that stops at validation, and a few days
of the flights warehouse that end with a pushed flights model. Independent Airflow processes run
two at a time (each with its own copy of the metadata DB), to keep the wall time small.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, REPO_ROOT, subprocess_env

# The orchestrator environment: the checkout's (``make airflow-setup``), or AIRFLOW_VENV.
AIRFLOW_VENV = Path(os.environ.get("AIRFLOW_VENV", REPO_ROOT / ".venv-airflow"))
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
DAGS = REPO_ROOT / "dags"
DAG_ID = "ml_pipeline"
DATASETS_ENV = "ML_PIPELINE_DATASETS"
STAGE_TASKS = ["warehouse_split", "validate", "transform", "train", "evaluate_and_bless", "push"]
TASKS = [*STAGE_TASKS, "serving_log_skew_check"]
TASK_STAGES = {
    "warehouse_split": "data,warehouse",
    "validate": "validation",
    "transform": "transform",
    "train": "train,baselines,export",
    "evaluate_and_bless": "parity,evaluate,predict",
    "push": "push",
}
GCP = {
    "target": "gcp",
    "gcp_project": "ml-prod",
    "gcp_region": "europe-west4",
    "gcp_bucket": "ml-artifacts",
    "bq_dataset": "ml_work",
}
WHEEL = "/opt/pipeline/dist/preprocessing_pipeline-0.1.0-py3-none-any.whl"
IMAGE = "europe-west4-docker.pkg.dev/ml-prod/ml/ml-pipeline:1.0"
PARALLEL = 2  # Airflow processes at a time (the CI machine has two cores)

pytestmark = pytest.mark.skipif(
    not AIRFLOW.exists(), reason="no Airflow environment: run `make airflow-setup`"
)


def _airflow_env(home: Path, variables: dict[str, dict] | None = None, **extra: str) -> dict:
    """The Airflow processes' environment: ``home``, this checkout's DAG folder, Variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "VIRTUAL_ENV")) and k != DATASETS_ENV
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        **extra,
    )
    for name, value in (variables or {}).items():
        env[f"AIRFLOW_VAR_{name.upper()}"] = json.dumps(value)
    return env


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """A fresh AIRFLOW_HOME with a migrated SQLite metadata DB."""
    home = tmp_path_factory.mktemp("airflow_home")
    completed = subprocess.run(
        [str(AIRFLOW), "db", "migrate"],
        env=_airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return home


def _home_copy(template: Path, root: Path, name: str) -> Path:
    """An AIRFLOW_HOME of its own (a copy of the migrated DB), for a process run in parallel."""
    home = root / name
    home.mkdir()
    shutil.copy(template / "airflow.db", home / "airflow.db")
    return home


def _in_parallel(jobs: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


# ---- the DAG folder as parsed and rendered ------------------------------------------------------

# Parses the DAG folder the way the DAG processor does (bundle path on sys.path), once per value
# of ML_PIPELINE_DATASETS, then renders every task of one DAG for one data interval per case (its
# params as DAG-run params, its Variables as AIRFLOW_VAR_*), optionally builds the pod the
# kubernetes launcher would start for one task, and prints everything as JSON.
INSPECT = r"""
import datetime as dt, json, os, sys, time
from pathlib import Path

dags, cases = Path(sys.argv[1]), json.loads(sys.argv[2])
from airflow.dag_processing.dagbag import BundleDagBag

HEAVY = ("tensorflow", "apache_beam", "pipeline", "tfx", "duckdb")
parses, results = {}, {}

def parse(datasets):
    # A fresh parse for every case: rendering replaces a task's templates by their values.
    os.environ.pop("ML_PIPELINE_DATASETS", None)
    if datasets is not None:
        os.environ["ML_PIPELINE_DATASETS"] = datasets
    bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
    if str(datasets) not in parses:
        parses[str(datasets)] = {
            "dag_ids": sorted(bag.dags),
            "import_errors": {Path(k).name: str(v) for k, v in bag.import_errors.items()},
            "parse_seconds": {
                Path(s.file).name: s.duration.total_seconds() for s in bag.dagbag_stats
            },
            "heavy_modules": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
        }
    return bag

def finished(code):
    from kubernetes.client import models as k8s

    if code is None:
        return k8s.V1Pod()
    state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=code))
    status = k8s.V1ContainerStatus(
        name="base", state=state, image="i", image_id="", ready=False, restart_count=0
    )
    return k8s.V1Pod(status=k8s.V1PodStatus(container_statuses=[status]))

def pod_request(dag, task, context):
    import pipeline_tasks
    settings = pipeline_tasks.settings_for(task.pipeline, context)
    operator = pipeline_tasks.stage_pod(
        task.pipeline, task.task_id, task.bash_command, settings, task.skip_on_exit_code
    )
    pod = operator.build_pod_request_obj()
    container = pod.spec.containers[0]
    return {
        "bases": [c.__name__ for c in type(operator).__mro__],
        "name": pod.metadata.name,
        "namespace": pod.metadata.namespace,
        "labels": pod.metadata.labels,
        "image": container.image,
        "command": container.command,
        "args": container.args,
        "env": {e.name: e.value for e in container.env or []},
        "skip_on_exit_code": sorted(operator.skip_on_exit_code),
        "config_file": operator.config_file,
        "exit_codes": [
            pipeline_tasks.base_container_exit_code(finished(3), "base"),
            pipeline_tasks.base_container_exit_code(finished(0), "base"),
            pipeline_tasks.base_container_exit_code(finished(None), "base"),
        ],
    }

def render(case):
    bag = parse(case.get("datasets"))
    for name, value in case.get("variables", {}).items():
        os.environ["AIRFLOW_VAR_" + name.upper()] = json.dumps(value)
    dag = bag.dags[case["dag_id"]]
    start = dt.datetime(2024, 3, 5, tzinfo=dt.UTC)
    context = {
        "params": {**dag.params.dump(), **case.get("params", {})},
        "data_interval_start": start,
        "data_interval_end": start + dt.timedelta(days=1),
    }
    result = {
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "timetable": type(dag.timetable).__name__,
        "timetable_expression": dag.timetable.expression,
        "params": sorted(dag.params.keys()),
        "tags": sorted(dag.tags),
        "tasks": {},
    }
    for task in dag.tasks:
        task.render_template_fields(context, jinja_env=dag.get_template_env())
        result["tasks"][task.task_id] = {
            "class": type(task).__name__,
            "bases": [c.__name__ for c in type(task).__mro__],
            "upstream": sorted(task.upstream_task_ids),
            "downstream": sorted(task.downstream_task_ids),
            "bash_command": task.bash_command,
            "cwd": task.cwd,
            "env": task.env,
            "retries": task.retries,
            "retry_exponential_backoff": task.retry_exponential_backoff,
            "retry_delay": task.retry_delay.total_seconds(),
            "execution_timeout": task.execution_timeout.total_seconds(),
            "skip_on_exit_code": sorted(task.skip_on_exit_code),
        }
    if case.get("pod_task"):
        result["pod"] = pod_request(dag, dag.get_task(case["pod_task"]), context)
    return result

parse(None)  # the default folder first: its parse time and imports are the ones to judge
for case in cases:
    saved = dict(os.environ)
    try:
        results[case["name"]] = render(case)
    except Exception as error:
        results[case["name"]] = {"error": f"{type(error).__name__}: {error}"}
    finally:
        os.environ.clear()
        os.environ.update(saved)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps({"parses": parses, "cases": results, "heavy_modules_at_end": heavy}))
"""

KUBE_CONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: not-used}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""
BOTH = "taxi,flights"
RUNS = "/srv/runs"


def _cases(kube_config: Path) -> list[dict]:
    """Every rendering the tests below look at (name, DAG, its params and Variables)."""
    kubernetes = {"launcher": "kubernetes", "image": IMAGE, "k8s_config_file": str(kube_config)}
    logs = "gs://ml-artifacts/request-logs"
    local_logs = "/srv/request-logs"
    cases = [
        {"name": "local", "params": {"train_steps": 7}},
        {"name": "gcp", "variables": {"ml_pipeline": GCP}},
        {"name": "flights", "params": {"dataset": "flights", "serving_logs": local_logs}},
        {
            "name": "flights_by_variable",
            "params": {"runs_dir": RUNS},
            "variables": {"ml_pipeline": {"dataset": "flights"}},
        },
        {"name": "window_7", "params": {"window_days": 7, "dataset": "flights"}},
        {"name": "window_0", "params": {"window_days": 0}},
        {
            "name": "optional_flags",
            "params": {
                "model_name": "arrivals",
                "push_base": "/srv/served/arrivals",
                "sample_fraction": 0.25,
                "duplicates": "drop",
                "metric_floor": 0.6,
                "tolerance": 0.02,
            },
        },
        {
            "name": "gcp_wheel_and_gcs_logs",
            "params": {"gcp_package": WHEEL, "serving_logs": logs, "dataset": "flights"},
            "variables": {"ml_pipeline": GCP},
        },
        {"name": "gcp_without_settings", "params": {"target": "gcp"}},
        {"name": "unknown_variable_key", "variables": {"ml_pipeline": {"trian_steps": 3}}},
        {"name": "bad_dataset_name", "params": {"dataset": "flights; rm -rf /"}},
        {
            "name": "kubernetes",
            "params": kubernetes,
            "variables": {"ml_pipeline": GCP},
            "pod_task": "transform",
        },
        {"name": "kubernetes_without_image", "params": {"launcher": "kubernetes"}},
    ]
    per_dataset_variables = {
        # Shared by both DAGs; the flights DAG's own Variable overrides one setting.
        "ml_pipeline": {"train_steps": 11, "window_days": 2, "runs_dir": RUNS},
        "ml_pipeline_flights": {"train_steps": 22},
    }
    for dataset in ("taxi", "flights"):
        cases.append(
            {
                "name": f"bound_{dataset}",
                "datasets": BOTH,
                "dag_id": f"{DAG_ID}_{dataset}",
                "variables": per_dataset_variables,
            }
        )
    cases += [
        {
            "name": "bound_contradicted",
            "datasets": BOTH,
            "dag_id": f"{DAG_ID}_flights",
            "params": {"dataset": "taxi"},
        },
        {
            "name": "bound_kubernetes",
            "datasets": "flights_lateness",
            "dag_id": f"{DAG_ID}_flights_lateness",
            "params": kubernetes,
            "variables": {"ml_pipeline": GCP},
            "pod_task": "evaluate_and_bless",
        },
        {"name": "repeated_datasets", "datasets": "taxi,flights,taxi", "dag_id": "none"},
        {"name": "invalid_datasets", "datasets": "taxi,my-flights", "dag_id": "none"},
    ]
    for case in cases:
        case.setdefault("dag_id", DAG_ID)
    return cases


@pytest.fixture(scope="module")
def inspected(airflow_home, tmp_path_factory) -> dict:
    """One subprocess in the Airflow environment parses the folder and renders every case."""
    kube_config = tmp_path_factory.mktemp("kube") / "kube_config"
    kube_config.write_text(KUBE_CONFIG)
    completed = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", INSPECT, str(DAGS), json.dumps(_cases(kube_config))],
        env=_airflow_env(airflow_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    found["kube_config"] = str(kube_config)
    return found


def _case(inspected: dict, name: str) -> dict:
    result = inspected["cases"][name]
    assert "error" not in result, result["error"]
    return result


def _error(inspected: dict, name: str) -> str:
    result = inspected["cases"][name]
    assert "error" in result, f"case {name} rendered without an error"
    return result["error"]


def test_the_dag_parses_fast_without_errors_or_heavy_imports(inspected, airflow_home):
    default = inspected["parses"]["None"]
    assert default["dag_ids"] == [DAG_ID]
    assert default["import_errors"] == {}
    assert default["parse_seconds"]["ml_pipeline.py"] < 2.0
    assert default["heavy_modules"] == []
    # Rendering every case (and building pods) imported nothing heavy either.
    assert inspected["heavy_modules_at_end"] == []
    # The CLI the deployment checks use agrees.
    completed = subprocess.run(
        [str(AIRFLOW), "dags", "list-import-errors", "--local", "-B", "dags-folder", "-o", "json"],
        env=_airflow_env(airflow_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1] or "[]") == []


def test_schedule_and_run_policy(inspected):
    for name in ("local", "bound_flights"):
        dag = _case(inspected, name)
        assert dag["timetable"] == "CronDataIntervalTimetable"
        assert dag["timetable_expression"] == "0 0 * * *"  # @daily
        assert dag["catchup"] is False
        assert dag["max_active_runs"] == 1
        for task in dag["tasks"].values():
            assert task["retries"] == 2 and task["retry_exponential_backoff"] == 2.0
            assert task["retry_delay"] == 120 and task["execution_timeout"] > 0
    assert _case(inspected, "local")["tags"] == ["ml-pipeline", "tfx"]
    assert _case(inspected, "bound_flights")["tags"] == ["dataset:flights", "ml-pipeline", "tfx"]


@pytest.mark.parametrize("case", ["local", "gcp", "bound_flights"])
def test_tasks_dependencies_and_operators(case, inspected):
    tasks = _case(inspected, case)["tasks"]
    assert sorted(tasks) == sorted(TASKS)
    for before, after in itertools.pairwise(TASKS):
        assert tasks[before]["downstream"] == [after]
        assert tasks[after]["upstream"] == [before]
    assert tasks["warehouse_split"]["upstream"] == []
    for task_id in STAGE_TASKS:
        assert tasks[task_id]["class"] == "PipelineStageOperator"
        assert "BashOperator" in tasks[task_id]["bases"]
    assert tasks["serving_log_skew_check"]["class"] == "SkewCheckOperator"
    assert "BashOperator" in tasks["serving_log_skew_check"]["bases"]
    assert tasks["serving_log_skew_check"]["skip_on_exit_code"] == [99]


def test_local_commands_carry_the_interval_and_the_direct_runner(inspected):
    """No dataset setting: no ``--dataset`` (the pipeline's default), unprefixed run id."""
    tasks = _case(inspected, "local")["tasks"]
    python = str(REPO_ROOT / ".venv" / "bin" / "python")
    for task_id in STAGE_TASKS:
        command = tasks[task_id]["bash_command"]
        assert command.startswith(
            f"{python} -m pipeline.run --run-id 20240305 --stages {TASK_STAGES[task_id]} "
        )
        assert "--dataset" not in command
        assert "--start 2024-03-05 --end 2024-03-06" in command
        assert f"--runs-dir {REPO_ROOT / 'runs'} --models-dir {REPO_ROOT / 'models'} " in command
        # The pipeline derives the model base from the dataset: <models-dir>/<model name>.
        assert "--push-base" not in command and "--model-name" not in command
        assert "--train-steps 7" in command  # a DAG-run param
        assert command.endswith("--runner DirectRunner")
        assert "DataflowRunner" not in command
        assert tasks[task_id]["cwd"] == str(REPO_ROOT)
        assert tasks[task_id]["env"]["TF_USE_LEGACY_KERAS"] == "1"
        # Only the first task starts the interval's run directory afresh.
        assert ("--restart" in command.split()) == (task_id == "warehouse_split")
    assert "no serving_logs setting" in tasks["serving_log_skew_check"]["bash_command"]


def test_the_dataset_setting_reaches_every_command(inspected):
    tasks = _case(inspected, "flights")["tasks"]
    for task_id in STAGE_TASKS:
        command = tasks[task_id]["bash_command"]
        assert (
            f" -m pipeline.run --dataset flights --run-id flights-20240305 "
            f"--stages {TASK_STAGES[task_id]} "
        ) in command
        assert f"--models-dir {REPO_ROOT / 'models'} " in command
    skew = tasks["serving_log_skew_check"]["bash_command"]
    logs = "--logs /srv/request-logs "
    assert f" -m pipeline.validation serving-logs --dataset flights {logs}" in skew
    assert f"--train-stats {REPO_ROOT / 'runs'}/flights-20240305/statistics/train.pb" in skew
    # From the shared Variable too; the params still override the rest.
    for task in _case(inspected, "flights_by_variable")["tasks"].values():
        if task["class"] == "PipelineStageOperator":
            assert "--dataset flights --run-id flights-20240305 " in task["bash_command"]
            assert f"--runs-dir {RUNS} " in task["bash_command"]


def test_bad_settings_fail_to_render_with_the_reason(inspected):
    assert "window_days must be at least 1" in _error(inspected, "window_0")
    assert "unknown key(s) ['trian_steps'] in Variable ml_pipeline" in _error(
        inspected, "unknown_variable_key"
    )
    assert "invalid dataset name 'flights; rm -rf /'" in _error(inspected, "bad_dataset_name")


def test_optional_pipeline_flags_pass_through_only_when_set(inspected):
    command = _case(inspected, "optional_flags")["tasks"]["push"]["bash_command"]
    expected = (
        "--push-base /srv/served/arrivals --model-name arrivals --sample-fraction 0.25 "
        "--duplicates drop --metric-floor 0.6 --tolerance 0.02"
    )
    assert expected in command
    local = _case(inspected, "local")["tasks"]["push"]["bash_command"]
    for flag in expected.split()[::2]:
        assert flag not in local


def test_a_rolling_window_widens_the_data_but_not_the_run(inspected):
    """``window_days: 7``: the run of 2024-03-05 splits and trains on 2024-02-28 .. 03-05."""
    tasks = _case(inspected, "window_7")["tasks"]
    for task_id in STAGE_TASKS:
        command = tasks[task_id]["bash_command"]
        assert "--run-id flights-20240305 " in command  # one run directory per interval
        assert "--start 2024-02-28 --end 2024-03-06" in command


def test_gcp_commands_run_bigquery_and_dataflow(inspected):
    tasks = _case(inspected, "gcp")["tasks"]
    split = tasks["warehouse_split"]["bash_command"]
    assert "-m pipeline.run --run-id 20240305 --stages data,warehouse " in split
    assert "--restart --warehouse-engine bigquery --bq-project ml-prod " in split
    assert "--bq-dataset ml_work --bq-location US" in split
    assert "--data-dir" not in split and "--db" not in split
    dataflow = (
        "--runner DataflowRunner --project ml-prod --region europe-west4 "
        "--temp_location gs://ml-artifacts/tmp --staging_location gs://ml-artifacts/staging "
        f"--setup_file {REPO_ROOT}/setup.py"
    )
    for task_id in STAGE_TASKS:
        command = tasks[task_id]["bash_command"]
        assert f"--run-id 20240305 --stages {TASK_STAGES[task_id]} " in command
        assert "--start 2024-03-05 --end 2024-03-06" in command
        assert "--runs-dir gs://ml-artifacts/runs --models-dir gs://ml-artifacts/models " in command
        assert "--push-base" not in command
        assert command.endswith(dataflow)
        assert "DirectRunner" not in command
        assert ("--restart" in command.split()) == (task_id == "warehouse_split")
    skew = tasks["serving_log_skew_check"]["bash_command"]
    assert "no serving_logs setting" in skew  # no logs configured: skipped


def test_gcp_ships_a_prebuilt_wheel_and_checks_gcs_request_logs(inspected):
    logs = "gs://ml-artifacts/request-logs"
    tasks = _case(inspected, "gcp_wheel_and_gcs_logs")["tasks"]
    transform = tasks["transform"]["bash_command"]
    assert transform.endswith(f"--extra_package {WHEEL}")
    # Another dataset's runs of the same day get their own run id: their BigQuery split tables
    # (named after the run id) cannot collide in the shared bq_dataset.
    assert "--dataset flights --run-id flights-20240305 " in transform
    skew = tasks["serving_log_skew_check"]["bash_command"]
    assert f"-m pipeline.validation serving-logs --dataset flights --logs {logs} " in skew
    assert "--train-stats gs://ml-artifacts/runs/flights-20240305/statistics/train.pb" in skew
    assert "--runner DataflowRunner" in skew


def test_gcp_target_without_its_settings_fails_to_render(inspected):
    assert "target gcp needs the setting(s)" in _error(inspected, "gcp_without_settings")


def test_one_dag_per_listed_dataset(inspected):
    """``ML_PIPELINE_DATASETS=taxi,flights``: two DAGs, each bound to its dataset, each with the
    shared Variable under its own."""
    parse = inspected["parses"][BOTH]
    assert parse["import_errors"] == {}
    assert parse["dag_ids"] == ["ml_pipeline_flights", "ml_pipeline_taxi"]
    for dataset, steps in (("taxi", 11), ("flights", 22)):
        dag = _case(inspected, f"bound_{dataset}")
        assert "dataset" not in dag["params"]  # not a run's choice in a bound DAG
        for task_id in STAGE_TASKS:
            command = dag["tasks"][task_id]["bash_command"]
            assert (
                f" -m pipeline.run --dataset {dataset} --run-id {dataset}-20240305 "
                f"--stages {TASK_STAGES[task_id]} "
            ) in command
            assert f"--train-steps {steps} " in command
            assert "--start 2024-03-04 --end 2024-03-06" in command  # window_days 2, shared
            assert f"--runs-dir {RUNS} " in command
    assert "DAG runs the dataset 'flights'; the setting dataset 'taxi' contradicts it" in (
        _error(inspected, "bound_contradicted")
    )


def test_a_bad_dataset_list_is_an_import_error(inspected):
    repeated = inspected["parses"]["taxi,flights,taxi"]
    assert repeated["dag_ids"] == []
    assert (
        "ML_PIPELINE_DATASETS names ['taxi'] more than once"
        in (repeated["import_errors"]["ml_pipeline.py"])
    )
    invalid = inspected["parses"]["taxi,my-flights"]
    assert "invalid dataset name(s) ['my-flights']" in invalid["import_errors"]["ml_pipeline.py"]


def test_the_kubernetes_launcher_runs_the_same_command_in_the_pipeline_image(inspected):
    # The pod request is built up to the wire; no cluster is contacted (none is reachable here).
    pod = _case(inspected, "kubernetes")["pod"]
    assert "KubernetesPodOperator" in pod["bases"]
    assert pod["image"] == IMAGE
    assert pod["namespace"] == "composer-user-workloads"
    assert pod["config_file"] == inspected["kube_config"]
    assert re.fullmatch(r"ml-pipeline-transform-[a-z0-9]{8}", pod["name"])
    assert pod["labels"]["app"] == "ml-pipeline" and pod["labels"]["task"] == "transform"
    assert pod["labels"]["dag"] == "ml-pipeline" and "dataset" not in pod["labels"]
    assert pod["command"] == ["bash", "-c"]
    (script,) = pod["args"]
    # Inside the image: its WORKDIR and default Python; Dataflow workers get the same image.
    assert script.startswith("cd /opt/pipeline && python -m pipeline.run --run-id 20240305 ")
    assert "--stages transform " in script and "--runs-dir gs://ml-artifacts/runs" in script
    assert script.endswith(f"--sdk_container_image {IMAGE}")
    assert "--setup_file" not in script
    assert pod["env"]["TF_USE_LEGACY_KERAS"] == "1"
    assert pod["skip_on_exit_code"] == [99]
    assert pod["exit_codes"] == [3, 0, None]  # what decides verdict (no retry) vs crash


def test_a_bound_dags_pods_carry_its_dataset(inspected):
    pod = _case(inspected, "bound_kubernetes")["pod"]
    # Kubernetes names: [a-z0-9-], at most 63 characters with the operator's random suffix.
    assert re.fullmatch(r"ml-pipeline-flights-lateness-evaluate-and-bless-[a-z0-9]{8}", pod["name"])
    assert pod["labels"]["dataset"] == "flights-lateness"
    assert pod["labels"]["dag"] == "ml-pipeline-flights-lateness"
    (script,) = pod["args"]
    assert script.startswith(
        "cd /opt/pipeline && python -m pipeline.run --dataset flights_lateness "
        "--run-id flights_lateness-20240305 --stages parity,evaluate,predict "
    )


def test_the_kubernetes_launcher_needs_an_image(inspected):
    assert "launcher kubernetes needs the setting 'image'" in _error(
        inspected, "kubernetes_without_image"
    )


# ---- exit statuses, through Airflow's task runner -------------------------------------------

STUB = """#!/bin/sh
# Stands in for the pipeline's Python: answers 'python -m pipeline.<command> ...'.
echo "stub called with: $*"
echo "1 blocking anomalies (SERVING):" >&2
echo "  fare [skew] COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH: too far from training" >&2
exit {status}
"""

# ``airflow tasks test`` once per case, in one process: Airflow's own command line (its parser
# and the command's function, as the ``airflow`` executable calls them), so the in-process
# execution API the task runner talks to starts once instead of once per case.
TASK_TESTS = r"""
import json, os, sys
from airflow.cli import cli_parser
from airflow.configuration import write_default_airflow_configuration_if_needed

write_default_airflow_configuration_if_needed()
parser = cli_parser.get_parser()
for case in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update(case["env"])
    print(f"==== case {case['name']}", flush=True)
    command = ["tasks", "test", case["dag_id"], case["task_id"], case["logical_date"]]
    try:
        args = parser.parse_args([*command, "-t", json.dumps(case["params"])])
        args.func(args)
    except BaseException as error:  # ends its case only
        print(f"case raised {type(error).__name__}: {error}", flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
print("==== end", flush=True)
"""


@pytest.fixture(scope="module")
def task_runs(airflow_home, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """The state Airflow's task runner gives a task, and its log, for each exit status of the
    pipeline's commands, by case.

    The exit statuses come from the command lines themselves, so a change there that the DAG
    does not follow fails here.
    """
    from pipeline.cli import EXIT_USAGE
    from pipeline.run import EXIT_VERDICT
    from pipeline.validation import cli

    root = tmp_path_factory.mktemp("task_runs")
    logs = root / "logs"
    logs.mkdir()
    skew = "serving_log_skew_check"
    cases = {  # name: (DAG, task, stub exit status, extra params, extra environment)
        "skew_clean": (DAG_ID, skew, 0, {}, {}),
        "skew_crash": (DAG_ID, skew, cli.EXIT_CRASH, {}, {}),
        "skew_no_logs": (DAG_ID, skew, cli.EXIT_NO_REQUEST_LOGS, {}, {}),
        "skew_blocking": (DAG_ID, skew, cli.EXIT_BLOCKING_ANOMALIES, {}, {}),
        "skew_usage": (DAG_ID, skew, EXIT_USAGE, {}, {}),
        "stage_verdict": (DAG_ID, "transform", EXIT_VERDICT, {}, {}),
        "stage_usage": (DAG_ID, "transform", EXIT_USAGE, {}, {}),
        "stage_crash": (DAG_ID, "transform", 1, {}, {}),
        "stage_done": (DAG_ID, "transform", 0, {"dataset": "flights"}, {}),
        "bound_dag": (f"{DAG_ID}_flights", "push", 0, {}, {DATASETS_ENV: BOTH}),
    }
    runs = []
    for day, (name, (dag_id, task_id, status, params, env)) in enumerate(cases.items(), start=10):
        stub = root / f"python_{name}"
        stub.write_text(STUB.format(status=status))
        stub.chmod(0o755)
        params = {"python": str(stub), "serving_logs": str(logs), **params}
        runs.append(
            {
                "name": name,
                "dag_id": dag_id,
                "task_id": task_id,
                "logical_date": f"2024-02-{day}",
                "params": params,
                "env": env,
            }
        )
    completed = subprocess.run(
        [str(AIRFLOW_PYTHON), "-u", "-c", TASK_TESTS, json.dumps(runs)],
        env=_airflow_env(airflow_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    output = completed.stdout
    assert completed.returncode == 0 and output.rstrip().endswith("==== end"), output[-5000:]
    found = {}
    for section in output.split("==== case ")[1:]:
        name, _, log = section.partition("\n")
        states = re.findall(r"Task instance state updated .*?new_state=(\w+)", log)
        assert len(states) == 1, log[-5000:]
        found[name] = (states[0], log)
    assert sorted(found) == sorted(cases)
    return found


def test_skew_check_blocking_anomalies_fail_without_retry(task_runs):
    state, log = task_runs["skew_blocking"]
    assert state == "failed"  # not up_for_retry, although the task has retries=2
    assert "AirflowFailException: exit status 3: blocking anomalies in the serving logs" in log
    assert "stub called with: -m pipeline.validation serving-logs --logs" in log
    assert "fare [skew] COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in log  # the list is in the log


def test_skew_check_usage_error_fails_without_retry(task_runs):
    state, log = task_runs["skew_usage"]
    assert state == "failed"
    rejected = "exit status 2: pipeline.validation rejected its command line"
    assert f"AirflowFailException: {rejected}" in log


def test_skew_check_crash_is_retried(task_runs):
    state, log = task_runs["skew_crash"]
    assert state == "up_for_retry"
    assert "AirflowFailException" not in log
    assert "non-zero exit code 1" in log


def test_skew_check_without_request_logs_is_skipped(task_runs):
    state, log = task_runs["skew_no_logs"]
    assert state == "skipped"
    assert "no request logs in" in log


def test_skew_check_passes_on_clean_logs(task_runs):
    assert task_runs["skew_clean"][0] == "success"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("stage_verdict", "failed"),
        ("stage_usage", "failed"),
        ("stage_crash", "up_for_retry"),
        ("stage_done", "success"),
    ],
)
def test_stage_task_fails_at_once_on_a_verdict_and_retries_a_crash(task_runs, case, expected):
    """``pipeline.run``'s exit statuses (from the module itself) decide retry or not."""
    state, log = task_runs[case]
    assert state == expected, log[-3000:]
    assert "stub called with: -m pipeline.run " in log
    assert ("AirflowFailException" in log) == (expected == "failed")
    if case == "stage_usage":
        assert "exit status 2: pipeline.run rejected its command line" in log
    if case == "stage_done":  # the dataset param reaches the command the runner runs
        assert "stub called with: -m pipeline.run --dataset flights --run-id flights-" in log


def test_a_bound_dag_runs_its_dataset_under_the_task_runner(task_runs):
    """The task runner parses the folder with ML_PIPELINE_DATASETS too and finds the DAG."""
    state, log = task_runs["bound_dag"]
    assert state == "success", log[-3000:]
    assert "stub called with: -m pipeline.run --dataset flights --run-id flights-20240218 " in log
    assert "--stages push " in log


# ---- real runs of the local target ------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory) -> dict[str, Path]:
    """3,000 synthetic trips over 2024-01-01..03, a copy whose fares are x100, and the flights
    of 2013-03-01..03 (with every side table the flights definition joins)."""
    import duckdb

    root = tmp_path_factory.mktemp("dag_warehouse")
    good, bad = root / "good.duckdb", root / "bad.duckdb"
    command = [
        PYTHON, "-m", "pipeline.data", "synthetic",
        "--rows", "3000", "--seed", "11", "--db", str(good),
        "--start", "2024-01-01", "--days", "3",
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    shutil.copy(good, bad)
    with duckdb.connect(str(bad)) as connection:
        connection.execute("UPDATE chicago_taxi_trips.taxi_trips SET fare = fare * 100")
    return {"good": good, "bad": bad, "flights": _flights_warehouse(root / "flights.duckdb")}


def _flights_warehouse(path: Path) -> Path:
    """Three days of the setup's flights warehouse: its main table's rows of 2013-03-01..03
    (UTC, by the definition's timestamp column) and its side tables whole."""
    import duckdb

    from pipeline import data
    from pipeline.datasets import get_dataset

    flights = get_dataset("flights")
    source = data.ensure_warehouse(flights, REPO_ROOT / "data")
    with duckdb.connect(str(path)) as connection:
        quoted = str(source).replace("'", "''")  # ATTACH takes no query parameters
        connection.execute(f"ATTACH '{quoted}' AS source (READ_ONLY)")
        for table in flights.tables:
            schema, _ = table.split(".")
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            query = f"CREATE TABLE {table} AS SELECT * FROM source.{table}"
            if table == flights.table:
                query += (
                    f" WHERE {flights.timestamp_column} >= TIMESTAMP '2013-03-01'"
                    f" AND {flights.timestamp_column} < TIMESTAMP '2013-03-04'"
                )
            connection.execute(query)
        rows = connection.execute(f"SELECT COUNT(*) FROM {flights.table}").fetchone()[0]
    assert 2000 < rows < 3000, rows
    return path


def _dag_run(
    home: Path, dag_id: str, logical_date: str, conf: dict | None, variables: dict | None
) -> dict[str, Any]:
    """``airflow dags test`` of one interval; its process, the tasks' states, its wall time."""
    command = [str(AIRFLOW), "dags", "test", dag_id, logical_date]
    if conf:
        command += ["-c", json.dumps(conf)]
    began = time.monotonic()
    completed = subprocess.run(
        command,
        env=_airflow_env(home, variables),
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - began
    return {
        "completed": completed,
        "log": completed.stdout + completed.stderr,
        "states": _task_states(home, dag_id, logical_date),
        "seconds": seconds,
    }


def _task_states(home: Path, dag_id: str, logical_date: str) -> dict[str, str]:
    def cli(*args: str) -> list[dict]:
        completed = subprocess.run(
            [str(AIRFLOW), *args, "-o", "json"],
            env=_airflow_env(home),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return json.loads(completed.stdout.strip().splitlines()[-1])

    runs = [
        r for r in cli("dags", "list-runs", dag_id) if r["logical_date"].startswith(logical_date)
    ]
    assert len(runs) == 1, runs
    states = cli("tasks", "states-for-dag-run", dag_id, runs[0]["run_id"])
    return {row["task_id"]: row["state"] for row in states}


@pytest.fixture(scope="module")
def dag_runs(airflow_home, warehouses, tmp_path_factory) -> dict[str, Any]:
    """Three real DAG runs, two at a time, each with its own AIRFLOW_HOME.

    The taxi and flights runs share ``runs_dir`` and ``models_dir``, as DAGs of several datasets
    on one deployment do: their run ids and model bases must keep them apart.
    """
    root = tmp_path_factory.mktemp("dag_runs")
    runs, models = root / "runs", root / "models"
    shared = {"python": PYTHON, "runs_dir": str(runs), "models_dir": str(models)}
    taxi = {**shared, "db": str(warehouses["good"]), "train_steps": 100}
    flights = {
        **shared,
        "dataset": "flights",
        "db": str(warehouses["flights"]),
        "window_days": 3,  # the interval's day and the two before it
        "train_steps": 50,
    }
    # Settings through the Airflow Variable this time; an explicit push base.
    bad_runs, bad_models = root / "bad_runs", root / "bad_models" / "served"
    bad = {"python": PYTHON, "db": str(warehouses["bad"]), "runs_dir": str(bad_runs)}
    bad["push_base"] = str(bad_models)
    jobs = {
        # Logical date 2013-03-04: the run processes the interval [2013-03-03, 2013-03-04).
        "flights": functools.partial(
            _dag_run, _home_copy(airflow_home, root, "flights"), DAG_ID, "2013-03-04", flights, None
        ),
        # Logical date 2024-01-02: the run processes the interval [2024-01-01, 2024-01-02).
        "taxi": functools.partial(
            _dag_run, _home_copy(airflow_home, root, "taxi"), DAG_ID, "2024-01-02", taxi, None
        ),
        "bad": functools.partial(
            _dag_run,
            _home_copy(airflow_home, root, "bad"),
            DAG_ID,
            "2024-01-03",
            None,
            {"ml_pipeline": bad},
        ),
    }
    found = _in_parallel(jobs)
    for name, run in found.items():
        print(f"airflow dags test, {name}: {run['seconds']:.0f} s")
    return {**found, "runs": runs, "models": models, "bad_runs": bad_runs, "bad_models": bad_models}


def _pushed_version(manifest: dict, base: Path) -> Path:
    push = manifest["stages"]["push"]
    assert push["blessed"] is True
    version_dir = Path(push["version_dir"])
    assert version_dir.parent == base and (version_dir / "saved_model.pb").is_file()
    assert [p.name for p in base.iterdir() if not p.name.startswith(".")] == [version_dir.name]
    return version_dir


@pytest.mark.slow
def test_a_local_dag_run_pushes_a_servable_model(dag_runs):
    run = dag_runs["taxi"]
    assert run["completed"].returncode == 0, run["log"][-5000:]
    states = run["states"]
    assert {t: states[t] for t in STAGE_TASKS} == dict.fromkeys(STAGE_TASKS, "success")
    assert states["serving_log_skew_check"] == "skipped"  # no serving logs configured

    # No dataset setting: the pipeline's default dataset, in an unprefixed run directory.
    manifest = json.loads((dag_runs["runs"] / "20240101" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    params = manifest["stages"]["warehouse"]["params"]
    assert (params["start"], params["end"]) == (
        "2024-01-01T00:00:00+00:00",
        "2024-01-02T00:00:00+00:00",
    )
    assert sum(manifest["rows_per_split"].values()) < 3000  # one day of the three
    # The model base follows the dataset: <models_dir>/<the dataset's model name>.
    _pushed_version(manifest, dag_runs["models"] / manifest["dataset"])


@pytest.mark.slow
def test_a_flights_dag_run_pushes_a_flights_model(dag_runs):
    run = dag_runs["flights"]
    assert run["completed"].returncode == 0, run["log"][-5000:]
    states = run["states"]
    assert {t: states[t] for t in STAGE_TASKS} == dict.fromkeys(STAGE_TASKS, "success")
    assert "--dataset flights --run-id flights-20130303 " in run["log"]

    manifest = json.loads((dag_runs["runs"] / "flights-20130303" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["dataset"] == "flights"
    params = manifest["stages"]["warehouse"]["params"]
    assert (params["start"], params["end"]) == (
        "2013-03-01T00:00:00+00:00",  # window_days 3
        "2013-03-04T00:00:00+00:00",
    )
    assert sum(manifest["rows_per_split"].values()) > 2000  # all three days
    _pushed_version(manifest, dag_runs["models"] / "flights")
    # Next to the taxi run: one run directory and one model base each.
    assert {"20240101", "flights-20130303"} <= {p.name for p in dag_runs["runs"].iterdir()}
    assert sorted(p.name for p in dag_runs["models"].iterdir()) == ["flights", "taxi"]


@pytest.mark.slow
def test_a_bad_interval_stops_at_validation(dag_runs):
    run = dag_runs["bad"]
    assert run["completed"].returncode != 0
    log = run["log"]
    assert "AirflowFailException: exit status 3: the pipeline stopped on its verdict" in log
    assert "RUN FAILED: ValidationFailed" in log
    assert "BLOCKING fare" in log  # the anomaly list is in the task log

    states = run["states"]
    assert states["warehouse_split"] == "success"
    assert states["validate"] == "failed"
    for task_id in TASKS[2:]:
        assert states[task_id] == "upstream_failed", (task_id, states)

    run_dir = dag_runs["bad_runs"] / "20240102"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stages"]["validation"]["status"] == "failed"
    assert list(manifest["stages"]) == ["data", "warehouse", "validation"]
    assert any(
        a["severity"] == "BLOCKING" and a["feature"] == "fare" for a in manifest["anomalies"]
    )
    assert not (run_dir / "transform").exists() and not (run_dir / "model").exists()
    assert not dag_runs["bad_models"].parent.exists()
