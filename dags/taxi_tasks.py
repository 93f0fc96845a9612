"""Settings, command lines and the stage operator behind the ``taxi_pipeline`` DAG.

The DAG file only wires tasks; this module says what each task runs. Nothing here imports the
pipeline (TensorFlow, Beam, DuckDB): every task runs one step of the pipeline's command line,
``python -m pipeline.run --stages ...``, with the *pipeline* environment's Python, because the
TFX stack and Airflow cannot share an environment.

Settings are resolved when a task renders its command, per DAG run, in this order:

1. the DAG-run params (the trigger form, or ``airflow dags test -c '{...}'``);
2. the JSON Airflow Variable ``taxi_pipeline`` (or ``AIRFLOW_VAR_TAXI_PIPELINE``);
3. the built-in defaults below (target ``local``: DirectRunner, the embedded DuckDB warehouse,
   paths inside the checkout this file lives in).

A run's directory is ``<runs_dir>/<run id>``, where the run id is derived from the data interval
(``20240102`` for the day 2024-01-02), so each interval has exactly one run directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, Variable
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

VARIABLE = "taxi_pipeline"
TARGETS = ("local", "gcp")
REPO_ROOT = Path(__file__).resolve().parents[1]

# The manifest's error types that are the pipeline's verdict on the data or the model (a blocking
# anomaly, no training rows, a parity gap): a retry would fail the same way, so the task fails at
# once. Anything else (a crash, a killed worker, a Dataflow hiccup) is retried with backoff.
VERDICT_ERRORS = ("StageFailed", "ValidationFailed")

# Exit code that BashOperator turns into a skipped task.
SKIP_EXIT_CODE = 99

DESCRIPTIONS: dict[str, str] = {
    "target": "local (DirectRunner, embedded DuckDB) or gcp (BigQuery, Dataflow)",
    "repo_root": "checkout of the pipeline code; tasks run from here",
    "python": "Python of the pipeline environment (the TFX stack)",
    "runs_dir": "parent of the run directories (gcp default: gs://<bucket>/runs)",
    "data_dir": "local: where the taxi sample and its embedded warehouse live",
    "db": "local: DuckDB warehouse file (empty: the taxi sample's, built in data_dir)",
    "push_base": "where blessed models are published (gcp default: gs://<bucket>/models/taxi)",
    "train_steps": "training steps",
    "beam_args": "extra Beam pipeline options, e.g. --direct_num_workers=2",
    "serving_logs": "directory of served request logs for the skew check (empty: skip it)",
    "gcp_project": "gcp: Google Cloud project of the BigQuery and Dataflow jobs",
    "gcp_region": "gcp: Dataflow region",
    "gcp_bucket": "gcp: GCS bucket for Dataflow temp/staging files, splits and run artifacts",
    "bq_dataset": "gcp: BigQuery dataset that receives the per-split tables",
    "bq_location": "gcp: BigQuery location",
    "bq_table": "gcp: source table dataset.table (empty: the dataset definition's table)",
    "gcp_package": "gcp: the pipeline wheel shipped to the Dataflow workers",
}
GCP_REQUIRED = ("gcp_project", "gcp_region", "gcp_bucket", "bq_dataset", "gcp_package")
INTEGER_SETTINGS = ("train_steps",)


def local_defaults(repo_root: Path = REPO_ROOT) -> dict[str, Any]:
    """Built-in settings: the local target inside the checkout at ``repo_root``."""
    return {
        "target": "local",
        "repo_root": str(repo_root),
        "python": str(repo_root / ".venv" / "bin" / "python"),
        "runs_dir": str(repo_root / "runs"),
        "data_dir": str(repo_root / "data"),
        "db": "",
        "push_base": str(repo_root / "models" / "taxi"),
        "train_steps": 1000,
        "beam_args": "",
        "serving_logs": "",
        "gcp_project": "",
        "gcp_region": "",
        "gcp_bucket": "",
        "bq_dataset": "",
        "bq_location": "US",
        "bq_table": "",
        "gcp_package": "",
    }


def dag_params() -> dict[str, Param]:
    """One optional param per setting; unset (None) means: the Variable's value or the default."""
    params = {}
    for name, description in DESCRIPTIONS.items():
        kind = "integer" if name in INTEGER_SETTINGS else "string"
        schema: dict[str, Any] = {"type": ["null", kind]}
        if name == "target":
            schema["enum"] = [None, *TARGETS]
        params[name] = Param(None, description=description, **schema)
    return params


