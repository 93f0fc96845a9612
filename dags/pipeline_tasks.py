"""Settings, command lines and the stage operator behind the ``ml_pipeline`` DAGs.

The DAG file only wires tasks; this module says what each task runs. Nothing here imports the
pipeline (TensorFlow, Beam, DuckDB): every task runs one step of the pipeline's command line,
``python -m pipeline.run --stages ...``, with the *pipeline* environment's Python, because the
TFX stack and Airflow cannot share an environment: in the worker's shell (``launcher: bash``) or
in a pod of the pipeline's container image (``launcher: kubernetes``, for Cloud Composer). The
cncf-kubernetes provider is imported only when a task starts such a pod.

**Which DAGs.** By default one DAG, ``ml_pipeline``, whose ``dataset`` setting picks the dataset
(empty: the pipeline's default dataset; ``--dataset`` is then left off, since this module cannot
import the pipeline to learn that default's name). The environment variable
``ML_PIPELINE_DATASETS`` (comma-separated dataset folder names) replaces it with one DAG per
dataset, ``ml_pipeline_<name>``, each with its own schedule, runs and Variable. It is
read when the DAG folder is parsed (an environment variable costs nothing there, unlike a
Variable, which the DAG processor would fetch on every parse).

**Settings** are resolved when a task renders its command, per DAG run, in this order:

1. the DAG-run params (the trigger form, or ``airflow dags test -c '{...}'``);
2. the DAG's own JSON Variable ``ml_pipeline_<name>`` (per-dataset DAGs only);
3. the JSON Variable ``ml_pipeline``, shared by every DAG (e.g. the gcp and kubernetes settings);
4. the built-in defaults below (target ``local``: DirectRunner, the embedded DuckDB warehouse,
   paths inside the checkout this file lives in).

A Variable can also come from the environment (``AIRFLOW_VAR_ML_PIPELINE``,
``AIRFLOW_VAR_ML_PIPELINE_<NAME>``). A per-dataset DAG's dataset is its name: a ``dataset``
setting that names another one is an error, not an override.

**Run directories.** A run's directory is ``<runs_dir>/<run id>``. The run id is derived from
the data interval (``20240102`` for the day 2024-01-02), so each interval has exactly one run
directory, and prefixed with the dataset when the setting names one (``<name>-20240102``). The
prefix, rather than a folder per dataset under ``runs_dir``, is what keeps datasets apart
everywhere the run id is used, not only on disk: the gcp warehouse names its BigQuery split
tables after the run id (``split_<run id>_train``) in ``bq_dataset``, which DAGs of several
datasets typically share through the common Variable, and two datasets' runs of the same day
would otherwise replace each other's tables. Give each dataset its own ``runs_dir`` if its
``LATEST`` pointer should name its own newest run rather than the newest of all.

**Models.** Blessed models go to ``<models_dir>/<model name>`` (the pipeline appends the model
name, which defaults to the dataset's), so datasets never share a model base; ``push_base``
overrides the whole path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, Variable
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

DAG_ID = "ml_pipeline"
VARIABLE = "ml_pipeline"  # the Variable every DAG reads; per-dataset DAGs add ml_pipeline_<name>
DATASETS_ENV = "ML_PIPELINE_DATASETS"
# Dataset folder names that are also valid in a DAG id, a Variable name and a run id.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
TARGETS = ("local", "gcp")
# Where a task's command runs: in the Airflow worker's shell (which then needs the pipeline
# environment), or in a pod of the pipeline's container image (Cloud Composer: its workers
# cannot host the TFX stack next to Airflow).
LAUNCHERS = ("bash", "kubernetes")
IMAGE_REPO_ROOT = "/opt/pipeline"  # WORKDIR of the Dockerfile
REPO_ROOT = Path(__file__).resolve().parents[1]

# Exit code that BashOperator turns into a skipped task.
SKIP_EXIT_CODE = 99

# Exit statuses of the pipeline's command lines (pipeline/cli.py, pipeline/verdicts.py,
# pipeline/validation/cli.py; copied, not imported: the DAG must not import the pipeline). The
# verdicts fail the task at once; anything else (1: a crash) is retried.
USAGE_EXIT_CODE = 2
VERDICT_EXIT_CODE = 3
NO_REQUEST_LOGS_EXIT_CODE = 4  # pipeline.validation serving-logs only: becomes a skip
# pipeline.run's status when a portable runner's process died after its job finished (see
# pipeline/run.py EXIT_RUNNER_ABORTED): a blind retry could hide a broken worker environment.
RUNNER_ABORTED_EXIT_CODE = 4
PIPELINE_VERDICT_EXIT_CODES: dict[int, str] = {
    USAGE_EXIT_CODE: "pipeline.run rejected its command line (usage error, e.g. an unknown "
    "dataset)",
    VERDICT_EXIT_CODE: "the pipeline stopped on its verdict (blocking anomalies, no training "
    "rows, a parity gap or a missing input: see the RUN FAILED lines above)",
    RUNNER_ABORTED_EXIT_CODE: "a Beam runner process aborted after its job had written the "
    "outputs; nothing was published: read the runner's log before clearing the task",
}
SKEW_CHECK_VERDICT_EXIT_CODES: dict[int, str] = {
    USAGE_EXIT_CODE: "pipeline.validation rejected its command line (usage error, e.g. an unknown "
    "dataset)",
    VERDICT_EXIT_CODE: "blocking anomalies in the serving logs (listed above)",
}

DESCRIPTIONS: dict[str, str] = {
    "dataset": "dataset folder name (pipeline/datasets/<name>; empty: the pipeline's default)",
    "target": "local (DirectRunner, embedded DuckDB) or gcp (BigQuery, Dataflow)",
    "repo_root": "checkout of the pipeline code; tasks run from here",
    "python": "Python of the pipeline environment (the TFX stack)",
    "runs_dir": "parent of the run directories (gcp default: gs://<bucket>/runs)",
    "data_dir": "local: where the datasets' sources and embedded warehouses live",
    "db": "local: DuckDB warehouse file (empty: the dataset's, built in data_dir)",
    "models_dir": "parent of the model bases <models_dir>/<model name> "
    "(gcp default: gs://<bucket>/models)",
    "model_name": "served model name (empty: the dataset's)",
    "push_base": "where blessed models are published (empty: <models_dir>/<model name>)",
    "train_steps": "training steps",
    "window_days": "days of data each run splits and trains on, ending with its interval",
    "sample_fraction": "keep this deterministic hash sample of the rows (empty: all)",
    "duplicates": "exact duplicate rows: keep, drop or block (empty: the dataset's policy)",
    "metric_floor": "bless only if the eval blessing metric beats this (empty: the run's baseline)",
    "tolerance": "bless only if the eval metric is at most this much worse than the served "
    "version's (empty: the pipeline's default)",
    "beam_args": "extra Beam pipeline options, e.g. --direct_num_workers=2",
    "serving_logs": "directory of served request logs for the skew check (empty: skip it)",
    "gcp_project": "gcp: Google Cloud project of the BigQuery and Dataflow jobs",
    "gcp_region": "gcp: Dataflow region",
    "gcp_bucket": "gcp: GCS bucket for Dataflow temp/staging files, splits and run artifacts",
    "bq_dataset": "gcp: BigQuery dataset that receives the per-split tables",
    "bq_location": "gcp: BigQuery location",
    "bq_table": "gcp: source table dataset.table (empty: the dataset definition's table)",
    "gcp_package": "gcp: a pipeline wheel for the Dataflow workers (empty: built from setup.py, "
    "or the image with launcher kubernetes)",
    "launcher": "bash (the worker's shell) or kubernetes (a pod of `image`)",
    "image": "kubernetes: the pipeline's container image (see the Dockerfile)",
    "k8s_namespace": "kubernetes: namespace of the task pods",
    "k8s_conn_id": "kubernetes: Airflow connection to the cluster",
    "k8s_config_file": "kubernetes: kube config (Composer 3: /home/airflow/composer_kube_config)",
}
GCP_REQUIRED = ("gcp_project", "gcp_region", "gcp_bucket", "bq_dataset")
INTEGER_SETTINGS = ("train_steps", "window_days")
NUMBER_SETTINGS = ("sample_fraction", "metric_floor", "tolerance")
# Optional pipeline.run flags: passed only when the setting is given (else the pipeline decides).
OPTIONAL_FLAGS = {
    "push_base": "--push-base",
    "model_name": "--model-name",
    "sample_fraction": "--sample-fraction",
    "duplicates": "--duplicates",
    "metric_floor": "--metric-floor",
    "tolerance": "--tolerance",
}


@dataclasses.dataclass(frozen=True)
class PipelineDag:
    """One DAG of the folder: its id, the dataset it is bound to, the Variables it reads.

    ``dataset`` empty: the DAG's ``dataset`` setting decides. ``variables`` are in increasing
    precedence (the shared Variable first).
    """

    dag_id: str = DAG_ID
    dataset: str = ""
    variables: tuple[str, ...] = (VARIABLE,)


def pipeline_dags(environ: Mapping[str, str] = os.environ) -> list[PipelineDag]:
    """The DAGs to define: one per name in ``ML_PIPELINE_DATASETS``, else ``ml_pipeline``."""
    names = [name.strip() for name in environ.get(DATASETS_ENV, "").split(",") if name.strip()]
    if not names:
        return [PipelineDag()]
    bad = [name for name in names if not DATASET_NAME.fullmatch(name)]
    if bad:
        raise ValueError(
            f"{DATASETS_ENV}: invalid dataset name(s) {bad} (letters, digits and _ only)"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{DATASETS_ENV} names {repeated} more than once")
    return [
        PipelineDag(f"{DAG_ID}_{name}", name, (VARIABLE, f"{VARIABLE}_{name}")) for name in names
    ]


def local_defaults(repo_root: Path = REPO_ROOT) -> dict[str, Any]:
    """Built-in settings: the local target inside the checkout at ``repo_root``."""
    return {
        "dataset": "",
        "target": "local",
        "repo_root": str(repo_root),
        "python": str(repo_root / ".venv" / "bin" / "python"),
        "runs_dir": str(repo_root / "runs"),
        "data_dir": str(repo_root / "data"),
        "db": "",
        "models_dir": str(repo_root / "models"),
        "model_name": "",
        "push_base": "",
        "train_steps": 1000,
        "window_days": 1,
        "sample_fraction": None,
        "duplicates": "",
        "metric_floor": None,
        "tolerance": None,
        "beam_args": "",
        "serving_logs": "",
        "gcp_project": "",
        "gcp_region": "",
        "gcp_bucket": "",
        "bq_dataset": "",
        "bq_location": "US",
        "bq_table": "",
        "gcp_package": "",
        "launcher": "bash",
        "image": "",
        "k8s_namespace": "composer-user-workloads",
        "k8s_conn_id": "kubernetes_default",
        "k8s_config_file": "",
    }


def dag_params(pipeline: PipelineDag) -> dict[str, Param]:
    """One optional param per setting; unset (None) means: a Variable's value or the default.

    A DAG bound to a dataset has no ``dataset`` param: its dataset is not a run's choice.
    """
    params = {}
    for name, description in DESCRIPTIONS.items():
        if name == "dataset" and pipeline.dataset:
            continue
        kind = "string"
        if name in INTEGER_SETTINGS:
            kind = "integer"
        elif name in NUMBER_SETTINGS:
            kind = "number"
        schema: dict[str, Any] = {"type": ["null", kind]}
        if name == "target":
            schema["enum"] = [None, *TARGETS]
        if name == "launcher":
            schema["enum"] = [None, *LAUNCHERS]
        params[name] = Param(None, description=description, **schema)
    return params


def resolve_settings(
    params: Mapping[str, Any] | None,
    variables: Mapping[str, Mapping[str, Any] | None],
    dataset: str = "",
) -> dict[str, Any]:
    """Defaults < ``variables`` (by name, in increasing precedence) < params; gcp paths default
    into the bucket; ``dataset`` (a DAG bound to one) is fixed. Raises on bad settings."""
    settings = local_defaults()
    for name, values in variables.items():
        unknown = sorted(set(values or {}) - set(settings))
        if unknown:
            raise ValueError(
                f"unknown key(s) {unknown} in Variable {name}; known: {sorted(settings)}"
            )
    explicit: set[str] = set()
    for values in (*variables.values(), params):  # params may also carry unrelated run conf
        chosen = {k: v for k, v in (values or {}).items() if k in settings and v not in (None, "")}
        settings.update(chosen)
        explicit.update(chosen)
    if dataset:
        if settings["dataset"] not in ("", dataset):
            raise ValueError(
                f"this DAG runs the dataset {dataset!r}; the setting dataset "
                f"{settings['dataset']!r} contradicts it (use that dataset's own DAG)"
            )
        settings["dataset"] = dataset
    _check_values(settings)
    _launcher_defaults(settings, explicit)
    if settings["target"] == "gcp":
        missing = [name for name in GCP_REQUIRED if not settings[name]]
        if missing:
            raise ValueError(f"target gcp needs the setting(s) {missing} (params or Variable)")
        bucket = f"gs://{settings['gcp_bucket']}"
        for name, folder in (("runs_dir", "runs"), ("models_dir", "models")):
            if name not in explicit:
                settings[name] = f"{bucket}/{folder}"
    return settings


def _check_values(settings: dict[str, Any]) -> None:
    """Types and ranges of the settings, in place (integers and numbers converted)."""
    if settings["dataset"] and not DATASET_NAME.fullmatch(settings["dataset"]):
        raise ValueError(f"invalid dataset name {settings['dataset']!r} (letters, digits, _)")
    if settings["target"] not in TARGETS:
        raise ValueError(f"unknown target {settings['target']!r}; one of {TARGETS}")
    for name in INTEGER_SETTINGS:
        settings[name] = int(settings[name])
    for name in NUMBER_SETTINGS:
        if settings[name] is not None:
            settings[name] = float(settings[name])
    if settings["window_days"] < 1:
        raise ValueError(f"window_days must be at least 1, got {settings['window_days']}")
    if settings["launcher"] not in LAUNCHERS:
        raise ValueError(f"unknown launcher {settings['launcher']!r}; one of {LAUNCHERS}")


def _launcher_defaults(settings: dict[str, Any], explicit: set[str]) -> None:
    """Inside the image the pipeline lives at the Dockerfile's WORKDIR, on its default Python."""
    if settings["launcher"] != "kubernetes":
        return
    if not settings["image"]:
        raise ValueError("launcher kubernetes needs the setting 'image' (params or Variable)")
    if "repo_root" not in explicit:
        settings["repo_root"] = IMAGE_REPO_ROOT
    if "python" not in explicit:
        settings["python"] = "python"


