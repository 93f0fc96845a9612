"""Arrow batches from split files, in the layout TFXIO, TFDV and TFT consume.

The warehouse writes each split as Parquet with one flat, nullable column per raw column.
TFX libraries expect every column as a list array (one list per row, a null list for a missing
value), because a ``tf.Example`` feature is a list. :func:`to_list_batch` does that conversion
with vectorized Arrow/NumPy operations, so no Python code runs per row, and
:class:`ReadSplitBatches` streams Parquet into such batches on Beam.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.definition import ColumnType, DatasetDefinition

DEFAULT_BATCH_SIZE = 8192


def value_type(column_type: ColumnType) -> pa.DataType:
    """Arrow value type of a raw column inside list batches (float32, as tf.Example carries
    floats; large_binary, TFXIO's type for bytes features)."""
    return pa.type_for_alias(column_type.facts.list_value)


def list_batch_schema(
    dataset: DatasetDefinition, columns: tuple[str, ...] | None = None
) -> pa.Schema:
    """Arrow schema of the list batches for ``columns`` (default: every column of the split
    files, the raw columns and the label)."""
    names = columns or tuple(c.name for c in dataset.split_file_columns)
    return pa.schema(
        [pa.field(n, pa.large_list(value_type(dataset.split_column(n).type))) for n in names]
    )


def _to_list_array(array: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.LargeListArray:
    """Wrap a flat nullable array as ``large_list<target>``: value -> [value], null -> null.

    A null list (not an empty one) is what TFXIO's tf.Example decoder yields for an absent
    feature: TFDV counts it as missing, so presence constraints fire; TFT reads both as no value.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_large_list(array.type) or pa.types.is_list(array.type):
        return array.cast(pa.large_list(target))
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = array.cast(pa.large_string())
    offsets = np.zeros(len(array) + 1, dtype=np.int64)
    if not array.null_count:
        offsets[1:] = np.arange(1, len(array) + 1)
        return pa.LargeListArray.from_arrays(pa.array(offsets), array.cast(target))
    valid = array.is_valid()
    np.cumsum(valid.to_numpy(zero_copy_only=False), out=offsets[1:])
    values = array.filter(valid).cast(target)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values, mask=array.is_null())


def to_list_batch(
    data: pa.RecordBatch | pa.Table, schema: pa.Schema | None = None
) -> pa.RecordBatch:
    """Convert a flat batch or table to list columns.

    With ``schema`` (see :func:`list_batch_schema`) the result has exactly its columns and value
    types; a column the schema names but the data lacks raises ``KeyError`` naming it. Without a
    schema every column keeps its own value type (strings become binary).
    """
    if schema is None:
        arrays = []
        for field, column in zip(data.schema, data.columns, strict=True):
            target = pa.large_binary() if pa.types.is_string(field.type) else field.type
            arrays.append(_to_list_array(column, target))
        return pa.RecordBatch.from_arrays(arrays, names=data.schema.names)
    arrays = []
    for field in schema:
        index = data.schema.get_field_index(field.name)
        if index < 0:
            raise KeyError(f"split data has no column {field.name!r}; it has {data.schema.names}")
        try:
            arrays.append(_to_list_array(data.column(index), field.type.value_type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise TypeError(
                f"column {field.name!r} of type {data.schema.field(index).type} cannot be read as "
                f"{field.type.value_type}: {error}"
            ) from error
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def iter_parquet_list_batches(
    paths: list[str], schema: pa.Schema, batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[pa.RecordBatch]:
    """Stream list batches from Parquet files (paths or gs:// URIs) outside Beam."""
    for path in paths:
        with storage.open_read(path) as handle:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=batch_size, columns=schema.names):
                yield to_list_batch(batch, schema)


def read_first_rows(split_dir: Path | str, schema: pa.Schema, rows: int) -> pa.RecordBatch:
    """The first ``rows`` rows of a split directory's Parquet files as one list batch."""
    paths = storage.glob(storage.join(split_dir, "*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no Parquet files in {split_dir}")
    batches, taken = [], 0
    for batch in iter_parquet_list_batches(paths, schema, batch_size=max(rows, 1)):
        batches.append(batch.slice(0, rows - taken))
        taken += batches[-1].num_rows
        if taken >= rows:
            break
    table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    return table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema)


class ReadSplitBatches(beam.PTransform):
    """Parquet files -> PCollection of list RecordBatches.

    With ``schema`` only its columns are read and cast to its value types; without one every column
    is read and keeps its own type.
    """

    def __init__(
        self,
        file_pattern: str,
        schema: pa.Schema | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        super().__init__()
        self._file_pattern = file_pattern
        self._schema = schema
        self._batch_size = batch_size

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        schema = self._schema
        batch_size = self._batch_size
        return (
            pbegin
            | "ReadParquet"
            >> beam.io.ReadFromParquetBatched(
                self._file_pattern, columns=list(schema.names) if schema else None
            )
            | "ToListBatches"
            >> beam.FlatMap(
                lambda table: (
                    to_list_batch(b, schema) for b in table.to_batches(batch_size) if b.num_rows
                )
            )
        )
