"""Daily ML pipeline: warehouse split -> validation -> transform -> train -> evaluate -> push.

One DAG run per day of data (its data interval); each run works in its own run directory
``<runs_dir>/[<dataset>-]<YYYYMMDD>`` and each task runs one step of ``python -m pipeline.run``
in the pipeline environment. A blocking validation anomaly fails ``validate`` (the anomaly list
is in its log) and nothing downstream runs. The serving-log skew check is skipped when there are
no request logs. Which dataset: the ``dataset`` setting of ``ml_pipeline``, or one DAG
``ml_pipeline_<name>`` per name in the environment variable ``ML_PIPELINE_DATASETS``. Settings
(dataset, target local or gcp, paths, GCP project, ...) come from the DAG-run params or the JSON
Variables ``ml_pipeline`` and ``ml_pipeline_<name>``: see ``pipeline_tasks.py``.
"""

from __future__ import annotations

import datetime as dt

import pipeline_tasks
from airflow.sdk import DAG, CronDataIntervalTimetable, chain

# (task id, pipeline stages it runs, execution timeout)
STAGE_TASKS = [
    ("warehouse_split", ("data", "warehouse"), dt.timedelta(minutes=30)),
    ("validate", ("validation",), dt.timedelta(hours=1)),
    ("transform", ("transform",), dt.timedelta(hours=2)),
    ("train", ("train", "baselines", "export"), dt.timedelta(hours=3)),
    ("evaluate_and_bless", ("parity", "evaluate", "predict"), dt.timedelta(hours=1)),
    ("push", ("push",), dt.timedelta(minutes=15)),
]


def pipeline_dag(pipeline: pipeline_tasks.PipelineDag) -> DAG:
    """The DAG of one :class:`pipeline_tasks.PipelineDag`: six stage tasks, then the skew check."""
    bound = f" ({pipeline.dataset})" if pipeline.dataset else ""
    with DAG(
        dag_id=pipeline.dag_id,
        description=f"Warehouse split, validation, transform, training, parity, push{bound}",
        doc_md=__doc__,
        # Data intervals [day, day + 1): a run processes the day that has just ended.
        schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
        # The earliest interval a backfill or a manual run may process (a run of an interval
        # before the start date gets no tasks): datasets of any year. With catchup=False the
        # scheduler itself only ever starts the latest interval.
        start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
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
        params=pipeline_tasks.dag_params(pipeline),
        user_defined_macros=pipeline_tasks.task_macros(pipeline),
        tags=["ml-pipeline", "tfx", *([f"dataset:{pipeline.dataset}"] if pipeline.dataset else [])],
    ) as dag:
        stage_tasks = [
            pipeline_tasks.PipelineStageOperator(
                task_id=task_id,
                pipeline=pipeline,
                stages=stages,
                bash_command=f"{{{{ pipeline_stage_command({','.join(stages)!r}) }}}}",
                cwd="{{ pipeline_setting('repo_root') }}",
                env=pipeline_tasks.TASK_ENV,
                append_env=True,
                execution_timeout=timeout,
            )
            for task_id, stages, timeout in STAGE_TASKS
        ]
        skew_check = pipeline_tasks.SkewCheckOperator(
            task_id="serving_log_skew_check",
            pipeline=pipeline,
            bash_command="{{ pipeline_skew_check_command() }}",
            cwd="{{ pipeline_setting('repo_root') }}",
            env=pipeline_tasks.TASK_ENV,
            append_env=True,
            skip_on_exit_code=pipeline_tasks.SKIP_EXIT_CODE,
            execution_timeout=dt.timedelta(hours=1),
        )
        chain(*stage_tasks, skew_check)
    return dag


for _pipeline in pipeline_tasks.pipeline_dags():
    globals()[_pipeline.dag_id] = pipeline_dag(_pipeline)