def interval_run(
    start: dt.datetime, end: dt.datetime, window_days: int = 1, dataset: str = ""
) -> dict[str, str]:
    """Run id of the data interval [start, end), and the ``--start``/``--end`` of its data.

    The data is a rolling window: the ``window_days`` days that end with the interval (never less
    than the interval itself), so a daily run can train on the last week. The run id names the
    interval alone (one run directory per interval, whatever the window), after the dataset when
    one is named (see the module docstring).
    """
    start, end = _utc(start), _utc(end)
    data_start = min(start, end - dt.timedelta(days=window_days))
    midnight = dt.time(0, tzinfo=dt.UTC)
    whole_days = start.timetz() == midnight and end.timetz() == midnight
    if whole_days:
        bounds = data_start.strftime("%Y-%m-%d"), end.strftime("%Y-%m-%d")
        one_day = end - start == dt.timedelta(days=1)
        run_id = start.strftime("%Y%m%d") + ("" if one_day else end.strftime("-%Y%m%d"))
    else:
        bounds = data_start.isoformat(), end.isoformat()
        run_id = start.strftime("%Y%m%dT%H%M%S") + end.strftime("-%Y%m%dT%H%M%S")
    if dataset:
        run_id = f"{dataset}-{run_id}"
    return {"run_id": run_id, "start": bounds[0], "end": bounds[1]}


