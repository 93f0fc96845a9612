"""Daily taxi pipeline: warehouse split -> validation -> transform -> train -> evaluate -> push.

One DAG run per day of data (its data interval); each run works in its own run directory
``<runs_dir>/<YYYYMMDD>`` and each task runs one step of ``python -m pipeline.run`` in the
pipeline environment. A blocking validation anomaly fails ``validate`` (the anomaly list is in
its log) and nothing downstream runs. The serving-log skew check is skipped when there are no
request logs. Settings (target local or gcp, paths, GCP project, ...) come from the DAG-run
params or the JSON Variable ``taxi_pipeline``: see ``taxi_tasks.py``.
"""

from __future__ import annotations

import datetime as dt

import taxi_tasks
from airflow.sdk import DAG, CronDataIntervalTimetable, chain

# (task id, pipeline stages it runs, execution timeout)
STAGE_TASKS = [
    ("warehouse_split", ("data", "warehouse"), dt.timedelta(minutes=30)),
    ("validate", ("validation",), dt.timedelta(hours=1)),
    ("transform", ("transform",), dt.timedelta(hours=2)),
    ("train", ("train", "export"), dt.timedelta(hours=3)),
    ("evaluate_and_bless", ("parity", "predict"), dt.timedelta(hours=1)),
    ("push", ("push",), dt.timedelta(minutes=15)),
]

with DAG(
    dag_id="taxi_pipeline",
    description="Warehouse split, TFDV validation, TFT transform, training, parity, push",
    doc_md=__doc__,
    # Data intervals [day, day + 1): a run processes the day that has just ended.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    # One interval at a time: runs share the push base (each compares with the served model).
    max_active_runs=1,
    default_args={
        "owner": "ml-pipeline",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
    },
    params=taxi_tasks.dag_params(),
    user_defined_macros=taxi_tasks.MACROS,
    tags=["taxi", "tfx"],
) as dag:
    stage_tasks = [
        taxi_tasks.PipelineStageOperator(
            task_id=task_id,
            stages=stages,
            bash_command=f"{{{{ taxi_stage_command({','.join(stages)!r}) }}}}",
            cwd="{{ taxi_setting('repo_root') }}",
            env=taxi_tasks.TASK_ENV,
            append_env=True,
            execution_timeout=timeout,
        )
        for task_id, stages, timeout in STAGE_TASKS
    ]
    skew_check = taxi_tasks.SkewCheckOperator(
        task_id="serving_log_skew_check",
        bash_command="{{ taxi_skew_check_command() }}",
        cwd="{{ taxi_setting('repo_root') }}",
        env=taxi_tasks.TASK_ENV,
        append_env=True,
        skip_on_exit_code=taxi_tasks.SKIP_EXIT_CODE,
        execution_timeout=dt.timedelta(hours=1),
    )
    chain(*stage_tasks, skew_check)
