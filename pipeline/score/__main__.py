"""``python -m pipeline.score``: batch predictions of a warehouse table (see :mod:`pipeline.score`).

    python -m pipeline.score [--dataset NAME] --model models/<model> [--db FILE]
    python -m pipeline.score --model runs/LATEST/serving/<model>/<v> --split-dir DIR \\
        --output-db FILE
    python -m pipeline.score --engine bigquery --bq-project P --staging-uri gs://B/scoring \\
        --model gs://B/models/<model> --output-table P.ds.<table>_predictions \\
        --runner DataflowRunner ...

Prints a JSON summary (table, model version, rows, seconds). Exit status 0 when the table was
published, 1 otherwise (nothing was published), 2 for a bad command line, 4 when a Beam runner
process aborted after the job wrote its outputs (:mod:`pipeline.runners.portable`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.runners import RunnerAborted, add_runner_arguments, beam_session, runner_flag_conflict
from pipeline.score import DEFAULT_BATCH_SIZE, ScoreConfig, score_table

EXIT_RUNNER_ABORTED = 4  # as pipeline.run's


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Score a warehouse table with an exported model; write the predictions back.",
        epilog="Unknown flags go to Beam (e.g. --runner DataflowRunner ...).",
    )
    add_dataset_argument(parser)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where --db defaults")
    parser.add_argument("--model", required=True, help="export directory or model base")
    parser.add_argument("--model-version", type=int, help="default: the newest / the export's")
    parser.add_argument("--engine", choices=("duckdb", "bigquery"), default="duckdb")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--db", type=Path, help="duckdb: the warehouse file")
    source.add_argument("--split-dir", type=Path, help="duckdb: score a split's Parquet instead")
    parser.add_argument("--table", help="source dataset.table (default: the definition's)")
    parser.add_argument(
        "--output-table", help="[project.]dataset.table (default: <source table>_predictions)"
    )
    parser.add_argument("--output-db", type=Path, help="duckdb: output file (default: --db)")
    parser.add_argument(
        "--key-column",
        action="append",
        dest="key_columns",
        help="a column that keys the rows (repeat; default: the split's key over every column)",
    )
    parser.add_argument("--start", help="first day (YYYY-MM-DD) to score, inclusive")
    parser.add_argument("--end", help="end of the interval (YYYY-MM-DD), exclusive")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--bq-project", help="bigquery: project of the tables and jobs")
    parser.add_argument("--bq-location", default="US", help="bigquery: job location")
    parser.add_argument("--staging-uri", help="bigquery: gs:// prefix for the exchanged Parquet")
    add_runner_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    if problem := runner_flag_conflict(args, beam_args):
        parser.error(problem)
    with exit_on_usage_error():
        args.definition = dataset_from_args(args)
    if args.engine == "duckdb" and args.db is None and args.split_dir is None:
        from pipeline.data import warehouse_path

        args.db = warehouse_path(args.definition, args.data_dir)
    return args, beam_args


def config_from(args: argparse.Namespace) -> ScoreConfig:
    return ScoreConfig(
        definition=args.definition,
        model=args.model,
        model_version=args.model_version,
        engine=args.engine,
        warehouse=args.db,
        split_dir=args.split_dir,
        table=args.table,
        output_table=args.output_table,
        output_db=args.output_db,
        key_columns=tuple(args.key_columns) if args.key_columns else None,
        start=args.start,
        end=args.end,
        batch_size=args.batch_size,
        bq_project=args.bq_project,
        bq_location=args.bq_location,
        staging_uri=args.staging_uri,
    )


def main(argv: list[str] | None = None) -> int:
    args, beam_args = parse_args(argv)
    try:
        config = config_from(args)
    except ValueError as error:
        print(f"pipeline.score: {error}", file=sys.stderr)
        return 2
    try:
        with beam_session(args, beam_args) as job_beam_args:
            result = score_table(config, job_beam_args)
    except RunnerAborted as error:
        print(f"SCORING NOT PUBLISHED: {error}", file=sys.stderr)
        return EXIT_RUNNER_ABORTED
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
