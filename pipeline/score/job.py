"""The scoring Beam job: Parquet rows -> Arrow batches -> RunInference -> Parquet prediction shards.

Each Beam element is a RecordBatch of up to ``batch_size`` rows from the start to the end, so the
runner's per-element cost is paid per batch, not per row. The shards go to a staging directory
(a path or gs:// URI); publishing them as a table is the caller's step, once the job succeeded.
"""

from __future__ import annotations

import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.ml.inference.base import RunInference
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import storage
from pipeline.runners import pipeline_options, run_pipeline
from pipeline.score.model import ExportModelHandler

METRICS_NAMESPACE = "batch_scoring"
SHARD_SUFFIX = ".parquet"


class _WriteParquetShards(beam.DoFn):
    """Append prediction batches to one Parquet shard per bundle; count the rows written."""

    def __init__(self, directory: str, schema: pa.Schema):
        self._directory = directory
        self._schema = schema
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_written")

    def start_bundle(self) -> None:
        self._handle = self._writer = self._path = None

    def process(self, batch: pa.RecordBatch):
        if not batch.num_rows:
            return ()
        if self._writer is None:
            self._path = storage.join(self._directory, f"part-{uuid.uuid4().hex}{SHARD_SUFFIX}")
            self._handle = storage.open_write(self._path)
            self._writer = pq.ParquetWriter(self._handle, self._schema)
        self._writer.write_batch(batch)
        self._rows.inc(batch.num_rows)
        return ()

    def finish_bundle(self):
        if self._writer is not None:
            self._writer.close()
            self._handle.close()
            yield WindowedValue(self._path, GlobalWindow().max_timestamp(), [GlobalWindow()])


def _batches(table: pa.Table, batch_size: int):
    for batch in table.to_batches(max_chunksize=batch_size):
        if batch.num_rows:
            yield batch


def run_scoring_job(
    input_pattern: str,
    output_dir: str,
    handler: ExportModelHandler,
    schema: pa.Schema,
    columns: list[str],
    beam_args: list[str],
    batch_size: int,
) -> int:
    """Score every row of ``input_pattern``; write shards under ``output_dir``; rows written."""
    storage.makedirs(output_dir)
    pipeline = beam.Pipeline(options=pipeline_options(beam_args))
    _ = (
        pipeline
        | "ReadRows" >> beam.io.ReadFromParquetBatched(input_pattern, columns=columns)
        | "Batches" >> beam.FlatMap(_batches, batch_size)
        | "Score" >> RunInference(handler)
        | "WriteShards" >> beam.ParDo(_WriteParquetShards(output_dir, schema))
    )
    result = run_pipeline(pipeline, "batch scoring")
    counters = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE)
    )["counters"]
    return int(sum(c.committed or 0 for c in counters if c.key.metric.name == "rows_written"))
