"""The source table against the definition, before any split query runs.

A table that lacks a column, holds one of an incompatible type, or has no rows would otherwise
fail deep inside the engine (a binder error that does not name the column, a type error on an
empty result) and look like a crash. Checked here first, each is a :class:`TableProblem`, a
verdict that names the table and the column.
"""

from __future__ import annotations

import re

from pipeline.definition import Column, ColumnType, DatasetDefinition
from pipeline.verdicts import Verdict

_INTEGERS = {"BIGINT", "INTEGER", "INT", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER",
             "USMALLINT", "UTINYINT", "INT64", "INT32", "INT16", "INT8"}  # fmt: skip
_FLOATS = {"DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC", "BIGNUMERIC", "FLOAT64", "FLOAT32"}
# Engine types (DuckDB's DESCRIBE, BigQuery's schema field types) a definition type accepts.
COMPATIBLE: dict[ColumnType, set[str]] = {
    ColumnType.INT64: _INTEGERS,
    ColumnType.FLOAT64: _FLOATS | _INTEGERS,
    ColumnType.STRING: {"VARCHAR", "STRING", "TEXT"},
    ColumnType.TIMESTAMP: {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"},
}


class TableProblem(Verdict):
    """The warehouse table does not fit the dataset definition (names table and column)."""


def base_type(engine_type: str) -> str:
    """``DECIMAL(18,3)`` -> ``DECIMAL``; ``timestamp with time zone`` -> upper case."""
    return re.sub(r"\(.*\)$", "", engine_type.strip()).upper()


def check_table(
    definition: DatasetDefinition,
    table: str,
    described: dict[str, str] | None,
    columns: tuple[Column, ...] | None = None,
) -> list[str]:
    """Raise :class:`TableProblem` unless ``table`` has every column with a compatible type.

    ``described`` maps the table's column names to their engine types (None: no such table);
    ``columns`` are the declared ones (default: the definition's main table's). Returns the
    table's extra columns, which the pipeline ignores (reported, not an error).
    """
    if described is None:
        raise TableProblem(f"table {table} does not exist in the warehouse")
    columns = definition.columns if columns is None else columns
    missing = [c.name for c in columns if c.name not in described]
    if missing:
        raise TableProblem(
            f"table {table} lacks column(s) {missing} of dataset {definition.name!r} "
            f"(it has {sorted(described)})"
        )
    wrong = [
        f"{c.name} is {described[c.name]}, the definition says {c.type}"
        for c in columns
        if base_type(described[c.name]) not in COMPATIBLE[c.type]
    ]
    if wrong:
        raise TableProblem(f"table {table}: column type mismatch: " + "; ".join(wrong))
    return sorted(set(described) - {c.name for c in columns})
