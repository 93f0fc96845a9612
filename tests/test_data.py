"""Data setup: fetching declared sources and loading them into the embedded warehouse."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import duckdb
import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env

from pipeline import data
from pipeline.data import fetch, load
from pipeline.datasets import get_dataset
from pipeline.definition import (
    Column,
    ColumnType,
    CsvFormat,
    PypiArchive,
    Source,
    SourceFile,
    TimestampFormat,
)

TAXI_TABLE = "chicago_taxi_trips.taxi_trips"


@pytest.fixture(scope="module")
def taxi():
    return get_dataset("taxi")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, taxi) -> Path:
    """A data dir prepared from scratch: the real path, ``pip download`` from the registry."""
    data_dir = tmp_path_factory.mktemp("data")
    data.ensure_warehouse(taxi, data_dir)
    return data_dir


def test_prepare_downloads_verifies_and_builds_from_scratch(prepared, taxi):
    db_path = data.warehouse_path(taxi, prepared)
    assert db_path == prepared / "taxi" / "warehouse.duckdb"
    source_file = taxi.source.file_for(TAXI_TABLE)
    csv_path = prepared / "taxi" / "data.csv"
    assert hashlib.sha256(csv_path.read_bytes()).hexdigest() == source_file.sha256
    assert (prepared / "downloads" / taxi.source.origin.filename).is_file()
    with duckdb.connect(str(db_path), read_only=True) as con:
        described = con.execute(f"DESCRIBE {TAXI_TABLE}").fetchall()
        counts = con.execute(
            f"SELECT COUNT(*), COUNT(company), COUNT(pickup_census_tract), "
            f"MIN(trip_start_timestamp), COUNT(*) FILTER (WHERE company = '') FROM {TAXI_TABLE}"
        ).fetchone()
    types = {"INT64": "BIGINT", "FLOAT64": "DOUBLE", "STRING": "VARCHAR", "TIMESTAMP": "TIMESTAMP"}
    assert [(name, kind) for name, kind, *_ in described] == [
        (c.name, types[c.type.value]) for c in taxi.columns
    ]
    rows, companies, pickup_tracts, first_trip, empty_companies = counts
    assert rows == source_file.rows == 15_002
    assert (companies, pickup_tracts, empty_companies) == (9_862, 1, 0)  # empty cells are NULL
    assert first_trip.isoformat() == "2013-01-01T00:30:00"  # Unix seconds read as UTC
    sidecar = json.loads(load.sidecar_path(db_path).read_text())
    assert sidecar["files"][TAXI_TABLE] == source_file.sha256
    assert sidecar["tables"][TAXI_TABLE] == {"rows": 15_002, "rejected": 0}


def test_prepare_is_idempotent(prepared, taxi):
    db_path = data.warehouse_path(taxi, prepared)
    before = db_path.stat().st_mtime_ns
    assert data.ensure_warehouse(taxi, prepared) == db_path
    assert db_path.stat().st_mtime_ns == before


def test_stale_warehouse_is_rebuilt_from_the_cached_file(prepared, tmp_path, taxi):
    shutil.copytree(prepared, tmp_path, dirs_exist_ok=True)
    wheel = tmp_path / "downloads" / taxi.source.origin.filename
    wheel.unlink()  # no download needed: the CSV is cached
    sidecar = load.sidecar_path(data.warehouse_path(taxi, tmp_path))
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "layout": "old"}))
    data.ensure_warehouse(taxi, tmp_path)
    assert json.loads(sidecar.read_text())["layout"] == load.layout_fingerprint(taxi.tables)
    assert not wheel.exists()


def _archive_source(tmp_path: Path, member: str, content: bytes, sha256: str) -> Source:
    """A wheel-shaped archive already in downloads/, declared with its real checksum."""
    downloads = tmp_path / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, content)
    origin = PypiArchive("fake==1.0", wheel.name, fetch.sha256_file(wheel))
    return Source(origin, (SourceFile(TAXI_TABLE, member, sha256, CsvFormat()),))


def test_a_file_with_the_wrong_checksum_is_refused_and_not_kept(tmp_path, taxi):
    source = _archive_source(tmp_path, "data.csv", b"not,the,sample\n", "0" * 64)
    definition = dataclasses.replace(taxi, source=source)
    with pytest.raises(fetch.ChecksumError, match="sha256"):
        data.ensure_warehouse(definition, tmp_path)
    assert not (tmp_path / "taxi" / "data.csv").exists()
    assert not data.warehouse_path(definition, tmp_path).exists()


def test_a_bad_download_is_deleted_so_a_retry_downloads_again(tmp_path):
    archive = PypiArchive("fake==1.0", "fake-1.0-py3-none-any.whl", "f" * 64)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / archive.filename).write_bytes(b"tampered")
    # The cached file fails the checksum, so pip is asked again; offline it fails, but the bad
    # file must be gone either way.
    with pytest.raises((subprocess.CalledProcessError, fetch.ChecksumError, FileNotFoundError)):
        fetch.download_archive(
            dataclasses.replace(archive, requirement="no-such-package-xyz==0"), downloads
        )
    assert not (downloads / archive.filename).exists()


def test_sdist_members_and_zipped_files_are_read(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("flights.csv", "a,b\n1,2\n")
    sdist = tmp_path / "pkg-0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("pkg-0.1/pkg/data/flights.csv.zip")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    member = fetch.read_member(sdist, "pkg/data/flights.csv.zip")
    assert fetch.unpack_single_zip(member, "flights.csv.zip") == b"a,b\n1,2\n"
    with pytest.raises(KeyError, match="no member"):
        fetch.read_member(sdist, "pkg/data/missing.csv")


def test_failed_build_leaves_nothing_behind(tmp_path):
    db_path = tmp_path / "warehouse.duckdb"

    def failing_build(connection):
        connection.execute("CREATE TABLE t AS SELECT 1 AS x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        load.build_atomically(db_path, failing_build)
    assert list(tmp_path.iterdir()) == []


COLUMNS = (
    Column("id", ColumnType.INT64),
    Column("amount", ColumnType.FLOAT64),
    Column("name", ColumnType.STRING),
    Column("at", ColumnType.TIMESTAMP),
)
TABLE = "shop.orders"


def _load(tmp_path: Path, text: str, fmt: CsvFormat) -> tuple[dict, list]:
    path = tmp_path / "orders.csv"
    path.write_text(text)
    with duckdb.connect() as con:
        report = load.load_file(con, TABLE, COLUMNS, path, fmt)
        rows = con.execute(f"SELECT * FROM {TABLE} ORDER BY id").fetchall()
        rejected = con.execute(f"SELECT line, column_name, error FROM {TABLE}__rejected").fetchall()
    return report, rows, rejected


def test_null_tokens_and_iso_timestamps_in_a_declared_zone(tmp_path):
    fmt = CsvFormat(
        null_tokens=("NA",), timestamps=TimestampFormat.ISO8601, timezone="America/New_York"
    )
    text = (
        "id,amount,name,at\n"
        "1,2.5,a,2013-01-01T10:00:00Z\n"  # an explicit offset wins over the zone
        "2,NA,NA,2013-07-01 10:00:00\n"  # no offset: New York summer time, UTC-4
        "3,1e3,c,NA\n"
    )
    report, rows, rejected = _load(tmp_path, text, fmt)
    assert report == {"rows": 3, "rejected": 0} and rejected == []
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][3].isoformat() == "2013-01-01T10:00:00"
    assert (
        rows[1][1:] == (None, None, rows[1][3]) and rows[1][3].isoformat() == "2013-07-01T14:00:00"
    )
    assert rows[2][1] == 1000.0 and rows[2][3] is None


def test_a_timestamp_format_given_as_text_means_the_same_and_a_wrong_one_is_refused():
    assert CsvFormat(timestamps="iso8601").timestamps is TimestampFormat.ISO8601
    with pytest.raises(ValueError, match="'iso'"):
        CsvFormat(timestamps="iso")


def test_unreadable_rows_are_kept_aside_with_line_column_and_reason(tmp_path):
    fmt = CsvFormat(timestamps=TimestampFormat.ISO8601)
    text = (
        "id,amount,name,at\n"
        "1,2.5,a,2013-01-01T10:00:00Z\n"
        "two,3.0,b,2013-01-01T10:00:00Z\n"  # not an integer
        "3,4.0,c,yesterday\n"  # not a timestamp
    )
    report, rows, rejected = _load(tmp_path, text, fmt)
    assert report == {"rows": 1, "rejected": 2}
    assert [r[0] for r in rows] == [1]
    by_column = {column: (line, error) for line, column, error in rejected}
    assert by_column["id"][0] == 3 and "two" in by_column["id"][1]
    assert "yesterday" in by_column["at"][1]


def _orders_dataset(folder: Path, text: str, rows: int | None):
    from pipeline.definition import (
        BinaryLabel,
        DatasetDefinition,
        Feature,
        LocalFiles,
        SplitSettings,
    )
    from transforms import kinds

    (folder / "orders.csv").write_text(text)
    source = Source(LocalFiles(), (SourceFile(TABLE, "orders.csv", None, CsvFormat(), rows),))
    return DatasetDefinition(
        name="orders",
        table=TABLE,
        columns=COLUMNS,
        label=BinaryLabel("large", "amount", ">", 100),
        features=(Feature("name", "name", kinds.Vocabulary()),),
        split=SplitSettings(key_columns=("id",)),
        source=source,
        unknown_at_serving=("amount",),
        folder=folder,
    )


def test_rejected_rows_or_a_wrong_row_count_fail_the_load_and_keep_no_warehouse(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    bad = _orders_dataset(folder, "id,amount,name,at\n1,x,a,1\n2,3.0,b,2\n", rows=None)
    with pytest.raises(data.LoadError, match="1 rejected") as error:
        data.ensure_warehouse(bad, tmp_path / "data")
    assert not data.warehouse_path(bad, tmp_path / "data").exists()
    # The rejected rows are kept beside where the warehouse would be, and the first named.
    kept = data.warehouse_path(bad, tmp_path / "data").with_name("rejected-shop.orders.csv")
    assert f"all kept in {kept}" in str(error.value) and "line 2, column amount" in str(error.value)
    assert "1,x,a,1" in kept.read_text()
    short = _orders_dataset(folder, "id,amount,name,at\n2,3.0,b,2\n", rows=2)
    with pytest.raises(data.LoadError, match=r"loaded 1 rows .*\(expected 2\)"):
        data.ensure_warehouse(short, tmp_path / "data")
    good = _orders_dataset(folder, "id,amount,name,at\n1,1.0,a,1\n2,3.0,b,2\n", rows=2)
    assert data.ensure_warehouse(good, tmp_path / "data").is_file()


def test_a_csv_without_the_declared_columns_is_refused_naming_them(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id,total\n1,2.0\n")
    with duckdb.connect() as con, pytest.raises(load.SourceFormatError) as error:
        load.load_file(con, TABLE, COLUMNS, path, CsvFormat())
    assert "missing ['amount', 'at', 'name']" in str(error.value)
    assert "unexpected ['total']" in str(error.value)


def test_cli_prepares_a_dataset_and_refuses_an_unknown_one(tmp_path):
    unknown = subprocess.run(
        [PYTHON, "-m", "pipeline.data", "prepare", "--dataset", "nope", "--data-dir", tmp_path],
        capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert "unknown dataset 'nope'" in unknown.stderr
    assert list(tmp_path.iterdir()) == []


def test_flights_source_loads_every_table_with_na_and_iso_timestamps():
    """The setup's flights warehouse (``make setup`` prepares every shipped dataset)."""
    flights = get_dataset("flights")
    db_path = data.ensure_warehouse(flights, REPO_ROOT / "data")
    with duckdb.connect(str(db_path), read_only=True) as con:
        counts = {
            table: con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in flights.tables
        }
        first = con.execute(
            "SELECT time_hour, dep_time FROM nycflights13.flights "
            "WHERE year = 2013 AND month = 1 AND day = 1 AND flight = 1545 AND carrier = 'UA'"
        ).fetchone()
        cancelled = con.execute(
            "SELECT COUNT(*) FROM nycflights13.flights WHERE dep_time IS NULL"
        ).fetchone()[0]
    assert counts == {f.table: f.rows for f in flights.source.files}
    assert first[0].isoformat() == "2013-01-01T10:00:00"  # 05:15 in New York is 10:00 UTC
    assert first[1] == 517
    assert cancelled == 8_255  # 'NA' read as NULL
