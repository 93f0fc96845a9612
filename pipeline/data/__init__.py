"""Raw data into the embedded warehouse, for any dataset folder.

``python -m pipeline.data prepare --dataset NAME`` obtains the dataset's source files (the
checksum-verified package files, the only network access of the project, or files in its folder)
and loads every table of the dataset into ``<data-dir>/<dataset folder>/warehouse.duckdb``
(:func:`ensure_warehouse`). ``python -m pipeline.data synthetic --dataset NAME ...`` builds a
warehouse of generated rows from the folder's ``synthetic.py`` (:func:`build_synthetic_warehouse`).
Both are idempotent and atomic: a second call reuses what is there (the sidecar
``warehouse.duckdb.json`` records what it was built from), a crash leaves no half-built file.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pipeline.data.fetch import ChecksumError, dataset_data_dir, fetch_file, sha256_file
from pipeline.data.load import (
    build_atomically,
    layout_fingerprint,
    load_file,
    load_frames,
    read_sidecar,
    write_sidecar,
)
from pipeline.datasets import synthetic_generator
from pipeline.definition import DatasetDefinition
from pipeline.verdicts import Verdict

WAREHOUSE_FILE = "warehouse.duckdb"

__all__ = [
    "WAREHOUSE_FILE",
    "ChecksumError",
    "LoadError",
    "build_synthetic_warehouse",
    "ensure_warehouse",
    "warehouse_path",
]


class LoadError(Verdict, ValueError):
    """The source did not load as declared (row counts, rejected rows): names table and file.

    A verdict: reloading the same file ends the same way."""


def warehouse_path(definition: DatasetDefinition, data_dir: Path) -> Path:
    return dataset_data_dir(definition, data_dir) / WAREHOUSE_FILE


def ensure_warehouse(definition: DatasetDefinition, data_dir: Path) -> Path:
    """The dataset's warehouse file, loaded from its source; rebuilt only when stale."""
    if definition.source is None:
        raise LoadError(
            f"dataset {definition.name!r} declares no source: build a warehouse file another "
            "way (e.g. `python -m pipeline.data synthetic`) and pass it as --db"
        )
    tables = definition.tables
    files = {table: definition.source.file_for(table) for table in tables}
    paths = {table: fetch_file(definition, files[table], data_dir) for table in tables}
    db_path = warehouse_path(definition, data_dir)
    wanted = {
        "source": "files",
        "layout": layout_fingerprint(tables),
        "files": {table: sha256_file(path) for table, path in paths.items()},
    }
    built = read_sidecar(db_path)
    if built and all(built.get(k) == v for k, v in wanted.items()):
        return db_path

    def build(connection) -> dict:
        return {
            table: load_file(connection, table, tables[table], paths[table], files[table].format)
            for table in tables
        }

    report = build_atomically(db_path, build)
    for table, counts in report.items():
        expected = files[table].rows
        if counts["rejected"] or (expected is not None and counts["rows"] != expected):
            kept, first = keep_rejected_rows(db_path, table)
            db_path.unlink(missing_ok=True)
            raise LoadError(
                f"{paths[table]}: loaded {counts['rows']} rows into {table}"
                + (f" (expected {expected})" if expected is not None else "")
                + f", {counts['rejected']} rejected"
                + (f" (all kept in {kept}; the first: {'; '.join(first)})" if kept else "")
            )
    write_sidecar(db_path, {**wanted, "tables": report})
    return db_path


def keep_rejected_rows(db_path: Path, table: str) -> tuple[Path | None, list[str]]:
    """Copy a failed load's rejected rows beside the warehouse file (which is then removed):
    ``rejected-<table>.csv`` with line, column, reason and the row; the first three described."""
    import duckdb

    from pipeline.data.load import rejected_table, sql_string

    target = db_path.with_name(f"rejected-{table}.csv")
    with duckdb.connect(str(db_path), read_only=True) as connection:
        rejects = rejected_table(table).duckdb_sql()
        rows = connection.execute(
            f"SELECT line, column_name, error FROM {rejects} LIMIT 3"
        ).fetchall()
        if not rows:
            return None, []
        connection.execute(f"COPY {rejects} TO {sql_string(str(target))} (HEADER, DELIMITER ',')")
    return target, [f"line {line}, column {column}: {error}" for line, column, error in rows]


def build_synthetic_warehouse(
    definition: DatasetDefinition,
    db_path: Path,
    rows: int,
    seed: int,
    start: date = date(2024, 1, 1),
    days: int = 365,
) -> Path:
    """A warehouse file of generated rows (the folder's ``synthetic.py``); reused when built
    with the same arguments."""
    generator = synthetic_generator(definition)
    if generator is None:
        raise LoadError(f"dataset {definition.name!r} has no synthetic.py in its folder")
    db_path = Path(db_path)
    wanted = {
        "source": "synthetic",
        "dataset": definition.name,
        "rows": rows,
        "seed": seed,
        "start": start.isoformat(),
        "days": days,
        "generator_version": getattr(generator, "VERSION", 1),
        "layout": layout_fingerprint(definition.tables),
    }
    if read_sidecar(db_path) == wanted:
        return db_path

    def build(connection) -> dict:
        chunks = generator.generate(rows, seed, start, days)
        report = {
            definition.table: load_frames(connection, definition.table, definition.columns, chunks)
        }
        for side in definition.side_tables:
            frames = generator.generate_side_table(side.name, rows, seed, start, days)
            report[side.table] = load_frames(connection, side.table, side.columns, frames)
        return report

    report = build_atomically(db_path, build)
    if report[definition.table]["rows"] != rows:
        raise RuntimeError(f"loaded {report[definition.table]['rows']} rows, expected {rows}")
    write_sidecar(db_path, wanted)
    return db_path
