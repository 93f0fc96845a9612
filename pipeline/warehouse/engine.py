"""What the warehouse stage needs from an engine; two implementations share it.

* :class:`pipeline.warehouse.duckdb_engine.DuckDBEngine` runs the sqlglot transpilation of the
  BigQuery SQL on an embedded DuckDB file and writes Parquet locally (the default).
* :class:`pipeline.warehouse.bigquery_engine.BigQueryEngine` runs the BigQuery SQL itself, with
  query parameters, per-split destination tables and ``EXPORT DATA`` to GCS.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Protocol

from pipeline.definition import DatasetDefinition
from pipeline.warehouse.identifiers import TableRef
from pipeline.warehouse.query import Query


@dataclasses.dataclass(frozen=True)
class SplitOutput:
    """Where an engine put each split, how many rows it holds and the statements it ran."""

    split_dirs: dict[str, str]
    split_rows: dict[str, int]
    executed: dict[str, str]  # statement name -> text actually sent, in the engine's dialect


class Engine(Protocol):
    """The operations the stage runs; both engines take the same BigQuery :class:`Query`."""

    name: str
    writes_locally: bool  # True: output goes to a local staging dir the stage publishes

    def dry_run(self, queries: list[Query]) -> dict[str, Any]:
        """Check the queries without running them; report what the engine can estimate."""
        ...

    def describe_table(self, table: TableRef) -> dict[str, str] | None:
        """Column name -> engine type of the source table; None when it does not exist."""
        ...

    def filter_counts(self, query: Query) -> tuple[dict[str, int], str]:
        """Run the filter-count query: its single row as a dict, and the text run."""
        ...

    def write_splits(
        self, query: Query, destination: str, definition: DatasetDefinition
    ) -> SplitOutput:
        """Run the split query and write one Parquet directory per split under ``destination``."""
        ...


def json_value(value: Any) -> Any:
    """Query parameter values as JSON (datetimes in ISO 8601)."""
    return value.isoformat() if isinstance(value, datetime) else value
