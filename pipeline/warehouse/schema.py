"""Physical types of the raw table on each engine, derived from the dataset definition.

The dataset definition speaks BigQuery types; the embedded warehouse (DuckDB) and the split files
(Parquet) need their own names for the same thing. Keeping the mapping here means the DDL, the
loaders and the split writer cannot disagree.
"""

from __future__ import annotations

from pipeline.definition import Column, ColumnType
from pipeline.warehouse.identifiers import TableRef, quote_duckdb


def duckdb_type(column_type: ColumnType) -> str:
    """DuckDB type that stores a column of ``column_type`` (see ``pipeline.definition.columns``)."""
    return column_type.facts.duckdb


def split_file_arrow_type(column_type: ColumnType) -> str:
    """Arrow type name (``pyarrow.type_for_alias``) of a column in the split files."""
    return column_type.facts.parquet


def duckdb_table_ref(table: str) -> TableRef:
    """A ``dataset.table`` as a validated reference (DuckDB schema + table)."""
    return TableRef.parse(table)


def duckdb_create_table_sql(table: str, columns: tuple[Column, ...]) -> list[str]:
    """DDL statements that create a raw table in a DuckDB database.

    Column nullability is not enforced in the DDL: the raw table mirrors the source as it is, and
    the warehouse stage's named filters remove (and count) the rows that break the definition.
    """
    ref = duckdb_table_ref(table)
    rendered = ",\n  ".join(f"{quote_duckdb(c.name)} {duckdb_type(c.type)}" for c in columns)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_duckdb(ref.dataset)}",
        f"CREATE TABLE {ref.duckdb_sql()} (\n  {rendered}\n)",
    ]


# How a loader's relation carries TIMESTAMP columns.
TIMESTAMP_INPUTS = ("unix_seconds", "text", "native")


def duckdb_insert_select_sql(
    table: str, columns: tuple[Column, ...], source: str, timestamps: str = "unix_seconds"
) -> str:
    """``INSERT`` into a raw table from a relation, converting TIMESTAMP columns once, here.

    ``timestamps`` says how the relation holds them: ``unix_seconds`` (integers), ``text`` (ISO
    8601; a value without an offset is read in the connection's ``TimeZone``, which the loader
    sets to the source's declared zone) or ``native`` (already timestamps). Either way the table
    stores naive UTC. ``source`` is a relation name or table function built by the caller, never
    user input.
    """
    if timestamps not in TIMESTAMP_INPUTS:
        raise ValueError(f"timestamps must be one of {TIMESTAMP_INPUTS}, got {timestamps!r}")
    ref = duckdb_table_ref(table)
    expressions = []
    for column in columns:
        name = quote_duckdb(column.name)
        if column.type is ColumnType.TIMESTAMP and timestamps == "unix_seconds":
            value = f"make_timestamp(CAST({name} AS BIGINT) * 1000000)"
        elif column.type is ColumnType.TIMESTAMP:
            value = f"timezone('UTC', CAST({name} AS TIMESTAMPTZ))"
        else:
            value = f"CAST({name} AS {duckdb_type(column.type)})"
        expressions.append(f"{value} AS {name}")
    select_list = ",\n  ".join(expressions)
    return f"INSERT INTO {ref.duckdb_sql()}\nSELECT\n  {select_list}\nFROM {source}"