def _utc(moment: dt.datetime) -> dt.datetime:
    """A plain aware UTC datetime (Airflow hands over pendulum ones; naive ones mean UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(moment.timestamp(), dt.UTC)


def _join(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def dataset_args(settings: Mapping[str, Any]) -> list[str]:
    """``--dataset NAME``, or nothing: the pipeline's own default dataset."""
    return ["--dataset", settings["dataset"]] if settings["dataset"] else []


def beam_args(settings: Mapping[str, Any]) -> list[str]:
    """Runner options: DirectRunner locally, Dataflow with the pipeline package on gcp."""
    extra = shlex.split(settings["beam_args"])
    if settings["target"] == "local":
        return ["--runner", "DirectRunner", *extra]
    bucket = f"gs://{settings['gcp_bucket']}"
    # The workers get the pipeline package: a prebuilt wheel, the pipeline's image (which the
    # task pods run too), or a package Beam builds from the checkout's setup.py.
    if settings["gcp_package"]:
        package = ["--extra_package", settings["gcp_package"]]
    elif settings["launcher"] == "kubernetes":
        package = ["--sdk_container_image", settings["image"]]
    else:
        package = ["--setup_file", f"{settings['repo_root']}/setup.py"]
    return [
        "--runner", "DataflowRunner",
        "--project", settings["gcp_project"],
        "--region", settings["gcp_region"],
        "--temp_location", f"{bucket}/tmp",
        "--staging_location", f"{bucket}/staging",
        *package,
        *extra,
    ]  # fmt: skip


