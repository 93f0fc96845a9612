"""Loading raw files into the embedded warehouse (a DuckDB file), typed by the definition.

Each table of a dataset (its main table and its side tables) is created with the column types of
the definition and filled from its source file with the declared null tokens and timestamp
format. Rows that cannot be read (a value that is not of its column's type, a malformed line, an
unreadable timestamp) are not dropped: they are kept aside in ``<table>__rejected`` with the
line, the column and the reason, and counted in the warehouse's sidecar. The file is built under
a temporary name and renamed into place, so a crash never leaves a half-built warehouse.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.definition import Column, ColumnType, CsvFormat, ParquetFormat, TimestampFormat
from pipeline.verdicts import Verdict
from pipeline.warehouse.identifiers import TableRef, quote_duckdb
from pipeline.warehouse.schema import (
    duckdb_create_table_sql,
    duckdb_insert_select_sql,
    duckdb_type,
)

REJECTED_SUFFIX = "__rejected"
_REJECT_COLUMNS = (
    "line BIGINT, column_name VARCHAR, error_type VARCHAR, row_text VARCHAR, error VARCHAR"
)


class SourceFormatError(Verdict, ValueError):
    """A source file does not have the columns its table declares (names the file and columns).

    A verdict: reloading the same file ends the same way."""


def sql_string(value: str) -> str:
    """A SQL string literal (for file paths and tokens chosen by a definition, not user values)."""
    return "'" + value.replace("'", "''") + "'"


def rejected_table(table: str) -> TableRef:
    ref = TableRef.parse(table)
    return ref.with_table(ref.table + REJECTED_SUFFIX)


def layout_fingerprint(tables: dict[str, tuple[Column, ...]]) -> str:
    """Changes whenever the table layout the definition implies changes (forces a rebuild)."""
    layout = [
        [table, [(c.name, c.type.value) for c in columns]] for table, columns in tables.items()
    ]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


# ---- the warehouse file -------------------------------------------------------------------------


def sidecar_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".json")


def read_sidecar(db_path: Path) -> dict | None:
    """What the warehouse file was built from, or None when unknown or the file is missing."""
    sidecar = sidecar_path(db_path)
    if not (db_path.is_file() and sidecar.is_file()):
        return None
    try:
        return json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_sidecar(db_path: Path, info: dict) -> None:
    sidecar = sidecar_path(db_path)
    partial = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(partial, sidecar)


def build_atomically(db_path: Path, build: Callable) -> dict:
    """Run ``build(connection) -> report`` on a fresh temporary database, then rename it into
    place."""
    import duckdb

    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    partial = db_path.with_name(f".{db_path.name}.{os.getpid()}.partial")
    for leftover in (partial, partial.with_name(partial.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        connection = duckdb.connect(str(partial))
        try:
            report = build(connection)
            connection.execute("CHECKPOINT")
        finally:
            connection.close()
        sidecar_path(db_path).unlink(missing_ok=True)
        os.replace(partial, db_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return report


def count_rows(connection, table: str) -> int:
    return connection.execute(
        f"SELECT COUNT(*) FROM {TableRef.parse(table).duckdb_sql()}"
    ).fetchone()[0]


# ---- loaders ------------------------------------------------------------------------------------


def load_file(connection, table: str, columns: tuple[Column, ...], path: Path, file_format) -> dict:
    """Create ``table`` and load ``path`` into it; returns ``{"rows": n, "rejected": m}``."""
    if isinstance(file_format, ParquetFormat):
        return _load_parquet(connection, table, columns, path)
    if isinstance(file_format, CsvFormat):
        return _load_csv(connection, table, columns, path, file_format)
    raise TypeError(f"unsupported file format {file_format!r}")


def _check_header(path: Path, names: list[str], columns: tuple[Column, ...], table: str) -> None:
    wanted = [c.name for c in columns]
    missing = sorted(set(wanted) - set(names))
    extra = sorted(set(names) - set(wanted))
    if missing or extra or len(set(names)) != len(names):
        raise SourceFormatError(
            f"{path}: columns do not match table {table}: missing {missing}, unexpected {extra}"
            + (" (duplicate names)" if len(set(names)) != len(names) else "")
        )


def _load_csv(connection, table, columns, path: Path, fmt: CsvFormat) -> dict:
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle, delimiter=fmt.delimiter), [])
    _check_header(path, header, columns, table)
    by_name = {c.name: c for c in columns}
    text_timestamps = fmt.timestamps is TimestampFormat.ISO8601
    read_types = {}
    for name in header:
        column_type = by_name[name].type
        if column_type is ColumnType.TIMESTAMP:
            read_types[name] = "VARCHAR" if text_timestamps else "BIGINT"
        else:
            read_types[name] = duckdb_type(column_type)
    column_spec = ", ".join(f"{sql_string(n)}: {sql_string(t)}" for n, t in read_types.items())
    nulls = ", ".join(sql_string(token) for token in fmt.null_tokens)
    reader = (
        f"read_csv({sql_string(str(path))}, header = true, auto_detect = false, "
        f"delim = {sql_string(fmt.delimiter)}, quote = '\"', nullstr = [{nulls}], "
        f"columns = {{{column_spec}}}, store_rejects = true, rejects_table = '_csv_rejects', "
        "rejects_scan = '_csv_scans')"
    )
    connection.execute("DROP TABLE IF EXISTS _raw")
    connection.execute(f"CREATE TEMP TABLE _raw AS SELECT * FROM {reader}")
    _create(connection, table, columns)
    rejects = rejected_table(table).duckdb_sql()
    connection.execute(
        f"INSERT INTO {rejects} SELECT line, column_name, CAST(error_type AS VARCHAR), csv_line, "
        "error_message FROM _csv_rejects"
    )
    connection.execute(f"SET TimeZone = {sql_string(fmt.timezone)}")
    valid = _keep_readable_timestamps(connection, table, columns, text_timestamps)
    timestamps = "text" if text_timestamps else "unix_seconds"
    connection.execute(
        duckdb_insert_select_sql(table, columns, f"(SELECT * FROM _raw WHERE {valid})", timestamps)
    )
    connection.execute("DROP TABLE _raw")
    return _report(connection, table)


def _keep_readable_timestamps(connection, table, columns, text_timestamps: bool) -> str:
    """Move rows whose timestamp text cannot be read to the rejects; the predicate of the rest."""
    if not text_timestamps:
        return "TRUE"
    checks = []
    for column in columns:
        if column.type is not ColumnType.TIMESTAMP:
            continue
        name = quote_duckdb(column.name)
        bad = f"{name} IS NOT NULL AND TRY_CAST({name} AS TIMESTAMPTZ) IS NULL"
        connection.execute(
            f"INSERT INTO {rejected_table(table).duckdb_sql()} SELECT NULL, "
            f"{sql_string(column.name)}, 'CAST', CAST(_raw AS VARCHAR), "
            f"'not a timestamp: ' || {name} FROM _raw WHERE {bad}"
        )
        checks.append(f"NOT ({bad})")
    return " AND ".join(checks) or "TRUE"


def _load_parquet(connection, table, columns, path: Path) -> dict:
    source = f"read_parquet({sql_string(str(path))})"
    described = connection.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    names = [row[0] for row in described]
    _check_header(path, names, columns, table)
    kinds = {row[0]: row[1] for row in described}
    stamps = [kinds[c.name] for c in columns if c.type is ColumnType.TIMESTAMP]
    timestamps = "native" if stamps and all("TIMESTAMP" in k for k in stamps) else "unix_seconds"
    _create(connection, table, columns)
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute(duckdb_insert_select_sql(table, columns, source, timestamps))
    return _report(connection, table)


def load_frames(connection, table: str, columns: tuple[Column, ...], frames: Iterable) -> dict:
    """Create ``table`` and append pandas frames whose TIMESTAMP columns hold Unix seconds."""
    _create(connection, table, columns)
    insert = duckdb_insert_select_sql(table, columns, "generated_chunk")
    names = [c.name for c in columns]
    for frame in frames:
        if list(frame.columns) != names:
            raise ValueError(f"generated columns {list(frame.columns)} differ from {names}")
        connection.register("generated_chunk", frame)
        connection.execute(insert)
        connection.unregister("generated_chunk")
    return _report(connection, table)


def _create(connection, table: str, columns: tuple[Column, ...]) -> None:
    for statement in duckdb_create_table_sql(table, columns):
        connection.execute(statement)
    connection.execute(f"CREATE TABLE {rejected_table(table).duckdb_sql()} ({_REJECT_COLUMNS})")


def _report(connection, table: str) -> dict:
    rejected = connection.execute(
        f"SELECT COUNT(*) FROM {rejected_table(table).duckdb_sql()}"
    ).fetchone()[0]
    return {"rows": count_rows(connection, table), "rejected": int(rejected)}