def resolve_settings(
    params: Mapping[str, Any] | None, variable: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Defaults < Variable < params; gcp paths default into the bucket. Raises on bad settings."""
    settings = local_defaults()
    unknown = sorted(set(variable or {}) - set(settings))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in Variable {VARIABLE}; known: {sorted(settings)}"
        )
    explicit: set[str] = set()
    for values in (variable or {}, params or {}):  # params may also carry unrelated run conf
        chosen = {k: v for k, v in values.items() if k in settings and v not in (None, "")}
        settings.update(chosen)
        explicit.update(chosen)
    if settings["target"] not in TARGETS:
        raise ValueError(f"unknown target {settings['target']!r}; one of {TARGETS}")
    settings["train_steps"] = int(settings["train_steps"])
    if settings["target"] == "gcp":
        missing = [name for name in GCP_REQUIRED if not settings[name]]
        if missing:
            raise ValueError(f"target gcp needs the setting(s) {missing} (params or Variable)")
        bucket = f"gs://{settings['gcp_bucket']}"
        if "runs_dir" not in explicit:
            settings["runs_dir"] = f"{bucket}/runs"
        if "push_base" not in explicit:
            settings["push_base"] = f"{bucket}/models/taxi"
    return settings


def interval_run(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """Run id and ``--start``/``--end`` values for the data interval [start, end)."""
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    midnight = dt.time(0, tzinfo=dt.UTC)
    whole_days = start.timetz() == midnight and end.timetz() == midnight
    if whole_days:
        bounds = start.strftime("%Y-%m-%d"), end.strftime("%Y-%m-%d")
        one_day = end - start == dt.timedelta(days=1)
        run_id = start.strftime("%Y%m%d") + ("" if one_day else end.strftime("-%Y%m%d"))
    else:
        bounds = start.isoformat(), end.isoformat()
        run_id = start.strftime("%Y%m%dT%H%M%S") + end.strftime("-%Y%m%dT%H%M%S")
    return {"run_id": run_id, "start": bounds[0], "end": bounds[1]}


def _join(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def beam_args(settings: Mapping[str, Any]) -> list[str]:
    """Runner options: DirectRunner locally, Dataflow with the pipeline package on gcp."""
    extra = shlex.split(settings["beam_args"])
    if settings["target"] == "local":
        return ["--runner", "DirectRunner", *extra]
    bucket = f"gs://{settings['gcp_bucket']}"
    return [
        "--runner", "DataflowRunner",
        "--project", settings["gcp_project"],
        "--region", settings["gcp_region"],
        "--temp_location", f"{bucket}/tmp",
        "--staging_location", f"{bucket}/staging",
        "--extra_package", settings["gcp_package"],
        *extra,
    ]  # fmt: skip


def run_dir(settings: Mapping[str, Any], interval: Mapping[str, str]) -> str:
    return f"{settings['runs_dir'].rstrip('/')}/{interval['run_id']}"


def stage_command(
    settings: Mapping[str, Any], interval: Mapping[str, str], stages: tuple[str, ...]
) -> str:
    """The bash command of one task: ``pipeline.run`` for ``stages`` in the interval's run dir.

    The first task of a run (``data,warehouse``) starts the interval afresh: the previous run
    directory of that interval is renamed away and deleted, so a rerun never mixes artifacts of
    two runs. On gcp the warehouse split is the BigQuery job of ``pipeline.sample``.
    """
    python, local = settings["python"], settings["target"] == "local"
    if not local and "warehouse" in stages:
        return _bigquery_split_command(settings, interval)
    command = [
        python, "-m", "pipeline.run",
        "--run-id", interval["run_id"],
        "--stages", ",".join(stages),
        "--start", interval["start"],
        "--end", interval["end"],
        "--runs-dir", settings["runs_dir"],
        "--push-base", settings["push_base"],
        "--train-steps", str(settings["train_steps"]),
    ]  # fmt: skip
    if local:
        command += ["--data-dir", settings["data_dir"]]
        if settings["db"]:
            command += ["--db", settings["db"]]
    command += beam_args(settings)
    text = _join(command)
    if local and stages[0] == "data":
        directory = run_dir(settings, interval)
        aside = shlex.quote(f"{settings['runs_dir'].rstrip('/')}/.{interval['run_id']}.replaced-")
        aside += "$$"  # the shell's pid: a name no other attempt uses
        text = (
            f"if [ -e {shlex.quote(directory)} ]; then "
            f"mv {shlex.quote(directory)} {aside} && rm -rf {aside}; fi && {text}"
        )
    return text


def _bigquery_split_command(settings: Mapping[str, Any], interval: Mapping[str, str]) -> str:
    command = [
        settings["python"], "-m", "pipeline.sample",
        "--engine", "bigquery",
        "--project", settings["gcp_project"],
        "--destination-dataset", settings["bq_dataset"],
        "--location", settings["bq_location"],
        "--start", interval["start"],
        "--end", interval["end"],
        "--output", f"{run_dir(settings, interval)}/splits",
        "--overwrite",
        "--label", "pipeline=taxi",
        "--label", f"run={interval['run_id']}",
    ]  # fmt: skip
    if settings["bq_table"]:
        command += ["--table", settings["bq_table"]]
    return _join(command)


def skew_check_command(settings: Mapping[str, Any], interval: Mapping[str, str]) -> str:
    """Serving-log skew check against the run's training statistics; skipped without logs."""
    logs = settings["serving_logs"]
    if not logs:
        return f"echo 'no serving_logs setting: no request logs to check'; exit {SKIP_EXIT_CODE}"
    directory = run_dir(settings, interval)
    command = _join(
        [
            settings["python"], "-m", "pipeline.validate", "serving-logs",
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
    # pipeline.validate serving-logs exits 2 when the directory holds no request log.
    return (
        f"{missing}{command}; status=$?; "
        f"if [ $status -eq 2 ]; then echo 'no request logs in {logs}'; exit {SKIP_EXIT_CODE}; fi; "
        "exit $status"
    )


# ---- Jinja macros: the tasks' templates call these with the run's context ---------------------


def _settings_from(context: Mapping[str, Any]) -> dict[str, Any]:
    variable = Variable.get(VARIABLE, default=None, deserialize_json=True)
    return resolve_settings(context.get("params"), variable)


def _interval_from(context: Mapping[str, Any]) -> dict[str, str]:
    return interval_run(context["data_interval_start"], context["data_interval_end"])


@jinja2.pass_context
def taxi_stage_command(context: Mapping[str, Any], stages: str) -> str:
    return stage_command(_settings_from(context), _interval_from(context), tuple(stages.split(",")))


@jinja2.pass_context
def taxi_skew_check_command(context: Mapping[str, Any]) -> str:
    return skew_check_command(_settings_from(context), _interval_from(context))


@jinja2.pass_context
def taxi_setting(context: Mapping[str, Any], name: str) -> str:
    return str(_settings_from(context)[name])


@jinja2.pass_context
def taxi_manifest(context: Mapping[str, Any]) -> str:
    return f"{run_dir(_settings_from(context), _interval_from(context))}/manifest.json"


MACROS = {
    "taxi_stage_command": taxi_stage_command,
    "taxi_skew_check_command": taxi_skew_check_command,
    "taxi_setting": taxi_setting,
    "taxi_manifest": taxi_manifest,
}

# The pipeline's own process settings (see the Makefile), for every task.
TASK_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}


class PipelineStageOperator(BashOperator):
    """Runs pipeline stages with ``pipeline.run``; a verdict (not a crash) fails without retry.

    After a failed command the run manifest says why: if one of this task's stages failed with
    one of :data:`VERDICT_ERRORS` (a blocking anomaly, a parity gap, ...) the task fails at once
    with that reason, instead of repeating a run that would fail the same way.
    """

    template_fields = (*BashOperator.template_fields, "manifest")

    def __init__(self, *, stages: tuple[str, ...], manifest: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stages = tuple(stages)
        self.manifest = manifest

    def execute(self, context: Any) -> Any:
        started = time.time()
        try:
            return super().execute(context)
        except AirflowSkipException:
            raise
        except Exception:
            verdict = self._verdict(started)
            if verdict:
                raise AirflowFailException(verdict) from None
            raise

    def _verdict(self, since: float) -> str | None:
        path = Path(self.manifest)
        if "://" in self.manifest or not path.is_file() or os.path.getmtime(path) < since:
            return None
        stages = json.loads(path.read_text()).get("stages", {})
        for name in self.stages:
            record = stages.get(name, {})
            error = str(record.get("error", ""))
            if record.get("status") == "failed" and error.startswith(VERDICT_ERRORS):
                return f"stage {name} failed (not retried): {error}"
        return None