def run_dir(settings: Mapping[str, Any], interval: Mapping[str, str]) -> str:
    return f"{settings['runs_dir'].rstrip('/')}/{interval['run_id']}"


def stage_command(
    settings: Mapping[str, Any], interval: Mapping[str, str], stages: tuple[str, ...]
) -> str:
    """The bash command of one task: ``pipeline.run`` for ``stages`` in the interval's run dir.

    The first task of a run (``data,warehouse``) passes ``--restart``: whatever an earlier attempt
    of the interval left is deleted first, so a rerun never mixes artifacts of two runs. On gcp
    the warehouse SQL runs as BigQuery jobs that export the splits into the run directory. Every
    task gets the same flags, so each stage sees the run the way the first one did.
    """
    command = [
        settings["python"], "-m", "pipeline.run",
        *dataset_args(settings),
        "--run-id", interval["run_id"],
        "--stages", ",".join(stages),
        "--start", interval["start"],
        "--end", interval["end"],
        "--runs-dir", settings["runs_dir"],
        "--models-dir", settings["models_dir"],
        "--train-steps", str(settings["train_steps"]),
    ]  # fmt: skip
    for name, flag in OPTIONAL_FLAGS.items():
        if settings[name] not in (None, ""):
            command += [flag, str(settings[name])]
    if stages[0] == "data":
        command.append("--restart")
    if settings["target"] == "local":
        command += ["--data-dir", settings["data_dir"]]
        if settings["db"]:
            command += ["--db", settings["db"]]
    else:
        command += [
            "--warehouse-engine", "bigquery",
            "--bq-project", settings["gcp_project"],
            "--bq-dataset", settings["bq_dataset"],
            "--bq-location", settings["bq_location"],
        ]  # fmt: skip
        if settings["bq_table"]:
            command += ["--table", settings["bq_table"]]
    return _join([*command, *beam_args(settings)])


