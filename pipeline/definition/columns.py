"""Raw column types and everything each type means along the pipeline, in one table.

A raw column has a warehouse type (BigQuery Standard SQL). Every stage needs its own name for
the same thing: DuckDB's type for the embedded warehouse, the Parquet/Arrow type of split files,
the value type of Arrow list batches (TFXIO), the TensorFlow dtype a ``tf.Example`` feature is
parsed as, the ``tf.Example`` list that carries it, how a ``serving_raw`` client marks a missing
value, and how a JSON error names the expected value. :data:`TYPE_FACTS` holds all of them, so
no two modules can disagree about a type.

Pure Python on purpose (type names as strings): light processes (the DAG parser, the warehouse
CLI) import definitions without TensorFlow or pyarrow.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

# Smallest integer a JavaScript client can send exactly: the ``serving_raw`` missing marker of
# INT64 columns (TF Serving's row format needs a value for every named input).
MISSING_INT64 = -(2**53 - 1)


@dataclasses.dataclass(frozen=True)
class TypeFacts:
    """What one warehouse type becomes in each stage (see the module docstring)."""

    bigquery: str  # warehouse type (BigQuery Standard SQL)
    duckdb: str  # embedded warehouse type
    split_file: str  # type in split files and serving requests: INT64, FLOAT64 or STRING
    parquet: str  # pyarrow.type_for_alias name of the split-file column
    list_value: str  # pyarrow.type_for_alias name of the value type inside list batches
    tf_dtype: str  # tf.as_dtype name a tf.Example feature is parsed as
    example_list: str  # field of tf.train.Feature that carries the values
    missing_marker: Any  # how a serving_raw client marks a missing value
    json_expected: str  # what a JSON request must send, for error messages
    numeric: bool
    python_default: Any  # type-appropriate default for an absent value in instance transforms


_INT64 = TypeFacts(
    "INT64", "BIGINT", "INT64", "int64", "int64", "int64", "int64_list", MISSING_INT64,
    "an integer (INT64)", True, 0,
)  # fmt: skip
_FLOAT64 = TypeFacts(
    "FLOAT64", "DOUBLE", "FLOAT64", "double", "float", "float32", "float_list", math.nan,
    "a number (FLOAT64)", True, 0.0,
)  # fmt: skip
_STRING = TypeFacts(
    "STRING", "VARCHAR", "STRING", "string", "large_binary", "string", "bytes_list", "",
    'a string or {"b64": ...} (STRING)', False, "",
)  # fmt: skip
# A naive TIMESTAMP holding UTC in DuckDB: BigQuery TIMESTAMP is an instant, and a naive value
# keeps the session time zone out of every comparison. It leaves the warehouse as INT64 Unix
# seconds: tf.Example has no timestamp type, and a client sends the same integer it would log.
_TIMESTAMP = dataclasses.replace(_INT64, bigquery="TIMESTAMP", duckdb="TIMESTAMP")


class ColumnType(enum.StrEnum):
    """Warehouse (BigQuery Standard SQL) types of raw columns."""

    INT64 = "INT64"
    FLOAT64 = "FLOAT64"
    STRING = "STRING"
    TIMESTAMP = "TIMESTAMP"

    @property
    def facts(self) -> TypeFacts:
        return TYPE_FACTS[self]

    @property
    def split_file_type(self) -> str:
        """Type in split files and serving requests (INT64, FLOAT64 or STRING)."""
        return self.facts.split_file

    @property
    def is_numeric(self) -> bool:
        return self.facts.numeric


TYPE_FACTS: dict[ColumnType, TypeFacts] = {
    ColumnType.INT64: _INT64,
    ColumnType.FLOAT64: _FLOAT64,
    ColumnType.STRING: _STRING,
    ColumnType.TIMESTAMP: _TIMESTAMP,
}


@dataclasses.dataclass(frozen=True)
class Column:
    """One raw column of a warehouse table."""

    name: str
    type: ColumnType
    description: str = ""
    # False when every row must carry a value (the warehouse filters the others out, counted).
    nullable: bool = True
