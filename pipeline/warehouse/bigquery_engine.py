"""The BigQuery engine: the SQL as written, with query parameters, on the real service.

Follows the google-cloud-bigquery samples: ``ScalarQueryParameter`` values, an explicit
location, job labels, destination tables with ``WRITE_TRUNCATE``. The stage runs four kinds of
jobs: the filter counts, the split query into ``<prefix>_assigned``, one query per split into
``<prefix>_<split>``, and ``EXPORT DATA`` of each split table to Parquet under a GCS URI.

BigQuery cannot be reached from CI: tests inject a client object and check everything up to the
wire (SQL text, parameters, job configuration).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.definition import SPLIT_NAMES, DatasetDefinition
from pipeline.warehouse.config import BigQueryOptions
from pipeline.warehouse.engine import SplitOutput
from pipeline.warehouse.identifiers import TableRef, validate_gcs_uri
from pipeline.warehouse.query import Query, export_split_query, select_split_query


def parameter_type(value: Any) -> str:
    """BigQuery type of a query parameter value."""
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    raise TypeError(f"no BigQuery type for parameter value {value!r}")


def query_parameters(query: Query) -> list:
    """The query's values as ``ScalarQueryParameter``s, in name order."""
    from google.cloud import bigquery

    return [
        bigquery.ScalarQueryParameter(name, parameter_type(value), value)
        for name, value in sorted(query.params.items())
    ]


class BigQueryEngine:
    """Runs the warehouse queries as BigQuery jobs; ``client`` is injectable for tests."""

    name = "bigquery"
    writes_locally = False

    def __init__(self, options: BigQueryOptions, client: Any = None) -> None:
        self.options = options
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from google.cloud import bigquery

            self._client = bigquery.Client(
                project=self.options.project, location=self.options.location
            )
        return self._client

    def job_config(self, query: Query, **fields: Any):
        """Job configuration shared by every job: parameters, labels, standard SQL."""
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=query_parameters(query),
            labels=dict(self.options.labels),
            use_legacy_sql=False,
            **fields,
        )

    def run(self, query: Query, **fields: Any):
        """Start one job in the configured location and wait for it."""
        job = self.client.query(
            query.sql,
            job_config=self.job_config(query, **fields),
            location=self.options.location,
            job_id_prefix=f"warehouse_{query.name}_",
        )
        return job, job.result()

    def dry_run(self, queries: list[Query]) -> dict[str, Any]:
        """Bytes each query would process (dry run, cache off: the real cost)."""
        processed = {}
        for query in queries:
            job = self.client.query(
                query.sql,
                job_config=self.job_config(query, dry_run=True, use_query_cache=False),
                location=self.options.location,
            )
            processed[query.name] = int(job.total_bytes_processed or 0)
        return {
            "engine": self.name,
            "total_bytes_processed": processed,
            "total_bytes": sum(processed.values()),
        }

    def describe_table(self, table: TableRef) -> dict[str, str] | None:
        """Column name -> BigQuery field type of ``table``; None when it does not exist."""
        from google.api_core.exceptions import NotFound

        try:
            found = self.client.get_table(table.api_id())
        except NotFound:
            return None
        return {field.name: field.field_type for field in found.schema}

    def filter_counts(self, query: Query) -> tuple[dict[str, int], str]:
        _, rows = self.run(query)
        (row,) = list(rows)
        return {k: int(v or 0) for k, v in dict(row.items()).items()}, query.sql

    def table(self, suffix: str) -> TableRef:
        """``<project>.<destination_dataset>.<prefix>_<suffix>``."""
        options = self.options
        name = f"{options.destination_prefix}_{suffix}"
        return TableRef(project=options.project, dataset=options.destination_dataset, table=name)

    def write_splits(
        self, query: Query, destination: str, definition: DatasetDefinition
    ) -> SplitOutput:
        """Assigned table, then one destination table and one Parquet export per split."""
        uri = validate_gcs_uri(destination)
        truncate = {"write_disposition": "WRITE_TRUNCATE", "create_disposition": "CREATE_IF_NEEDED"}
        assigned = self.table("assigned")
        self.run(query, destination=assigned.api_id(), **truncate)
        executed = {query.name: query.sql}
        dirs, rows = {}, {}
        for split in SPLIT_NAMES:
            split_table = self.table(split)
            select = select_split_query(assigned, split)
            _, result = self.run(select, destination=split_table.api_id(), **truncate)
            rows[split] = int(result.total_rows or 0)
            export = export_split_query(split_table, f"{uri}/{split}/part-*.parquet")
            self.run(export)
            executed[select.name] = select.sql
            executed[export.name] = export.sql
            dirs[split] = f"{uri}/{split}"
        return SplitOutput(dirs, rows, executed)
