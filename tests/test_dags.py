"""The Airflow DAG ``dags/taxi_pipeline.py``, checked in the orchestrator environment.

Airflow cannot share the pipeline environment, so these tests drive ``.venv-airflow`` (made by
``make airflow-setup``) through subprocesses with a throwaway AIRFLOW_HOME: a parse of the DAG
folder (import errors, parse time, no heavy imports), the DAG's structure and its rendered
commands for both targets, and real ``airflow dags test`` runs of the local target over a small
synthetic warehouse: one interval that ends with a pushed, servable model, and one with bad data
(fares x100) that stops at validation.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO_ROOT, subprocess_env

AIRFLOW_PYTHON = REPO_ROOT / ".venv-airflow" / "bin" / "python"
AIRFLOW = REPO_ROOT / ".venv-airflow" / "bin" / "airflow"
DAGS = REPO_ROOT / "dags"
DAG_ID = "taxi_pipeline"
STAGE_TASKS = ["warehouse_split", "validate", "transform", "train", "evaluate_and_bless", "push"]
TASKS = [*STAGE_TASKS, "serving_log_skew_check"]
TASK_STAGES = {
    "warehouse_split": "data,warehouse",
    "validate": "validation",
    "transform": "transform",
    "train": "train,export",
    "evaluate_and_bless": "parity,predict",
    "push": "push",
}
GCP = {
    "target": "gcp",
    "gcp_project": "taxi-prod",
    "gcp_region": "europe-west4",
    "gcp_bucket": "taxi-artifacts",
    "bq_dataset": "taxi_work",
}
WHEEL = "/opt/taxi/dist/taxi_preprocessing_pipeline-0.1.0-py3-none-any.whl"

pytestmark = pytest.mark.skipif(
    not AIRFLOW.exists(), reason="no Airflow environment: run `make airflow-setup`"
)

# Parses the DAG folder the way the DAG processor does (bundle path on sys.path), then renders
# every task's templates for one data interval with the settings in argv[1] (as DAG-run params)
# and AIRFLOW_VAR_TAXI_PIPELINE (as the Variable), and prints what it found as JSON.
INSPECT = r"""
import datetime as dt, json, sys
from pathlib import Path

dags, params = Path(sys.argv[1]), json.loads(sys.argv[2])
from airflow.dag_processing.dagbag import BundleDagBag

bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
heavy = sorted(
    m for m in sys.modules if m.split(".")[0] in ("tensorflow", "apache_beam", "pipeline", "tfx")
)
dag = bag.dags["taxi_pipeline"]
start = dt.datetime(2024, 3, 5, tzinfo=dt.UTC)
context = {
    "params": {**dag.params.dump(), **params},
    "data_interval_start": start,
    "data_interval_end": start + dt.timedelta(days=1),
}
tasks = {}
for task in dag.tasks:
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    tasks[task.task_id] = {
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
print(json.dumps({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "parse_seconds": {Path(s.file).name: s.duration.total_seconds() for s in bag.dagbag_stats},
    "heavy_modules": heavy,
    "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "timetable": type(dag.timetable).__name__,
    "timetable_expression": dag.timetable.expression,
    "params": sorted(dag.params.keys()),
    "tasks": tasks,
}))
"""


def _airflow_env(home: Path, variable: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    )
    if variable is not None:
        env["AIRFLOW_VAR_TAXI_PIPELINE"] = json.dumps(variable)
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


def _render(
    home: Path, params: dict, variable: dict | None = None, script: str = INSPECT
) -> subprocess.CompletedProcess:
    """Run ``script`` (default :data:`INSPECT`) on the DAG folder in the Airflow environment."""
    return subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", script, str(DAGS), json.dumps(params)],
        env=_airflow_env(home, variable or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _inspect(home: Path, params: dict, variable: dict | None = None) -> dict:
    completed = _render(home, params, variable)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def local_dag(airflow_home) -> dict:
    return _inspect(airflow_home, params={"train_steps": 7})


@pytest.fixture(scope="module")
def gcp_dag(airflow_home) -> dict:
    """The gcp target set through the Variable, as on Cloud Composer."""
    return _inspect(airflow_home, params={}, variable=GCP)


def test_the_dag_parses_fast_without_errors_or_heavy_imports(local_dag, airflow_home):
    assert local_dag["import_errors"] == {}
    assert local_dag["parse_seconds"]["taxi_pipeline.py"] < 2.0
    assert local_dag["heavy_modules"] == []
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


def test_schedule_and_run_policy(local_dag):
    assert local_dag["timetable"] == "CronDataIntervalTimetable"
    assert local_dag["timetable_expression"] == "0 0 * * *"  # @daily
    assert local_dag["catchup"] is False
    assert local_dag["max_active_runs"] == 1
    for task in local_dag["tasks"].values():
        assert task["retries"] == 2 and task["retry_exponential_backoff"] == 2.0
        assert task["retry_delay"] == 120 and task["execution_timeout"] > 0


@pytest.mark.parametrize("target", ["local", "gcp"])
def test_tasks_dependencies_and_operators(target, local_dag, gcp_dag):
    tasks = (local_dag if target == "local" else gcp_dag)["tasks"]
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


def test_local_commands_carry_the_interval_and_the_direct_runner(local_dag):
    tasks = local_dag["tasks"]
    python = str(REPO_ROOT / ".venv" / "bin" / "python")
    for task_id in STAGE_TASKS:
        command = tasks[task_id]["bash_command"]
        assert f"{python} -m pipeline.run --run-id 20240305 --stages {TASK_STAGES[task_id]} " in (
            command
        )
        assert "--start 2024-03-05 --end 2024-03-06" in command
        assert f"--runs-dir {REPO_ROOT / 'runs'}" in command
        assert f"--push-base {REPO_ROOT / 'models' / 'taxi'}" in command
        assert "--train-steps 7" in command  # a DAG-run param
        assert command.endswith("--runner DirectRunner")
        assert "DataflowRunner" not in command
        assert tasks[task_id]["cwd"] == str(REPO_ROOT)
        assert tasks[task_id]["env"]["TF_USE_LEGACY_KERAS"] == "1"
        # Only the first task starts the interval's run directory afresh.
        assert ("--restart" in command.split()) == (task_id == "warehouse_split")
    assert "no serving_logs setting" in tasks["serving_log_skew_check"]["bash_command"]


def test_a_rolling_window_widens_the_data_but_not_the_run(airflow_home):
    """``window_days: 7``: the run of 2024-03-05 splits and trains on 2024-02-28 .. 03-05."""
    tasks = _inspect(airflow_home, {"window_days": 7})["tasks"]
    for task_id in STAGE_TASKS:
        command = tasks[task_id]["bash_command"]
        assert "--run-id 20240305 " in command  # one run directory per interval
        assert "--start 2024-02-28 --end 2024-03-06" in command
    completed = _render(airflow_home, {"window_days": 0}, {})
    assert completed.returncode != 0
    assert "window_days must be at least 1" in completed.stderr


def test_gcp_commands_run_bigquery_and_dataflow(gcp_dag):
    tasks = gcp_dag["tasks"]
    split = tasks["warehouse_split"]["bash_command"]
    assert "-m pipeline.run --run-id 20240305 --stages data,warehouse " in split
    assert "--restart --warehouse-engine bigquery --bq-project taxi-prod " in split
    assert "--bq-dataset taxi_work --bq-location US" in split
    assert "--data-dir" not in split and "--db" not in split
    dataflow = (
        "--runner DataflowRunner --project taxi-prod --region europe-west4 "
        "--temp_location gs://taxi-artifacts/tmp --staging_location gs://taxi-artifacts/staging "
        f"--setup_file {REPO_ROOT}/setup.py"
    )
    for task_id in STAGE_TASKS:
        command = tasks[task_id]["bash_command"]
        assert f"--run-id 20240305 --stages {TASK_STAGES[task_id]} " in command
        assert "--start 2024-03-05 --end 2024-03-06" in command
        assert "--runs-dir gs://taxi-artifacts/runs" in command
        assert "--push-base gs://taxi-artifacts/models/taxi" in command
        assert command.endswith(dataflow)
        assert "DirectRunner" not in command
        assert ("--restart" in command.split()) == (task_id == "warehouse_split")
    skew = tasks["serving_log_skew_check"]["bash_command"]
    assert "no serving_logs setting" in skew  # no logs configured: skipped


def test_gcp_ships_a_prebuilt_wheel_and_checks_gcs_request_logs(airflow_home):
    logs = "gs://taxi-artifacts/request-logs"
    tasks = _inspect(airflow_home, {"gcp_package": WHEEL, "serving_logs": logs}, GCP)["tasks"]
    assert tasks["transform"]["bash_command"].endswith(f"--extra_package {WHEEL}")
    skew = tasks["serving_log_skew_check"]["bash_command"]
    assert f"-m pipeline.validate serving-logs --logs {logs} " in skew
    assert "--train-stats gs://taxi-artifacts/runs/20240305/statistics/train.pb" in skew
    assert "--runner DataflowRunner" in skew


def test_gcp_target_without_its_settings_fails_to_render(airflow_home):
    completed = _render(airflow_home, {"target": "gcp"}, {})
    assert completed.returncode != 0
    assert "target gcp needs the setting(s)" in completed.stderr


# Renders one task with the kubernetes launcher and prints the pod it would start (the
# KubernetesPodOperator's own pod request, as sent to the cluster) and exit-status readings.
POD_SPEC = r"""
import datetime as dt, json, sys
from pathlib import Path

dags, params = Path(sys.argv[1]), json.loads(sys.argv[2])
from airflow.dag_processing.dagbag import BundleDagBag
from kubernetes.client import models as k8s

bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
import taxi_tasks

dag = bag.dags["taxi_pipeline"]
start = dt.datetime(2024, 3, 5, tzinfo=dt.UTC)
context = {
    "params": {**dag.params.dump(), **params},
    "data_interval_start": start,
    "data_interval_end": start + dt.timedelta(days=1),
}
task = dag.get_task("transform")
task.render_template_fields(context, jinja_env=dag.get_template_env())
settings = taxi_tasks._settings_from(context)
operator = taxi_tasks.stage_pod(task.task_id, task.bash_command, settings, task.skip_on_exit_code)
pod = operator.build_pod_request_obj()
container = pod.spec.containers[0]

def finished(code):
    state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=code))
    status = k8s.V1ContainerStatus(
        name="base", state=state, image="i", image_id="", ready=False, restart_count=0
    )
    return k8s.V1Pod(status=k8s.V1PodStatus(container_statuses=[status]))

