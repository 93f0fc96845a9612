"""Split files as the warehouse writes them, for validation tests: built from the taxi sample.

The contract: one Parquet directory per split, the dataset definition's columns in order, types
int64/double/string, nullable; TIMESTAMP columns as int64 Unix seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset import DatasetDefinition

REPO_ROOT = Path(__file__).resolve().parents[1]
# Where the sample may be: explicit override, `make data`'s copy, the unpacked tfx wheel.
SAMPLE_CANDIDATES = (
    Path(os.environ.get("TAXI_SAMPLE_CSV", "/nonexistent")),
    REPO_ROOT / "data" / "taxi" / "data.csv",
    Path("/tmp/tfxwheel/data.csv"),
)

_ARROW_TYPES = {"INT64": pa.int64(), "FLOAT64": pa.float64(), "STRING": pa.string()}
_PANDAS_TYPES = {"INT64": "Int64", "FLOAT64": "float64", "STRING": "string"}


def split_file_schema(dataset: DatasetDefinition) -> pa.Schema:
    """Arrow schema of the warehouse's split files."""
    return pa.schema(
        [pa.field(c.name, _ARROW_TYPES[c.type.split_file_type]) for c in dataset.columns]
    )


def find_sample() -> Path | None:
    """The taxi sample CSV, if present on this machine."""
    return next((path for path in SAMPLE_CANDIDATES if path.is_file()), None)


def read_sample(dataset: DatasetDefinition, path: Path) -> pd.DataFrame:
    """The sample CSV with nullable pandas dtypes that follow the definition."""
    dtypes = {c.name: _PANDAS_TYPES[c.type.split_file_type] for c in dataset.columns}
    return pd.read_csv(path, dtype=dtypes)[list(dataset.column_names)]


def write_split(frame: pd.DataFrame, directory: Path, schema: pa.Schema | None = None) -> str:
    """Write ``frame`` as ``directory/part-00000.parquet``; returns the split's file pattern.

    Without ``schema`` the frame's own columns and types are written (for injected faults).
    """
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, directory / "part-00000.parquet")
    return str(directory / "part-*.parquet")
