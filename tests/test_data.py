"""Data setup: fetching the taxi sample and building the embedded warehouse file."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import duckdb
import pytest

from pipeline import data
from pipeline.datasets.taxi import TAXI

TABLE = "chicago_taxi_trips.taxi_trips"


def _fake_wheel(path: Path, csv_text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(data.CSV_MEMBER, csv_text)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A data dir prepared from scratch: the real path, ``pip download`` from the registry."""
    data_dir = tmp_path_factory.mktemp("data")
    data.ensure_taxi_warehouse(data_dir)
    return data_dir


def test_prepare_downloads_verifies_and_builds_from_scratch(prepared):
    db_path = prepared / "warehouse.duckdb"
    csv_path = prepared / "taxi" / "data.csv"
    assert hashlib.sha256(csv_path.read_bytes()).hexdigest() == data.CSV_SHA256
    assert (prepared / "downloads" / data.TFX_WHEEL).is_file()
    with duckdb.connect(str(db_path), read_only=True) as con:
        described = con.execute(f"DESCRIBE {TABLE}").fetchall()
        counts = con.execute(
            f"SELECT COUNT(*), COUNT(company), COUNT(pickup_census_tract), "
            f"MIN(trip_start_timestamp), COUNT(*) FILTER (WHERE company = '') FROM {TABLE}"
        ).fetchone()
    types = {"INT64": "BIGINT", "FLOAT64": "DOUBLE", "STRING": "VARCHAR", "TIMESTAMP": "TIMESTAMP"}
    assert [(name, kind) for name, kind, *_ in described] == [
        (c.name, types[c.type.value]) for c in TAXI.columns
    ]
    rows, companies, pickup_tracts, first_trip, empty_companies = counts
    assert rows == data.TAXI_ROWS == 15_002
    assert (companies, pickup_tracts, empty_companies) == (9_862, 1, 0)  # empty cells are NULL
    assert first_trip.isoformat() == "2013-01-01T00:30:00"  # Unix seconds read as UTC
    assert json.loads(data.sidecar_path(db_path).read_text())["csv_sha256"] == data.CSV_SHA256


def test_prepare_is_idempotent(prepared):
    db_path = prepared / "warehouse.duckdb"
    before = db_path.stat().st_mtime_ns
    assert data.ensure_taxi_warehouse(prepared) == db_path
    assert db_path.stat().st_mtime_ns == before


def test_stale_warehouse_is_rebuilt_from_the_cached_csv(prepared, tmp_path):
    shutil.copytree(prepared, tmp_path, dirs_exist_ok=True)
    (tmp_path / "downloads" / data.TFX_WHEEL).unlink()  # no download needed: the CSV is cached
    sidecar = data.sidecar_path(tmp_path / "warehouse.duckdb")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "schema": "old"}))
    data.ensure_taxi_warehouse(tmp_path)
    assert json.loads(sidecar.read_text())["schema"] == data.schema_fingerprint(TAXI)
    assert not (tmp_path / "downloads" / data.TFX_WHEEL).exists()


def test_checksum_mismatch_raises_and_leaves_no_file(tmp_path):
    wheel = _fake_wheel(tmp_path / "downloads" / data.TFX_WHEEL, "not,the,sample\n")
    target = tmp_path / "taxi" / "data.csv"
    with pytest.raises(data.ChecksumError, match="sha256"):
        data.extract_taxi_csv(wheel, target)
    assert not target.exists()
    assert not target.parent.exists() or not any(target.parent.iterdir())


def test_fetch_discards_a_bad_download(tmp_path):
    """A wheel with the wrong CSV fails the checksum and is deleted, so a retry downloads again."""
    wheel = _fake_wheel(tmp_path / "downloads" / data.TFX_WHEEL, "tampered\n")
    with pytest.raises(data.ChecksumError):
        data.fetch_taxi_csv(tmp_path)
    assert not wheel.exists()
    assert not (tmp_path / "taxi" / "data.csv").exists()


def test_failed_build_leaves_nothing_behind(tmp_path):
    db_path = tmp_path / "warehouse.duckdb"

    def failing_build(connection):
        connection.execute("CREATE TABLE t AS SELECT 1 AS x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        data.build_atomically(db_path, failing_build)
    assert list(tmp_path.iterdir()) == []


def test_csv_with_unexpected_columns_is_refused(tmp_path):
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("fare,tips\n1.0,0.0\n")
    with duckdb.connect() as con, pytest.raises(ValueError, match="do not match"):
        data.load_csv(con, csv_path, TAXI)
