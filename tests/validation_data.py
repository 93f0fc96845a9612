"""Split files as the warehouse writes them, for validation tests: built from the taxi sample.

The contract: one Parquet directory per split, the dataset definition's columns in order, types
int64/double/string, nullable; TIMESTAMP columns as int64 Unix seconds. Serving request logs are
uncompressed TFRecord files of raw ``tf.Example``s, as :mod:`pipeline.serving.request_log` writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.arrow_io import list_batch_schema, to_list_batch
from pipeline.definition import DatasetDefinition

REPO_ROOT = Path(__file__).resolve().parents[1]

_ARROW_TYPES = {"INT64": pa.int64(), "FLOAT64": pa.float64(), "STRING": pa.string()}
_PANDAS_TYPES = {"INT64": "Int64", "FLOAT64": "float64", "STRING": "string"}


def split_file_schema(dataset: DatasetDefinition) -> pa.Schema:
    """Arrow schema of the warehouse's split files (raw and derived columns, no label)."""
    return pa.schema(
        [pa.field(c.name, _ARROW_TYPES[c.type.split_file_type]) for c in dataset.row_columns]
    )


def find_sample() -> Path:
    """The checksum-verified taxi sample CSV (``TAXI_SAMPLE_CSV``, or the setup's copy in data/).

    ``make test`` prepares data/ first; run alone, this fetches the sample the same way.
    """
    override = os.environ.get("TAXI_SAMPLE_CSV")
    if override:
        return Path(override)
    from pipeline.data.fetch import fetch_file
    from pipeline.datasets import get_dataset

    taxi = get_dataset("taxi")
    return fetch_file(taxi, taxi.source.file_for(taxi.table), REPO_ROOT / "data")


def read_sample(dataset: DatasetDefinition, path: Path) -> pd.DataFrame:
    """The sample CSV with nullable pandas dtypes that follow the definition, plus the window
    counts the warehouse derives (trips from the same pickup area in the hour / day before)."""
    dtypes = {c.name: _PANDAS_TYPES[c.type.split_file_type] for c in dataset.columns}
    frame = pd.read_csv(path, dtype=dtypes)[list(dataset.column_names)]
    for window in dataset.windows:
        for name, _, seconds in window.outputs:
            frame[name] = _prior_counts(frame, window.keys[0], dataset.timestamp_column, seconds)
    return frame[[c.name for c in dataset.row_columns]]


def _prior_counts(frame: pd.DataFrame, key: str, time: str, seconds: int) -> pd.Series:
    """Per row: rows of the same key with time in [t - seconds, t) (NULL key: missing)."""
    counts = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    for _, group in frame[frame[key].notna()].groupby(key):
        times = np.sort(group[time].to_numpy(dtype=np.int64))
        own = group[time].to_numpy(dtype=np.int64)
        before = np.searchsorted(times, own, side="left")
        start = np.searchsorted(times, own - seconds, side="left")
        counts.loc[group.index] = before - start
    return counts


def write_split(frame: pd.DataFrame, directory: Path, schema: pa.Schema | None = None) -> str:
    """Write ``frame`` as ``directory/part-00000.parquet``; returns the split's file pattern.

    Without ``schema`` the frame's own columns and types are written (for injected faults).
    """
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, directory / "part-00000.parquet")
    return str(directory / "part-*.parquet")


def write_request_log(
    frame: pd.DataFrame, directory: Path, dataset: DatasetDefinition, files: int = 2
) -> Path:
    """Write ``frame``'s rows as raw ``tf.Example`` request log files in ``directory``.

    Encoded like the server does it (tfx_bsl's encoder over list batches; a null becomes an
    absent feature), split over ``files`` files named as the server names them.
    """
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    batch = to_list_batch(table, list_batch_schema(dataset, tuple(frame.columns)))
    examples = RecordBatchToExamplesEncoder().encode(batch)
    for index, part in enumerate(np.array_split(np.arange(len(examples)), files)):
        path = directory / f"requests-20260101T000000Z-100-{index + 1:06d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for row in part:
                writer.write(examples[row])
    return directory
