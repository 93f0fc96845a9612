"""Physical types of the raw table on each engine, derived from the dataset definition.

The dataset definition speaks BigQuery types; the embedded warehouse (DuckDB) and the split files
(Parquet) need their own names for the same thing. Keeping the mapping here means the DDL, the
loaders and the split writer cannot disagree.
"""

from __future__ import annotations

from pipeline.dataset import ColumnType, DatasetDefinition
from pipeline.warehouse.identifiers import TableRef, quote_duckdb

DUCKDB_TYPES: dict[ColumnType, str] = {
    ColumnType.INT64: "BIGINT",
    ColumnType.FLOAT64: "DOUBLE",
    ColumnType.STRING: "VARCHAR",
    # Naive TIMESTAMP holding UTC: BigQuery TIMESTAMP is an instant, and a naive value keeps the
    # session time zone out of every comparison and conversion.
    ColumnType.TIMESTAMP: "TIMESTAMP",
}

# Arrow/Parquet type names of split-file columns (TIMESTAMP leaves the warehouse as Unix seconds).
SPLIT_FILE_ARROW_TYPES: dict[str, str] = {"INT64": "int64", "FLOAT64": "double", "STRING": "string"}


def duckdb_type(column_type: ColumnType) -> str:
    """DuckDB type that stores a column of ``column_type``."""
    return DUCKDB_TYPES[column_type]


def split_file_arrow_type(column_type: ColumnType) -> str:
    """Arrow type name (``pyarrow.type_for_alias``) of a column in the split files."""
    return SPLIT_FILE_ARROW_TYPES[column_type.split_file_type]


def duckdb_table_ref(definition: DatasetDefinition) -> TableRef:
    """The definition's ``dataset.table`` as a validated reference (DuckDB schema + table)."""
    return TableRef.parse(definition.table)


def duckdb_create_table_sql(definition: DatasetDefinition) -> list[str]:
    """DDL statements that create the raw table of ``definition`` in an empty DuckDB database.

    Column nullability is not enforced in the DDL: the raw table mirrors the source as it is, and
    the warehouse stage's named filters remove (and count) the rows that break the definition.
    """
    ref = duckdb_table_ref(definition)
    columns = ",\n  ".join(
        f"{quote_duckdb(c.name)} {duckdb_type(c.type)}" for c in definition.columns
    )
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_duckdb(ref.dataset)}",
        f"CREATE TABLE {ref.duckdb_sql()} (\n  {columns}\n)",
    ]


def duckdb_insert_select_sql(definition: DatasetDefinition, source: str) -> str:
    """``INSERT`` of the raw table from a relation whose TIMESTAMP columns hold Unix seconds.

    Both loaders (the taxi CSV and the synthetic generator) carry timestamps as integer seconds,
    as the CSV does; the conversion happens once, here, independently of the session time zone.
    ``source`` is a relation name or table function built by the caller, never user input.
    """
    ref = duckdb_table_ref(definition)
    expressions = []
    for column in definition.columns:
        name = quote_duckdb(column.name)
        if column.type is ColumnType.TIMESTAMP:
            expressions.append(f"make_timestamp(CAST({name} AS BIGINT) * 1000000) AS {name}")
        else:
            expressions.append(f"CAST({name} AS {duckdb_type(column.type)}) AS {name}")
    select_list = ",\n  ".join(expressions)
    return f"INSERT INTO {ref.duckdb_sql()}\nSELECT\n  {select_list}\nFROM {source}"
