"""Split Parquet files -> Arrow list batches with TFDV's notion of a missing value.

TFDV counts a row as *missing* a feature only when that row's list is null (``tf.Example``
decoding produces null for an absent feature). :func:`pipeline.arrow_io.to_list_batch` turns a
null into an empty list, which TFDV counts as *present with zero values*: presence constraints
(``min_fraction``) would then never fire and a null in a required column would pass. This module
reuses the shared list layout and only puts the null mask back.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipeline.arrow_io import DEFAULT_BATCH_SIZE, to_list_batch


def to_validation_batch(flat: pa.RecordBatch) -> pa.RecordBatch:
    """Flat nullable columns -> list columns where a null value stays a null list.

    Column types are kept as they are in the file (no cast to the dataset definition): a wrong
    type is exactly what validation must report, not fail on.
    """
    lists = to_list_batch(flat)
    arrays = []
    for flat_column, list_column in zip(flat.columns, lists.columns, strict=True):
        if flat_column.null_count == 0:
            arrays.append(list_column)
            continue
        arrays.append(
            pa.LargeListArray.from_arrays(
                list_column.offsets, list_column.values, mask=flat_column.is_null()
            )
        )
    return pa.RecordBatch.from_arrays(arrays, names=lists.schema.names)


def _table_to_batches(table: pa.Table, batch_size: int) -> Iterator[pa.RecordBatch]:
    for batch in table.to_batches(max_chunksize=batch_size):
        if batch.num_rows:
            yield to_validation_batch(batch)


def require_files(file_pattern: str) -> None:
    """Fail early, naming the pattern, instead of deep inside a Beam job."""
    matches = FileSystems.match([file_pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no split files match {file_pattern!r}")


class ReadValidationBatches(beam.PTransform):
    """Parquet files -> PCollection of list RecordBatches (nulls kept as null lists)."""

    def __init__(self, file_pattern: str, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self._file_pattern = file_pattern
        self._batch_size = batch_size

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        batch_size = self._batch_size
        return (
            pbegin
            | "ReadParquet" >> beam.io.ReadFromParquetBatched(self._file_pattern)
            | "ToListBatches" >> beam.FlatMap(_table_to_batches, batch_size=batch_size)
        )
