"""Command line of the warehouse stage: split a dataset's table into Parquet split dirs.

    python -m pipeline.warehouse --dataset NAME --output runs/x/splits
    python -m pipeline.warehouse --dataset NAME --output out --split 70,15,15 \
        --stratify-by LABEL --oversample-target 0.5 --start 2014-01-01 --end 2016-01-01
    python -m pipeline.warehouse --engine bigquery --project my-proj --destination-dataset work \
        --output gs://bucket/splits --dry-run

``--db`` defaults to the dataset's embedded warehouse (``data/<dataset>/warehouse.duckdb``, built
by ``python -m pipeline.data prepare``). Prints the counts (or, with --dry-run, the checked SQL)
as JSON. Exit status 2 for a usage error, 3 for a verdict on the table (empty, missing column,
wrong type, forbidden duplicates).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.cli import UsageError, add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.definition import DuplicatePolicy
from pipeline.verdicts import EXIT_VERDICT, Verdict
from pipeline.warehouse import BigQueryOptions, SplitConfig, dry_run, run_split


def _timestamp(text: str) -> datetime:
    """ISO date or datetime; naive values are UTC."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _ratios(text: str) -> tuple[float, float, float]:
    """``80,10,10`` (percent or fractions) -> fractions summing to 1."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid split {text!r}: numbers like 80,10,10") from None
    if len(parts) != 3 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"invalid split {text!r}: three numbers like 80,10,10")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: key=value")
    return key, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.warehouse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_argument(p)
    p.add_argument("--db", type=Path, help="DuckDB warehouse file (default: the dataset's)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where --db defaults to")
    p.add_argument("--output", required=True, help="output dir (gs:// URI for bigquery)")
    p.add_argument("--engine", choices=("duckdb", "bigquery"), default="duckdb")
    p.add_argument("--table", help="dataset.table (default: the dataset definition's)")
    p.add_argument("--start", type=_timestamp, help="inclusive, e.g. 2014-01-01")
    p.add_argument("--end", type=_timestamp, help="exclusive")
    p.add_argument("--sample-fraction", type=float, default=1.0)
    p.add_argument("--split", type=_ratios, help="train,eval,test (default: the dataset's)")
    p.add_argument("--stratify-by", help="column or label name to stratify on")
    p.add_argument("--oversample-target", type=float, help="minority/majority ratio in train")
    p.add_argument("--salt", help="split salt (default: the dataset's)")
    p.add_argument("--key-columns", help="comma-separated columns of the row key")
    p.add_argument(
        "--duplicates",
        choices=[str(p) for p in DuplicatePolicy],
        help="exact duplicate rows: keep, drop or block (default: the dataset's)",
    )
    p.add_argument(
        "--no-row-filters", action="store_true", help="skip the dataset's own row filters"
    )
    p.add_argument("--dry-run", action="store_true", help="check the SQL, run nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output dir")
    bigquery = p.add_argument_group("bigquery engine")
    bigquery.add_argument("--project")
    bigquery.add_argument("--location", default="US")
    bigquery.add_argument("--destination-dataset")
    bigquery.add_argument("--destination-prefix", default="split")
    bigquery.add_argument("--label", type=_label, action="append", default=[], help="key=value")
    return p


def config_from_args(args: argparse.Namespace) -> SplitConfig:
    """A validated :class:`SplitConfig`; bad input raises ``ValueError`` naming it."""
    definition = dataset_from_args(args)
    options = None
    if args.engine == "bigquery":
        if not (args.project and args.destination_dataset):
            raise ValueError("--engine bigquery needs --project and --destination-dataset")
        options = BigQueryOptions(
            project=args.project,
            destination_dataset=args.destination_dataset,
            export_uri=args.output,
            location=args.location,
            destination_prefix=args.destination_prefix,
            labels=tuple(args.label) or (("pipeline", definition.name), ("stage", "warehouse")),
        )
    key_columns = tuple(args.key_columns.split(",")) if args.key_columns else None
    warehouse = args.db
    if warehouse is None and args.engine == "duckdb":
        from pipeline.data import warehouse_path

        warehouse = warehouse_path(definition, args.data_dir)
    return SplitConfig(
        definition=definition,
        engine=args.engine,
        warehouse=warehouse,
        table=args.table,
        ratios=args.split,
        salt=args.salt,
        key_columns=key_columns,
        sample_fraction=args.sample_fraction,
        start=args.start,
        end=args.end,
        stratify_by=args.stratify_by,
        oversample_target=args.oversample_target,
        duplicates=DuplicatePolicy(args.duplicates) if args.duplicates else None,
        apply_filters=not args.no_row_filters,
        bigquery=options,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with exit_on_usage_error():
        try:
            config = config_from_args(args)
        except ValueError as error:
            raise UsageError(str(error)) from None
    try:
        if args.dry_run:
            report = dry_run(config)
        else:
            result = run_split(config, args.output, overwrite=args.overwrite)
            skipped = ("sql", "source_sql")
            report = {k: v for k, v in result.to_manifest().items() if k not in skipped}
    except Verdict as verdict:
        print(f"verdict: {verdict}", file=sys.stderr)
        return EXIT_VERDICT
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
