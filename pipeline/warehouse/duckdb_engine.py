"""The embedded engine: the BigQuery SQL, transpiled by sqlglot, on a DuckDB file."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.definition import SPLIT_NAMES, DatasetDefinition
from pipeline.verdicts import Verdict
from pipeline.warehouse import fingerprint
from pipeline.warehouse.engine import SplitOutput
from pipeline.warehouse.identifiers import TableRef, quote_duckdb
from pipeline.warehouse.query import Query
from pipeline.warehouse.schema import split_file_arrow_type

PARTITION_DIR = "_partitions"


class WarehouseFileProblem(Verdict, FileNotFoundError):
    """The warehouse file is missing or is not a DuckDB database (names the file).

    A retry reads the same file, so this is a verdict, not a crash to retry.
    """


def transpile(query: Query) -> str:
    """DuckDB text of a BigQuery query; its ``$name`` parameters must be exactly the query's."""
    import sqlglot
    from sqlglot import exp

    (duckdb_sql,) = sqlglot.transpile(query.sql, read="bigquery", write="duckdb", pretty=True)
    placeholders = sqlglot.parse_one(duckdb_sql, read="duckdb").find_all(exp.Placeholder)
    names = {p.name for p in placeholders}
    if names != set(query.params):
        raise ValueError(
            f"{query.name}: transpiled parameters {sorted(names)} differ from the query's "
            f"{sorted(query.params)}"
        )
    return duckdb_sql


def duckdb_params(query: Query) -> dict[str, Any]:
    """Parameter values for DuckDB: TIMESTAMPs become naive UTC, like the warehouse columns."""
    values = {}
    for name, value in query.params.items():
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        values[name] = value
    return values


def expected_arrow_schema(definition: DatasetDefinition):
    """The split files' schema: definition columns in order (TIMESTAMP as int64 seconds), then
    the label."""
    import pyarrow as pa

    columns = definition.split_file_columns
    return pa.schema([(c.name, pa.type_for_alias(split_file_arrow_type(c.type))) for c in columns])


class DuckDBEngine:
    """Runs the warehouse queries on a DuckDB file, opened read-only."""

    name = "duckdb"
    writes_locally = True

    def __init__(self, database: Path, threads: int | None = None) -> None:
        self.database = Path(database)
        self.threads = threads

    def connect(self):
        """A read-only connection with BigQuery's FARM_FINGERPRINT registered."""
        import duckdb

        if not self.database.is_file():
            raise WarehouseFileProblem(
                f"warehouse {self.database} not found (python -m pipeline.data prepare)"
            )
        try:
            connection = duckdb.connect(str(self.database), read_only=True)
        except duckdb.IOException as error:
            if "not a valid DuckDB database" not in str(error):
                raise  # e.g. a lock another process holds: worth a retry
            raise WarehouseFileProblem(
                f"warehouse {self.database} cannot be opened as a DuckDB database: {error}"
            ) from None
        fingerprint.register_duckdb(connection)
        # COPY may stream in any order: splits are sets, not sequences.
        connection.execute("SET preserve_insertion_order = false")
        connection.execute("SET enable_progress_bar = false")
        if self.threads:
            connection.execute(f"SET threads = {int(self.threads)}")
        return connection

    def dry_run(self, queries: list[Query]) -> dict[str, Any]:
        """Transpile and plan every query (binds parameters and names) without running it."""
        connection = self.connect()
        try:
            for query in queries:
                connection.execute("EXPLAIN " + transpile(query), duckdb_params(query))
        finally:
            connection.close()
        return {"engine": self.name, "planned": [q.name for q in queries]}

    def describe_table(self, table: TableRef) -> dict[str, str] | None:
        """Column name -> DuckDB type of ``table``; None when it does not exist."""
        connection = self.connect()
        try:
            rows = connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [table.dataset, table.table],
            ).fetchall()
        finally:
            connection.close()
        return {name: kind for name, kind in rows} or None

    def filter_counts(self, query: Query) -> tuple[dict[str, int], str]:
        sql = transpile(query)
        connection = self.connect()
        try:
            cursor = connection.execute(sql, duckdb_params(query))
            names = [d[0] for d in cursor.description]
            row = cursor.fetchone()
        finally:
            connection.close()
        # Over an empty table COUNTIF sums nothing: NULL on some engines, 0 on others.
        return {n: int(v or 0) for n, v in zip(names, row, strict=True)}, sql

    def write_splits(
        self, query: Query, destination: str, definition: DatasetDefinition
    ) -> SplitOutput:
        """COPY the split query to Parquet partitioned by split, then one ordered file per split."""
        sql = transpile(query)
        staging = Path(destination)
        partitions = staging / PARTITION_DIR
        copy = (
            f"COPY (\n{sql}\n) TO {_literal(str(partitions))} "
            "(FORMAT PARQUET, PARTITION_BY (_split), OVERWRITE_OR_IGNORE)"
        )
        connection = self.connect()
        try:
            connection.execute(copy, duckdb_params(query))
            found = {p.name for p in partitions.iterdir()} if partitions.is_dir() else set()
            unknown = found - {f"_split={split}" for split in SPLIT_NAMES}
            if unknown:
                raise RuntimeError(f"split query produced unexpected partitions: {sorted(unknown)}")
            schema = expected_arrow_schema(definition)
            connection.execute("SET preserve_insertion_order = true")
            dirs, rows = {}, {}
            for split in SPLIT_NAMES:
                files = sorted((partitions / f"_split={split}").glob("*.parquet"))
                dirs[split], rows[split] = _write_split_in_order(
                    connection, files, staging / split, schema
                )
        finally:
            connection.close()
        shutil.rmtree(partitions, ignore_errors=True)
        return SplitOutput(dirs, rows, {query.name: copy})


def _write_split_in_order(
    connection, files: list[Path], split_dir: Path, schema
) -> tuple[str, int]:
    """Rewrite a split's partition files as one ``part-00000.parquet`` in a fixed row order.

    The partitioned COPY writes rows in the order its threads finish them, so from about 122,880
    rows (one DuckDB row group per thread) the same query wrote the same rows in another order
    each run, and transform_fn's quantiles and the model followed. Rows are ordered by a hash of
    the whole row, ties by every column: the same rows give the same bytes whatever the number of
    threads, and the order stays mixed (not sorted by the first column) for a streamed split's
    shuffle buffer. DuckDB's ``hash`` is fixed within a DuckDB version.
    """
    import pyarrow.parquet as pq

    split_dir.mkdir(parents=True)
    target = split_dir / "part-00000.parquet"
    if not files:
        pq.write_table(schema.empty_table(), target)
        return str(split_dir), 0
    rows = 0
    for path in files:
        parquet = pq.ParquetFile(path)
        if not parquet.schema_arrow.equals(schema):
            raise TypeError(
                f"{path}: schema {parquet.schema_arrow} differs from the definition's {schema}"
            )
        rows += parquet.metadata.num_rows
    columns = ", ".join(quote_duckdb(name) for name in schema.names)
    sources = "[" + ", ".join(_literal(str(path)) for path in files) + "]"
    connection.execute(
        f"COPY (SELECT {columns} FROM read_parquet({sources}, hive_partitioning = false) "
        f"ORDER BY hash({columns}), {columns}) TO {_literal(str(target))} (FORMAT PARQUET)"
    )
    return str(split_dir), rows


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