print(json.dumps({
    "class": type(operator).__name__,
    "bases": [c.__name__ for c in type(operator).__mro__],
    "namespace": pod.metadata.namespace,
    "labels": pod.metadata.labels,
    "image": container.image,
    "command": container.command,
    "args": container.args,
    "env": {e.name: e.value for e in container.env or []},
    "skip_on_exit_code": sorted(operator.skip_on_exit_code),
    "config_file": operator.config_file,
    "exit_codes": [
        taxi_tasks.base_container_exit_code(finished(3), "base"),
        taxi_tasks.base_container_exit_code(finished(0), "base"),
        taxi_tasks.base_container_exit_code(k8s.V1Pod(), "base"),
    ],
}))
"""
IMAGE = "europe-west4-docker.pkg.dev/taxi-prod/ml/taxi-pipeline:1.0"


KUBE_CONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: not-used}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_kubernetes_launcher_runs_the_same_command_in_the_pipeline_image(
    airflow_home, tmp_path
):
    # The pod request is built up to the wire; no cluster is contacted (none is reachable here).
    kube_config = tmp_path / "kube_config"
    kube_config.write_text(KUBE_CONFIG)
    settings = {"launcher": "kubernetes", "image": IMAGE, "k8s_config_file": str(kube_config)}
    completed = _render(airflow_home, settings, GCP, script=POD_SPEC)
    assert completed.returncode == 0, completed.stderr[-3000:]
    pod = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "KubernetesPodOperator" in pod["bases"]
    assert pod["image"] == IMAGE
    assert pod["namespace"] == "composer-user-workloads"
    assert pod["config_file"] == str(kube_config)
    assert pod["labels"]["app"] == "taxi-pipeline" and pod["labels"]["task"] == "transform"
    assert pod["command"] == ["bash", "-c"]
    (script,) = pod["args"]
    # Inside the image: its WORKDIR and default Python; Dataflow workers get the same image.
    assert script.startswith("cd /opt/taxi && python -m pipeline.run --run-id 20240305 ")
    assert "--stages transform " in script and "--runs-dir gs://taxi-artifacts/runs" in script
    assert script.endswith(f"--sdk_container_image {IMAGE}")
    assert "--setup_file" not in script
    assert pod["env"]["TF_USE_LEGACY_KERAS"] == "1"
    assert pod["skip_on_exit_code"] == [99]
    assert pod["exit_codes"] == [3, 0, None]  # what decides verdict (no retry) vs crash


def test_the_kubernetes_launcher_needs_an_image(airflow_home):
    completed = _render(airflow_home, {"launcher": "kubernetes"}, GCP)
    assert completed.returncode != 0
    assert "launcher kubernetes needs the setting 'image'" in completed.stderr


# ---- the skew check's exit statuses ------------------------------------------------------------

STUB_VALIDATE = """#!/bin/sh
# Stands in for the pipeline's Python: answers 'python -m pipeline.validate serving-logs ...'.
echo "stub called with: $*"
echo "1 blocking anomalies (SERVING):" >&2
echo "  fare [skew] COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH: too far from training" >&2
exit {status}
"""


def _task_state(
    home: Path, task_id: str, stub: Path, logical_date: str, **params: str
) -> tuple[str, str]:
    """Run one DAG task through Airflow's task runner (``airflow tasks test``) with ``stub`` as
    the pipeline's Python; the state the runner gives the task, and its log."""
    params = {"python": str(stub), **params}
    command = [str(AIRFLOW), "tasks", "test", DAG_ID, task_id, logical_date]
    completed = subprocess.run(
        [*command, "-t", json.dumps(params)],
        env=_airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = completed.stdout + completed.stderr
    states = re.findall(r"Task instance state updated .*?new_state=(\w+)", log)
    assert len(states) == 1, log[-5000:]
    return states[0], log


@pytest.fixture(scope="module")
def skew_check_runs(airflow_home, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """The task's state and log for each outcome of ``pipeline.validate serving-logs``, by name.

    The exit statuses come from the CLI itself, so a change there that the DAG does not follow
    fails here.
    """
    from pipeline.validation import cli

    root = tmp_path_factory.mktemp("skew_check")
    logs = root / "logs"
    logs.mkdir()
    statuses = {
        "clean": 0,
        "crash": cli.EXIT_CRASH,
        "no_logs": cli.EXIT_NO_REQUEST_LOGS,
        "blocking": cli.EXIT_BLOCKING_ANOMALIES,
        "usage": cli.EXIT_USAGE,
    }
    runs = {}
    for day, (name, status) in enumerate(statuses.items(), start=10):
        stub = root / f"python_{name}"
        stub.write_text(STUB_VALIDATE.format(status=status))
        stub.chmod(0o755)
        runs[name] = _task_state(
            airflow_home, "serving_log_skew_check", stub, f"2024-02-{day}", serving_logs=str(logs)
        )
    return runs


def test_skew_check_blocking_anomalies_fail_without_retry(skew_check_runs):
    state, log = skew_check_runs["blocking"]
    assert state == "failed"  # not up_for_retry, although the task has retries=2
    assert "AirflowFailException: exit status 3: blocking anomalies in the serving logs" in log
    assert "stub called with: -m pipeline.validate serving-logs --logs" in log
    assert "fare [skew] COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in log  # the list is in the log


def test_skew_check_usage_error_fails_without_retry(skew_check_runs):
    state, log = skew_check_runs["usage"]
    assert state == "failed"
    assert "AirflowFailException: exit status 64:" in log


def test_skew_check_crash_is_retried(skew_check_runs):
    state, log = skew_check_runs["crash"]
    assert state == "up_for_retry"
    assert "AirflowFailException" not in log
    assert "non-zero exit code 1" in log


def test_skew_check_without_request_logs_is_skipped(skew_check_runs):
    state, log = skew_check_runs["no_logs"]
    assert state == "skipped"
    assert "no request logs in" in log


def test_skew_check_passes_on_clean_logs(skew_check_runs):
    assert skew_check_runs["clean"][0] == "success"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(3, "failed"), (2, "failed"), (1, "up_for_retry"), (0, "success")],
    ids=["verdict", "usage", "crash", "done"],
)
def test_stage_task_fails_at_once_on_a_verdict_and_retries_a_crash(
    airflow_home, tmp_path, status, expected
):
    """``pipeline.run``'s exit statuses (from the module itself) decide retry or not."""
    from pipeline.run import EXIT_VERDICT

    assert EXIT_VERDICT == 3
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "stub called with: $*"\nexit {status}\n')
    stub.chmod(0o755)
    day = {3: 20, 2: 21, 1: 22, 0: 23}[status]
    state, log = _task_state(airflow_home, "transform", stub, f"2024-02-{day}")
    assert state == expected, log[-3000:]
    assert "stub called with: -m pipeline.run --run-id" in log
    assert ("AirflowFailException" in log) == (expected == "failed")