def skew_check_command(settings: Mapping[str, Any], interval: Mapping[str, str]) -> str:
    """Serving-log skew check against the run's training statistics; skipped without logs."""
    logs = settings["serving_logs"]
    if not logs:
        return f"echo 'no serving_logs setting: no request logs to check'; exit {SKIP_EXIT_CODE}"
    directory = run_dir(settings, interval)
    command = _join(
        [
            settings["python"], "-m", "pipeline.validation", "serving-logs",
            *dataset_args(settings),
            "--logs", logs,
            "--train-stats", f"{directory}/statistics/train.pb",
            "--report", f"{directory}/serving_skew.json",
            *beam_args(settings),
        ]
    )  # fmt: skip
    missing = ""
    if "://" not in logs:
        missing = (
            f"if [ ! -d {shlex.quote(logs)} ]; then "
            f"echo 'no request logs at {logs}'; exit {SKIP_EXIT_CODE}; fi; "
        )
    return (
        f"{missing}{command}; status=$?; "
        f"if [ $status -eq {NO_REQUEST_LOGS_EXIT_CODE} ]; then "
        f"echo 'no request logs in {logs}'; exit {SKIP_EXIT_CODE}; fi; "
        "exit $status"
    )


# ---- Jinja macros: the tasks' templates call these with the run's context ---------------------


