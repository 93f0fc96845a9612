"""Data setup: the Chicago taxi sample and the embedded warehouse file built from it.

``python -m pipeline.data prepare --data-dir data`` fetches the sample (the only network access
of the project: ``pip download`` from the package registry, since the CSV ships inside the
``tfx`` wheel), verifies its checksum and loads ``<data-dir>/warehouse.duckdb``, whose table
``chicago_taxi_trips.taxi_trips`` has the column types of the dataset definition. Every step is
idempotent and atomic: a second call reuses what is there, a crash leaves no half-built file.

``python -m pipeline.data synthetic ...`` builds a warehouse of generated taxi-like rows of any
size (see :mod:`pipeline.synthetic`), for scale tests.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from pipeline import storage
from pipeline.dataset import DatasetDefinition
from pipeline.datasets.taxi import TAXI
from pipeline.warehouse.schema import (
    duckdb_create_table_sql,
    duckdb_insert_select_sql,
    duckdb_table_ref,
    duckdb_type,
)

TFX_REQUIREMENT = "tfx==1.21.0"
TFX_WHEEL = "tfx-1.21.0-py3-none-any.whl"
CSV_MEMBER = "tfx/examples/chicago_taxi_pipeline/data/simple/data.csv"
CSV_SHA256 = "cdaf0b5931442ef47693f408f25a37af710aca23fccb90a78f00930e89548805"
TAXI_ROWS = 15_002
WAREHOUSE_FILE = "warehouse.duckdb"


class ChecksumError(ValueError):
    """The downloaded sample is not the file this project was built and tested against."""


# ---- fetching the sample -------------------------------------------------------------------


def taxi_csv_path(data_dir: Path) -> Path:
    return Path(data_dir) / "taxi" / "data.csv"


def download_tfx_wheel(downloads: Path) -> Path:
    """The ``tfx`` wheel in ``downloads``, fetched with ``pip download`` unless already there."""
    wheel = downloads / TFX_WHEEL
    if wheel.is_file():
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", TFX_REQUIREMENT, "--no-deps"]
    command += ["--only-binary", ":all:", "-d", str(downloads)]
    subprocess.run(command, check=True)
    if not wheel.is_file():
        raise FileNotFoundError(f"pip download did not produce {wheel}")
    return wheel


def extract_taxi_csv(wheel: Path, target: Path, expected_sha256: str = CSV_SHA256) -> Path:
    """Copy the sample CSV out of the wheel to ``target`` after checking its SHA-256.

    The bytes are hashed before anything is written, so a mismatch leaves no file behind.
    """
    with zipfile.ZipFile(wheel) as archive:
        content = archive.read(CSV_MEMBER)
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected_sha256:
        raise ChecksumError(
            f"{CSV_MEMBER} in {wheel.name}: sha256 {actual}, expected {expected_sha256}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(content)
    os.replace(partial, target)
    return target


def fetch_taxi_csv(data_dir: Path) -> Path:
    """The checksum-verified sample CSV, cached at ``<data-dir>/taxi/data.csv``."""
    target = taxi_csv_path(data_dir)
    if target.is_file() and storage.sha256(target) == CSV_SHA256:
        return target
    wheel = download_tfx_wheel(Path(data_dir) / "downloads")
    try:
        return extract_taxi_csv(wheel, target)
    except (ChecksumError, zipfile.BadZipFile, KeyError):
        wheel.unlink(missing_ok=True)  # a bad download must not be reused by the next attempt
        raise


# ---- building the warehouse file -----------------------------------------------------------


def schema_fingerprint(definition: DatasetDefinition) -> str:
    """Changes whenever the table layout the definition implies changes (forces a rebuild)."""
    layout = [definition.table, *[(c.name, c.type.value) for c in definition.columns]]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


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


def build_atomically(db_path: Path, build) -> int:
    """Run ``build(connection) -> rows`` on a fresh temporary database, then rename it in place."""
    import duckdb

    db_path.parent.mkdir(parents=True, exist_ok=True)
    partial = db_path.with_name(f".{db_path.name}.{os.getpid()}.partial")
    for leftover in (partial, partial.with_name(partial.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        connection = duckdb.connect(str(partial))
        try:
            rows = build(connection)
            connection.execute("CHECKPOINT")
        finally:
            connection.close()
        sidecar_path(db_path).unlink(missing_ok=True)
        os.replace(partial, db_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return rows


def sql_string(value: str) -> str:
    """A SQL string literal (for file paths chosen by this program, not for user values)."""
    return "'" + value.replace("'", "''") + "'"


def load_csv(connection, csv_path: Path, definition: DatasetDefinition) -> int:
    """Create the raw table and load a CSV whose TIMESTAMP columns hold Unix seconds."""
    with open(csv_path, newline="") as handle:
        header = next(csv.reader(handle))
    if sorted(header) != sorted(definition.column_names):
        raise ValueError(
            f"{csv_path}: columns {header} do not match dataset {definition.name!r} "
            f"columns {list(definition.column_names)}"
        )
    # Column types follow the definition; TIMESTAMP columns arrive as integer seconds.
    csv_types = {
        name: "BIGINT"
        if definition.column(name).type.value == "TIMESTAMP"
        else duckdb_type(definition.column(name).type)
        for name in header
    }
    columns = ", ".join(f"{sql_string(n)}: {sql_string(t)}" for n, t in csv_types.items())
    source = (
        f"read_csv({sql_string(str(csv_path))}, header = true, auto_detect = false, "
        f"delim = ',', quote = '\"', nullstr = '', columns = {{{columns}}})"
    )
    for statement in duckdb_create_table_sql(definition):
        connection.execute(statement)
    connection.execute(duckdb_insert_select_sql(definition, source))
    return count_rows(connection, definition)


def count_rows(connection, definition: DatasetDefinition) -> int:
    table = duckdb_table_ref(definition).duckdb_sql()
    return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def ensure_taxi_warehouse(data_dir: Path, definition: DatasetDefinition = TAXI) -> Path:
    """``<data-dir>/warehouse.duckdb`` loaded from the taxi sample; rebuilt only when stale."""
    data_dir = Path(data_dir)
    csv_path = fetch_taxi_csv(data_dir)
    db_path = data_dir / WAREHOUSE_FILE
    wanted = {
        "source": "chicago_taxi_sample",
        "csv_sha256": CSV_SHA256,
        "schema": schema_fingerprint(definition),
        "table": definition.table,
    }
    built = read_sidecar(db_path)
    if built and all(built.get(k) == v for k, v in wanted.items()):
        return db_path
    rows = build_atomically(db_path, lambda con: load_csv(con, csv_path, definition))
    if rows != TAXI_ROWS:
        raise ValueError(f"{csv_path}: loaded {rows} rows, expected {TAXI_ROWS}")
    write_sidecar(db_path, {**wanted, "rows": rows})
    return db_path


def build_synthetic_warehouse(
    db_path: Path, rows: int, seed: int, start: date = date(2024, 1, 1), days: int = 365
) -> Path:
    """A warehouse file of ``rows`` generated taxi trips (see :mod:`pipeline.synthetic`)."""
    from pipeline import synthetic

    return synthetic.build_synthetic_warehouse(Path(db_path), rows, seed, start, days)


# ---- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch the taxi sample, build the warehouse")
    prepare.add_argument("--data-dir", type=Path, default=Path("data"))
    synth = commands.add_parser("synthetic", help="build a warehouse of generated trips")
    synth.add_argument("--rows", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--db", type=Path, required=True)
    synth.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    synth.add_argument("--days", type=int, default=365)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "prepare":
        db_path = ensure_taxi_warehouse(args.data_dir)
    else:
        db_path = build_synthetic_warehouse(args.db, args.rows, args.seed, args.start, args.days)
    info = read_sidecar(db_path) or {}
    print(json.dumps({"warehouse": str(db_path), **info}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
