"""Warehouse stage: BigQuery SQL that filters, samples and splits the raw table.

The SQL is written once in BigQuery Standard SQL (``sql/*.sql``) and runs either on BigQuery or,
transpiled by sqlglot, on an embedded DuckDB file with identical results.
"""

from pipeline.warehouse.config import (
    SPLIT_NAMES,
    BigQueryOptions,
    SplitConfig,
    default_split_config,
)
from pipeline.warehouse.stage import SplitResult, dry_run, run_split
from pipeline.warehouse.table_check import TableProblem

__all__ = [
    "SPLIT_NAMES",
    "BigQueryOptions",
    "SplitConfig",
    "SplitResult",
    "TableProblem",
    "default_split_config",
    "dry_run",
    "run_split",
]
