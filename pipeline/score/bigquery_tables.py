"""Batch scoring on BigQuery: rows exported to GCS Parquet, predictions loaded back, atomically.

Follows the warehouse stage's BigQuery engine (its job configuration, parameters and labels):

* input: the score query into ``<output table>__input`` (``WRITE_TRUNCATE``), then ``EXPORT
  DATA`` of that table to Parquet under the staging URI, where the Beam job (on Dataflow) reads;
* output: a load job of the prediction shards into ``<output table>__staging``
  (``WRITE_TRUNCATE``), a check of its row count against the input's, then a copy job onto the
  output table (``WRITE_TRUNCATE``: BigQuery replaces the table's contents in one commit, or not
  at all), and the two helper tables are deleted.

BigQuery cannot be reached from here: tests inject a client and check everything up to the wire.
"""

from __future__ import annotations

from typing import Any

from pipeline.warehouse.bigquery_engine import BigQueryEngine
from pipeline.warehouse.config import BigQueryOptions
from pipeline.warehouse.identifiers import TableRef
from pipeline.warehouse.query import Query, export_split_query

_TRUNCATE = {"write_disposition": "WRITE_TRUNCATE", "create_disposition": "CREATE_IF_NEEDED"}


class BigQueryScoringTables:
    """The scoring run's BigQuery jobs; ``client`` is injectable for tests."""

    def __init__(self, output: TableRef, location: str, labels: dict[str, str], client: Any = None):
        if output.project is None:
            raise ValueError(f"the output table {output.dotted()} needs a project on BigQuery")
        self.output = output
        options = BigQueryOptions(
            project=output.project,
            destination_dataset=output.dataset,
            location=location,
            labels=tuple(sorted(labels.items())),
        )
        self.engine = BigQueryEngine(options, client=client)

    @property
    def input_table(self) -> TableRef:
        return self.output.with_table(f"{self.output.table}__input")

    @property
    def staging_table(self) -> TableRef:
        return self.output.with_table(f"{self.output.table}__staging")

    def export_input(self, query: Query, uri: str) -> tuple[str, int]:
        """Rows of ``query`` as Parquet under ``uri`` (gs://); returns their pattern and count."""
        _, rows = self.engine.run(query, destination=self.input_table.api_id(), **_TRUNCATE)
        pattern = f"{uri.rstrip('/')}/part-*.parquet"
        self.engine.run(export_split_query(self.input_table, pattern))
        return pattern, int(rows.total_rows or 0)

    def publish(self, shards_pattern: str, expected_rows: int) -> None:
        """Replace the output table with the shards' rows, or leave it as it was."""
        from google.cloud import bigquery

        client, options = self.engine.client, self.engine.options
        labels = dict(options.labels)
        parquet = bigquery.ParquetOptions()
        parquet.enable_list_inference = True  # list<float> columns load as ARRAY<FLOAT64>
        load = client.load_table_from_uri(
            shards_pattern,
            self.staging_table.api_id(),
            job_config=bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                parquet_options=parquet,
                labels=labels,
                **_TRUNCATE,
            ),
            location=options.location,
            job_id_prefix="score_load_",
        )
        load.result()
        try:
            if int(load.output_rows or 0) != expected_rows:
                raise RuntimeError(
                    f"{self.output.dotted()}: loaded {load.output_rows} predictions for "
                    f"{expected_rows} input rows; the output table was not touched"
                )
            copy = client.copy_table(
                self.staging_table.api_id(),
                self.output.api_id(),
                job_config=bigquery.CopyJobConfig(labels=labels, **_TRUNCATE),
                location=options.location,
                job_id_prefix="score_publish_",
            )
            copy.result()
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Delete the helper tables (absent ones are fine)."""
        client = self.engine.client
        for table in (self.staging_table, self.input_table):
            client.delete_table(table.api_id(), not_found_ok=True)