def settings_for(pipeline: PipelineDag, context: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of the DAG run in ``context`` (its params, then ``pipeline``'s Variables)."""
    variables = {
        name: Variable.get(name, default=None, deserialize_json=True) for name in pipeline.variables
    }
    return resolve_settings(context.get("params"), variables, pipeline.dataset)


def _interval_from(context: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, str]:
    start, end = context["data_interval_start"], context["data_interval_end"]
    return interval_run(start, end, settings["window_days"], settings["dataset"])


def task_macros(pipeline: PipelineDag) -> dict[str, Callable[..., str]]:
    """The DAG's ``user_defined_macros``: command lines and settings of ``pipeline``'s runs."""

    @jinja2.pass_context
    def pipeline_stage_command(context: Mapping[str, Any], stages: str) -> str:
        settings = settings_for(pipeline, context)
        interval = _interval_from(context, settings)
        return stage_command(settings, interval, tuple(stages.split(",")))

    @jinja2.pass_context
    def pipeline_skew_check_command(context: Mapping[str, Any]) -> str:
        settings = settings_for(pipeline, context)
        return skew_check_command(settings, _interval_from(context, settings))

    @jinja2.pass_context
    def pipeline_setting(context: Mapping[str, Any], name: str) -> str:
        return str(settings_for(pipeline, context)[name])

    return {
        "pipeline_stage_command": pipeline_stage_command,
        "pipeline_skew_check_command": pipeline_skew_check_command,
        "pipeline_setting": pipeline_setting,
    }


# The pipeline's own process settings (see the Makefile), for every task.
TASK_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}


class VerdictAwareBashOperator(BashOperator):
    """A BashOperator that fails without retry when the command exits with a *verdict*.

    The pipeline's commands give each outcome its own exit status. Those in
    :attr:`verdict_exit_codes` (blocking anomalies, no training rows, a parity gap, a rejected
    command line) would only repeat on a retry, so the task fails at once with the reason. Other
    failures (a crash, a killed worker, a Dataflow hiccup) keep the retryable error, and
    :data:`SKIP_EXIT_CODE` skips the task. With the setting ``launcher: kubernetes`` the same
    command runs in a pod of the pipeline's image instead of the worker's shell.
    """

    verdict_exit_codes: Mapping[int, str] = {}

    def __init__(self, *, pipeline: PipelineDag, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline

    def execute(self, context: Any) -> Any:
        self.subprocess_hook.sub_process = None  # no exit status from an earlier call
        self._pod: Any = None
        settings = settings_for(self.pipeline, context)
        try:
            if settings["launcher"] == "kubernetes":
                self._pod = stage_pod(
                    self.pipeline, self.task_id, self.bash_command, settings, self.skip_on_exit_code
                )
                return self._pod.execute(context)
            return super().execute(context)
        except (AirflowSkipException, AirflowFailException):
            raise
        except Exception:
            code = self._exit_code()
            if code in self.verdict_exit_codes:
                raise AirflowFailException(
                    f"exit status {code}: {self.verdict_exit_codes[code]}; not retried"
                ) from None
            raise

    def _exit_code(self) -> int | None:
        """Exit status of the command just run; None if it never started (e.g. a bad cwd)."""
        if self._pod is not None:
            return self._pod.exit_code
        process = self.subprocess_hook.sub_process
        return None if process is None else process.returncode


class PipelineStageOperator(VerdictAwareBashOperator):
    """Runs pipeline stages with ``python -m pipeline.run --stages ...``."""

    verdict_exit_codes = PIPELINE_VERDICT_EXIT_CODES

    def __init__(self, *, stages: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stages = tuple(stages)


class SkewCheckOperator(VerdictAwareBashOperator):
    """Runs the serving-log skew check (``python -m pipeline.validation serving-logs``)."""

    verdict_exit_codes = SKEW_CHECK_VERDICT_EXIT_CODES


# ---- the kubernetes launcher ------------------------------------------------------------------


def base_container_exit_code(remote_pod: Any, container: str) -> int | None:
    """Exit status of ``container`` in a finished pod (a ``V1Pod``); None if it did not end."""
    status = getattr(remote_pod, "status", None)
    for container_status in (status.container_statuses if status else None) or []:
        if container_status.name == container and container_status.state:
            terminated = container_status.state.terminated
            return None if terminated is None else terminated.exit_code
    return None


@functools.cache
def _stage_pod_class() -> type:
    """KubernetesPodOperator that keeps its container's exit status (imported only when used)."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    class StagePodOperator(KubernetesPodOperator):
        exit_code: int | None = None

        def cleanup(self, pod: Any, remote_pod: Any, *args: Any, **kwargs: Any) -> None:
            self.exit_code = base_container_exit_code(remote_pod, self.base_container_name)
            return super().cleanup(pod, remote_pod, *args, **kwargs)

    return StagePodOperator


def _label_value(text: str) -> str:
    """A Kubernetes label value: at most 63 of [a-z0-9-], starting and ending alphanumeric."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower())[:63].strip("-")


def stage_pod(
    pipeline: PipelineDag,
    task_id: str,
    command: str,
    settings: Mapping[str, Any],
    skip_on_exit_code: Any = (),
) -> Any:
    """The pod that runs a task's rendered ``command`` in the pipeline's image.

    Named after the DAG and the task (the operator adds a random suffix and keeps the name under
    Kubernetes' 63 characters); labelled with the dataset when the settings name one.
    """
    labels = {"app": "ml-pipeline", "dag": _label_value(pipeline.dag_id)}
    labels["task"] = _label_value(task_id)
    if settings["dataset"]:
        labels["dataset"] = _label_value(settings["dataset"])
    return _stage_pod_class()(
        task_id=f"{task_id}_pod",
        name=f"{pipeline.dag_id}-{task_id}".replace("_", "-"),
        image=settings["image"],
        cmds=["bash", "-c"],
        arguments=[f"cd {shlex.quote(settings['repo_root'])} && {command}"],
        env_vars=dict(TASK_ENV),
        labels=labels,
        namespace=settings["k8s_namespace"],
        kubernetes_conn_id=settings["k8s_conn_id"] or None,
        config_file=settings["k8s_config_file"] or None,
        get_logs=True,
        on_finish_action="delete_pod",
        startup_timeout_seconds=600,
        skip_on_exit_code=list(skip_on_exit_code or ()),
        do_xcom_push=False,
    )
