"""Batch scoring on the embedded warehouse: rows out of DuckDB, predictions back in, atomically.

Input: the score query (BigQuery SQL, transpiled by sqlglot like the warehouse stage's) runs on
the warehouse file, or on a split directory's Parquet loaded into an in-memory DuckDB table of the
definition's layout (so the row key is computed by the same SQL), and is copied to Parquet for the
Beam job. Output: the prediction shards are loaded into a staging table, counted, and renamed to
the target in one transaction, replacing an earlier table only when everything succeeded.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from pipeline.definition import DatasetDefinition
from pipeline.warehouse import fingerprint
from pipeline.warehouse.duckdb_engine import DuckDBEngine, duckdb_params, transpile
from pipeline.warehouse.identifiers import TableRef, quote_duckdb
from pipeline.warehouse.query import Query
from pipeline.warehouse.schema import duckdb_create_table_sql, duckdb_insert_select_sql

# One file per row group: Beam hands whole files to workers, so several files let them share
# the rows (a single file of a million rows went to one worker).
ROW_GROUP_ROWS = 100_000


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _split_dir_connection(definition: DatasetDefinition, split_dir: Path):
    """An in-memory warehouse holding a split directory's rows as the definition's raw table,
    with the derived columns the split computed (window features, joins)."""
    import duckdb

    files = sorted(Path(split_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {split_dir}")
    connection = duckdb.connect()
    fingerprint.register_duckdb(connection)
    table, columns = definition.table, definition.row_columns
    for statement in duckdb_create_table_sql(table, columns):
        connection.execute(statement)
    source = "read_parquet([" + ", ".join(_literal(str(f)) for f in files) + "])"
    connection.execute(duckdb_insert_select_sql(table, columns, source))
    return connection


def export_input(
    query: Query,
    directory: Path,
    *,
    warehouse: Path | None = None,
    split_dir: Path | None = None,
    definition: DatasetDefinition | None = None,
) -> tuple[str, int]:
    """Run the score query on the warehouse file (or a split dir); write its rows to Parquet.

    Returns the Parquet pattern and the number of rows.
    """
    if split_dir is not None:
        connection = _split_dir_connection(definition, split_dir)
    else:
        connection = DuckDBEngine(warehouse).connect()
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    copy = (
        f"COPY (\n{transpile(query)}\n) TO {_literal(str(directory))} "
        f"(FORMAT PARQUET, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, ROW_GROUPS_PER_FILE 1)"
    )
    try:
        (rows,) = connection.execute(copy, duckdb_params(query)).fetchone()
    finally:
        connection.close()
    return str(directory / "*.parquet"), int(rows)


def publish(database: Path, table: TableRef, shards: list[str], expected_rows: int) -> None:
    """Replace ``table`` in ``database`` with the shards' rows, or change nothing.

    One transaction: load into ``<table>__staging_<id>``, check the row count, drop the old
    table, rename the staging one. A failure at any step rolls all of it back.
    """
    import duckdb

    staging = table.with_table(f"{table.table}__staging_{uuid.uuid4().hex[:8]}")
    files = "[" + ", ".join(_literal(s) for s in shards) + "]"
    connection = duckdb.connect(str(database))
    try:
        connection.execute("BEGIN TRANSACTION")
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_duckdb(table.dataset)}")
        connection.execute(
            f"CREATE TABLE {staging.duckdb_sql()} AS SELECT * FROM read_parquet({files})"
        )
        (loaded,) = connection.execute(f"SELECT COUNT(*) FROM {staging.duckdb_sql()}").fetchone()
        if loaded != expected_rows:
            raise RuntimeError(
                f"{table.dotted()}: {loaded} predictions for {expected_rows} input rows"
            )
        connection.execute(f"DROP TABLE IF EXISTS {table.duckdb_sql()}")
        connection.execute(
            f"ALTER TABLE {staging.duckdb_sql()} RENAME TO {quote_duckdb(table.table)}"
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()