# ---- real runs of the local target ------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory) -> dict[str, Path]:
    """3,000 synthetic trips over 2024-01-01..03, and a copy whose fares are x100."""
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
    return {"good": good, "bad": bad}


def _dags_test(home: Path, logical_date: str, conf: dict | None, variable: dict | None):
    command = [str(AIRFLOW), "dags", "test", DAG_ID, logical_date]
    if conf:
        command += ["-c", json.dumps(conf)]
    return subprocess.run(
        command,
        env=_airflow_env(home, variable),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _task_states(home: Path, logical_date: str) -> dict[str, str]:
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
        r for r in cli("dags", "list-runs", DAG_ID) if r["logical_date"].startswith(logical_date)
    ]
    assert len(runs) == 1, runs
    states = cli("tasks", "states-for-dag-run", DAG_ID, runs[0]["run_id"])
    return {row["task_id"]: row["state"] for row in states}


@pytest.mark.slow
def test_a_local_dag_run_pushes_a_servable_model(airflow_home, warehouses, tmp_path):
    runs, models = tmp_path / "runs", tmp_path / "models" / "taxi"
    conf = {
        "db": str(warehouses["good"]),
        "runs_dir": str(runs),
        "push_base": str(models),
        "train_steps": 100,
    }
    # Logical date 2024-01-02: the run processes the data interval [2024-01-01, 2024-01-02).
    completed = _dags_test(airflow_home, "2024-01-02", conf, variable=None)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-5000:]

    states = _task_states(airflow_home, "2024-01-02")
    assert {t: states[t] for t in STAGE_TASKS} == dict.fromkeys(STAGE_TASKS, "success")
    assert states["serving_log_skew_check"] == "skipped"  # no serving logs configured

    manifest = json.loads((runs / "20240101" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    params = manifest["stages"]["warehouse"]["params"]
    assert (params["start"], params["end"]) == (
        "2024-01-01T00:00:00+00:00",
        "2024-01-02T00:00:00+00:00",
    )
    assert sum(manifest["rows_per_split"].values()) < 3000  # one day of the three
    push = manifest["stages"]["push"]
    assert push["blessed"] is True
    version_dir = Path(push["version_dir"])
    assert version_dir.parent == models and (version_dir / "saved_model.pb").is_file()
    assert [p.name for p in models.iterdir() if not p.name.startswith(".")] == [version_dir.name]


@pytest.mark.slow
def test_a_bad_interval_stops_at_validation(airflow_home, warehouses, tmp_path):
    runs, models = tmp_path / "runs", tmp_path / "models" / "taxi"
    # Settings through the Airflow Variable this time.
    variable = {"db": str(warehouses["bad"]), "runs_dir": str(runs), "push_base": str(models)}
    completed = _dags_test(airflow_home, "2024-01-03", conf=None, variable=variable)
    assert completed.returncode != 0
    log = completed.stdout + completed.stderr
    assert "AirflowFailException: exit status 3: the pipeline stopped on its verdict" in log
    assert "RUN FAILED: ValidationFailed" in log
    assert "BLOCKING fare" in log  # the anomaly list is in the task log

    states = _task_states(airflow_home, "2024-01-03")
    assert states["warehouse_split"] == "success"
    assert states["validate"] == "failed"
    for task_id in TASKS[2:]:
        assert states[task_id] == "upstream_failed", (task_id, states)

    run_dir = runs / "20240102"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stages"]["validation"]["status"] == "failed"
    assert list(manifest["stages"]) == ["data", "warehouse", "validation"]
    assert any(
        a["severity"] == "BLOCKING" and a["feature"] == "fare" for a in manifest["anomalies"]
    )
    assert not (run_dir / "transform").exists() and not (run_dir / "model").exists()
    assert not models.exists()
