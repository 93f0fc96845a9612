"""Warehouse stage: BigQuery SQL on DuckDB, hash/stratified/oversampled splits, safety."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import farmhash
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from pipeline import storage
from pipeline.data import build_synthetic_warehouse, ensure_warehouse
from pipeline.datasets import get_dataset
from pipeline.warehouse import SPLIT_NAMES, BigQueryOptions, SplitConfig, TableProblem, run_split
from pipeline.warehouse import cli as warehouse_cli
from pipeline.warehouse import fingerprint as fp
from pipeline.warehouse.bigquery_engine import BigQueryEngine
from pipeline.warehouse.duckdb_engine import DuckDBEngine, transpile
from pipeline.warehouse.identifiers import TableRef
from pipeline.warehouse.query import (
    Query,
    filter_counts_query,
    reference_key,
    reference_split,
    split_query,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLE = "chicago_taxi_trips.taxi_trips"
TAXI = get_dataset("taxi")

# FARM_FINGERPRINT values published for BigQuery: the hash-functions reference page example
# (CONCAT of CAST(x AS STRING), y, CAST(z AS STRING)) and ZetaSQL's compliance tests.
DOCUMENTED_FINGERPRINTS = {
    "1footrue": -1541654101129638711,
    "2applefalse": 2794438866806483259,
    "3true": -4880158226897771312,
    "": -7286425919675154353,
    "\x00": -4728684028706075820,
    "a b c d": -3676552216144541872,
    "a b\x00c d": -4659737306420982693,
    "abcABCжщфЖЩФ": 3736580821998982030,
    "Моша_öá5ホバークラフト鰻鰻": 4918483674106117036,
}


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def taxi_db() -> Path:
    return ensure_warehouse(TAXI, REPO_ROOT / "data")


@pytest.fixture(scope="module")
def taxi_default(taxi_db, tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "splits"
    return run_split(SplitConfig(TAXI, warehouse=taxi_db), out)


@pytest.fixture(scope="module")
def dirty_db(tmp_path_factory) -> Path:
    """2,000 synthetic trips with known defects, one per kind, to count what each filter removes."""
    db = tmp_path_factory.mktemp("dirty") / "warehouse.duckdb"
    build_synthetic_warehouse(TAXI, db, rows=2_000, seed=11, start=date(2024, 1, 1), days=60)
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TEMP TABLE ids AS SELECT rowid AS id FROM " + TABLE)
        defects = {
            "tips = NULL": "rowid < 7",  # label_present: 7
            "trip_start_timestamp = NULL": "rowid BETWEEN 7 AND 11",  # required_present: 5
            "fare = -1.0": "rowid BETWEEN 12 AND 20",  # fare_non_negative: 9
            "trip_seconds = -60": "rowid BETWEEN 21 AND 23",  # trip_seconds_non_negative: 3
            "trip_seconds = NULL": "rowid BETWEEN 24 AND 30",  # kept: NULL is allowed
        }
        for assignment, where in defects.items():
            con.execute(f"UPDATE {TABLE} SET {assignment} WHERE {where}")
    return db


def read_split(result, split: str) -> pa.Table:
    return pq.read_table(result.split_dirs[split])


def label(table: pa.Table) -> list[bool]:
    tips, fares = table["tips"].to_pylist(), table["fare"].to_pylist()
    return [t > 0.2 * f for t, f in zip(tips, fares, strict=True)]


# ---- FARM_FINGERPRINT -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), DOCUMENTED_FINGERPRINTS.items())
def test_farm_fingerprint_matches_bigquery(text, expected):
    assert fp.farm_fingerprint(text) == expected


def test_duckdb_udf_returns_bigquery_values_and_null_for_null():
    con = duckdb.connect()
    fp.register_duckdb(con)
    texts = list(DOCUMENTED_FINGERPRINTS)
    got = con.execute(
        "SELECT farm_fingerprint(t) FROM UNNEST($texts) WITH ORDINALITY AS u(t, i) ORDER BY i",
        {"texts": texts},
    ).fetchall()
    assert [v for (v,) in got] == list(DOCUMENTED_FINGERPRINTS.values())
    assert con.execute("SELECT farm_fingerprint(NULL)").fetchone() == (None,)


def test_pure_python_fingerprint_equals_farmhash_on_every_length():
    """The path used for strings with NUL bytes agrees with pyfarmhash (all code paths < 300)."""
    rng = random.Random(0)
    for length in range(300):
        text = "".join(rng.choice("az09|-é日 ") for _ in range(length))
        assert fp.fingerprint64_bytes(text.encode()) == farmhash.fingerprint64(text)


# ---- the split ------------------------------------------------------------------------------


def test_split_files_have_the_definition_layout(taxi_default):
    expected = [
        (
            c.name,
            {"INT64": "int64", "FLOAT64": "double", "STRING": "string"}[c.type.split_file_type],
        )
        for c in TAXI.split_file_columns
    ]
    assert expected[-1] == ("big_tipper", "int64")  # the label the SQL computed
    for split in SPLIT_NAMES:
        files = sorted(Path(taxi_default.split_dirs[split]).glob("part-*.parquet"))
        assert files, split
        schema = pq.read_schema(files[0])
        assert [(f.name, str(f.type)) for f in schema] == expected


def test_default_split_counts_add_up_and_shares_match_ratios(taxi_default):
    rows = taxi_default.split_rows
    assert taxi_default.input_rows == 15_002
    assert taxi_default.input_rows == sum(rows.values()) + sum(taxi_default.removed_rows.values())
    assert list(taxi_default.removed_rows) == [
        "fare_non_negative",
        "trip_seconds_non_negative",
        "label_present",
        "required_present",
    ]
    assert taxi_default.duplicate_rows == 0
    for split, ratio in zip(SPLIT_NAMES, (0.8, 0.1, 0.1), strict=True):
        assert abs(rows[split] / sum(rows.values()) - ratio) < 0.01, split


def test_no_row_is_in_two_splits(taxi_default):
    seen: dict[tuple, str] = {}
    for split in SPLIT_NAMES:
        for row in read_split(taxi_default, split).to_pylist():
            key = tuple(row.values())
            assert seen.setdefault(key, split) == split, f"{key} in {seen[key]} and {split}"


def test_split_is_a_pure_function_of_key_and_salt(taxi_default):
    """Every row's split equals the BigQuery formula computed in Python from its key and salt.

    The BigQuery engine sends the very SQL text the DuckDB engine transpiles, so a row with the
    same key lands in the same split on both engines.
    """
    salt = taxi_default.params["salt"]
    for split in SPLIT_NAMES:
        for row in read_split(taxi_default, split).to_pylist():
            key = reference_key(TAXI, TAXI.column_names, row)
            assert reference_split(key, salt, (0.8, 0.1, 0.1)) == split


def test_same_sql_source_for_both_engines(taxi_db, tmp_path, gcs_bucket):
    config = SplitConfig(TAXI, warehouse=taxi_db, stratify_by="big_tipper", oversample_target=0.5)
    bigquery_config = dataclasses.replace(
        config, engine="bigquery", bigquery=BigQueryOptions("my-proj", "work")
    )
    client = FakeBigQueryClient()
    engine = BigQueryEngine(bigquery_config.bigquery, client)
    bq = run_split(bigquery_config, f"{gcs_bucket}/run", engine=engine)
    local = run_split(config, tmp_path / "splits")
    project_free = bq.source_sql["split"].replace("`my-proj`.", "")
    assert project_free == local.source_sql["split"]
    assert local.sql["split"].count(transpile(split_query(config))) == 1
    assert bq.params == local.params


def test_salt_and_key_columns_decide_the_assignment(taxi_db, tmp_path):
    def assignment(salt: str, key_columns=None) -> dict[tuple, str]:
        config = SplitConfig(TAXI, warehouse=taxi_db, salt=salt, key_columns=key_columns)
        result = run_split(config, tmp_path / str(len(list(tmp_path.iterdir()))))
        return {
            tuple(row.values()): split
            for split in SPLIT_NAMES
            for row in read_split(result, split).to_pylist()
        }

    first, again, other = assignment("a"), assignment("a"), assignment("b")
    assert first == again
    assert sum(first[k] != other[k] for k in first) > 0.1 * len(first)
    by_company = assignment("a", ("company",))
    companies: dict[str, set[str]] = {}
    for row, split in by_company.items():
        companies.setdefault(row[TAXI.column_names.index("company")], set()).add(split)
    assert all(len(splits) == 1 for splits in companies.values())  # same key, same split


def test_stratified_split_keeps_each_stratum_share(taxi_db, tmp_path):
    config = SplitConfig(TAXI, warehouse=taxi_db, stratify_by="payment_type")
    result = run_split(config, tmp_path / "splits")
    per_split = {s: Counter(read_split(result, s)["payment_type"].to_pylist()) for s in SPLIT_NAMES}
    strata = Counter()
    for counts in per_split.values():
        strata.update(counts)
    for stratum, total in strata.items():
        if total < 100:  # rank-based shares are exact to one row: 1/total
            continue
        for split, ratio in zip(SPLIT_NAMES, (0.8, 0.1, 0.1), strict=True):
            assert abs(per_split[split][stratum] / total - ratio) < 0.01, (stratum, split)


def test_stratified_by_label(taxi_db, tmp_path):
    result = run_split(
        SplitConfig(TAXI, warehouse=taxi_db, stratify_by="big_tipper"), tmp_path / "s"
    )
    rates = {s: sum(label(read_split(result, s))) / result.split_rows[s] for s in SPLIT_NAMES}
    assert max(rates.values()) - min(rates.values()) < 0.005


def test_oversampling_reaches_target_in_train_only(taxi_db, tmp_path):
    natural = run_split(SplitConfig(TAXI, warehouse=taxi_db), tmp_path / "natural")
    config = SplitConfig(TAXI, warehouse=taxi_db, oversample_target=0.6)
    over = run_split(config, tmp_path / "over")
    train = label(read_split(over, "train"))
    positives, negatives = sum(train), len(train) - sum(train)
    assert positives / negatives == pytest.approx(0.6, abs=1 / negatives)
    natural_train = label(read_split(natural, "train"))
    assert sum(natural_train) / (len(natural_train) - sum(natural_train)) < 0.35
    assert negatives == len(natural_train) - sum(natural_train)  # majority untouched
    for split in ("eval", "test"):  # identical rows, so the natural label rate
        assert sorted(map(str, read_split(over, split).to_pylist())) == sorted(
            map(str, read_split(natural, split).to_pylist())
        )


def test_filter_counts_are_exact_and_add_up(dirty_db, tmp_path):
    result = run_split(SplitConfig(TAXI, warehouse=dirty_db), tmp_path / "splits")
    assert result.removed_rows == {
        "fare_non_negative": 9,
        "trip_seconds_non_negative": 3,
        "label_present": 7,
        "required_present": 5,
    }
    assert result.input_rows == 2_000 == sum(result.split_rows.values()) + 24
    kept = pa.concat_tables(read_split(result, s) for s in SPLIT_NAMES)
    assert min(kept["fare"].to_pylist()) >= 0
    durations = kept["trip_seconds"].to_pylist()
    assert None in durations and all(d is None or d >= 0 for d in durations)


def test_nan_is_missing_never_a_value_and_never_a_label(dirty_db, tmp_path):
    """DuckDB orders NaN above every number, so ``NaN > 0.2 * fare`` would be TRUE and
    ``NaN >= 0`` would keep the row: the SQL must say what NaN means, and it means missing."""
    db = tmp_path / "nan.duckdb"
    db.write_bytes(dirty_db.read_bytes())
    with duckdb.connect(str(db)) as con:
        con.execute(f"UPDATE {TABLE} SET tips = 'NaN'::DOUBLE WHERE rowid BETWEEN 100 AND 109")
        con.execute(f"UPDATE {TABLE} SET fare = 'NaN'::DOUBLE WHERE rowid BETWEEN 110 AND 113")
        con.execute(f"UPDATE {TABLE} SET trip_miles = 'NaN'::DOUBLE WHERE rowid = 114")
    result = run_split(SplitConfig(TAXI, warehouse=db), tmp_path / "splits")
    # 10 NaN tips (label source) and 4 NaN fares (required, and a label source) are removed.
    assert result.removed_rows["label_present"] == 7 + 10 + 4
    assert result.removed_rows["fare_non_negative"] == 9  # NaN passes as missing, then dropped
    kept = pa.concat_tables(read_split(result, s) for s in SPLIT_NAMES)
    assert not any(math.isnan(v) for v in kept["tips"].to_pylist())
    assert any(v is not None and math.isnan(v) for v in kept["trip_miles"].to_pylist())
    assert result.input_rows == sum(result.split_rows.values()) + sum(result.removed_rows.values())


def test_the_label_is_computed_once_in_double_precision(tmp_path):
    """A tip of exactly 20% is not above 20%: 2.03 > 0.2 * 10.15 is false in double precision
    (and true in float32), so the split files carry the SQL's answer for TensorFlow to read."""
    db = tmp_path / "boundary.duckdb"
    build_synthetic_warehouse(TAXI, db, rows=200, seed=3, start=date(2024, 1, 1), days=5)
    with duckdb.connect(str(db)) as con:
        con.execute(f"UPDATE {TABLE} SET fare = 10.15, tips = 2.03 WHERE rowid < 50")
        con.execute(f"UPDATE {TABLE} SET fare = 10.15, tips = 2.04 WHERE rowid BETWEEN 50 AND 99")
    result = run_split(SplitConfig(TAXI, warehouse=db), tmp_path / "splits")
    kept = pa.concat_tables(read_split(result, s) for s in SPLIT_NAMES).to_pylist()
    at_boundary = [r["big_tipper"] for r in kept if r["tips"] == 2.03 and r["fare"] == 10.15]
    above = [r["big_tipper"] for r in kept if r["tips"] == 2.04 and r["fare"] == 10.15]
    assert len(at_boundary) == len(above) == 50
    assert set(at_boundary) == {0} and set(above) == {1}
    assert all(r["big_tipper"] == int(r["tips"] > 0.2 * r["fare"]) for r in kept)


@pytest.fixture(scope="module")
def duplicated_db(tmp_path_factory) -> Path:
    """300 synthetic trips, 30 of them inserted a second time and 5 a third time."""
    db = tmp_path_factory.mktemp("duplicates") / "warehouse.duckdb"
    build_synthetic_warehouse(TAXI, db, rows=300, seed=21, start=date(2024, 1, 1), days=5)
    with duckdb.connect(str(db)) as con:
        con.execute(f"INSERT INTO {TABLE} SELECT * FROM {TABLE} WHERE rowid < 30")
        con.execute(f"INSERT INTO {TABLE} SELECT * FROM {TABLE} WHERE rowid < 5")
    return db


def test_exact_duplicates_are_counted_and_kept_dropped_or_blocking(duplicated_db, tmp_path):
    kept = run_split(SplitConfig(TAXI, warehouse=duplicated_db), tmp_path / "keep")
    assert kept.input_rows == 335 and kept.duplicate_rows == 35
    assert sum(kept.split_rows.values()) == 335 - sum(kept.removed_rows.values())
    dropped = run_split(
        SplitConfig(TAXI, warehouse=duplicated_db, duplicates="drop"), tmp_path / "drop"
    )
    assert dropped.duplicate_rows == 35 and dropped.removed_rows["duplicate"] == 35
    rows = pa.concat_tables(read_split(dropped, s) for s in SPLIT_NAMES).to_pylist()
    assert (
        len({tuple(r.values()) for r in rows})
        == len(rows)
        == 300 - sum(v for k, v in dropped.removed_rows.items() if k != "duplicate")
    )
    with pytest.raises(TableProblem, match="35 exact duplicate rows"):
        run_split(SplitConfig(TAXI, warehouse=duplicated_db, duplicates="block"), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_an_empty_table_and_a_wrong_column_type_are_verdicts_naming_them(tmp_path):
    empty = tmp_path / "empty.duckdb"
    build_synthetic_warehouse(TAXI, empty, rows=20, seed=1, start=date(2024, 1, 1), days=2)
    with duckdb.connect(str(empty)) as con:
        con.execute(f"DELETE FROM {TABLE}")
    with pytest.raises(TableProblem, match=r"taxi_trips is empty"):
        run_split(SplitConfig(TAXI, warehouse=empty), tmp_path / "s1")
    typed = tmp_path / "typed.duckdb"
    build_synthetic_warehouse(TAXI, typed, rows=20, seed=1, start=date(2024, 1, 1), days=2)
    with duckdb.connect(str(typed)) as con:
        con.execute(f"ALTER TABLE {TABLE} ALTER fare TYPE VARCHAR")
        con.execute(f"ALTER TABLE {TABLE} DROP COLUMN company")
    with pytest.raises(TableProblem, match=r"lacks column\(s\) \['company'\]"):
        run_split(SplitConfig(TAXI, warehouse=typed), tmp_path / "s2")
    with duckdb.connect(str(typed)) as con:
        con.execute(f"ALTER TABLE {TABLE} ADD COLUMN company VARCHAR")
    with pytest.raises(TableProblem, match="fare is VARCHAR, the definition says FLOAT64"):
        run_split(SplitConfig(TAXI, warehouse=typed), tmp_path / "s3")
    assert not any(p.name.startswith("s") for p in tmp_path.iterdir())


def test_time_window_is_counted_first(dirty_db, tmp_path):
    start, end = datetime(2024, 1, 8), datetime(2024, 2, 1)
    result = run_split(SplitConfig(TAXI, warehouse=dirty_db, start=start, end=end), tmp_path / "s")
    window = "COALESCE(trip_start_timestamp >= $start AND trip_start_timestamp < $end, FALSE)"
    with duckdb.connect(str(dirty_db), read_only=True) as con:
        expected = con.execute(
            f"SELECT COUNT(*) FILTER (WHERE NOT {window}), "
            f"COUNT(*) FILTER (WHERE {window} AND tips IS NULL AND NOT fare < 0), "
            f"COUNT(*) FILTER (WHERE {window} AND fare < 0) FROM {TABLE}",
            {"start": start, "end": end},
        ).fetchone()
    removed = result.removed_rows
    assert next(iter(removed)) == "time_window"
    assert (removed["time_window"], removed["label_present"], removed["fare_non_negative"]) == (
        expected
    )
    assert removed["required_present"] == 0  # NULL timestamps already fail the window
    assert result.input_rows == sum(result.split_rows.values()) + sum(removed.values())
    kept = pa.concat_tables(read_split(result, s) for s in SPLIT_NAMES)
    seconds = kept["trip_start_timestamp"].to_pylist()
    assert min(seconds) >= start.replace(tzinfo=UTC).timestamp()
    assert max(seconds) < end.replace(tzinfo=UTC).timestamp()


def test_sample_fraction_is_deterministic_and_counted(taxi_db, tmp_path):
    config = SplitConfig(TAXI, warehouse=taxi_db, sample_fraction=0.25)
    first = run_split(config, tmp_path / "a")
    second = run_split(config, tmp_path / "b")
    assert first.split_rows == second.split_rows
    kept = sum(first.split_rows.values())
    assert abs(kept / 15_002 - 0.25) < 0.02
    assert first.removed_rows["sample"] == 15_002 - kept


# ---- injection and parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("table", "chicago_taxi_trips.taxi_trips; DROP TABLE x", "table name"),
        ("table", "chicago_taxi_trips.`taxi_trips`", "table name"),
        ("table", "a.b.c.d", "table reference"),
        ("key_columns", ("fare", "fare OR 1=1"), "key column"),
        ("key_columns", ("driver_id",), "not a column"),
        ("stratify_by", "payment_type = 'Cash'", "stratify-by column"),
        ("sample_fraction", 1.5, "sample fraction"),
        ("ratios", (0.8, 0.3, 0.1), "split ratios"),
        ("engine", "sqlite", "engine"),
    ],
)
def test_bad_identifiers_and_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        SplitConfig(TAXI, warehouse=Path("w.duckdb"), **{field: value})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project": "my-proj`; DROP TABLE x; --"}, "project"),
        ({"destination_dataset": "work; DELETE"}, "dataset"),
        ({"export_uri": "gs://bucket/x' OR '1'='1"}, "GCS URI"),
        ({"labels": (("Stage", "x"),)}, "label key"),
    ],
)
def test_bad_bigquery_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        BigQueryOptions(**{"project": "my-proj", "destination_dataset": "work", **options})


def test_values_travel_as_parameters_never_in_the_sql(taxi_db, tmp_path):
    salt = "x'); DROP TABLE chicago_taxi_trips.taxi_trips; --"
    config = SplitConfig(TAXI, warehouse=taxi_db, salt=salt, sample_fraction=0.5)
    for query in (split_query(config), filter_counts_query(config)):
        assert salt not in query.sql and query.params["salt"] == salt
    result = run_split(config, tmp_path / "splits")
    assert sum(result.split_rows.values()) > 0
    with duckdb.connect(str(taxi_db), read_only=True) as con:
        assert con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone() == (15_002,)


def test_parameter_mapping_is_exact():
    with pytest.raises(ValueError, match="parameters mismatch"):
        Query("q", "SELECT @a + @b", {"a": 1})
    with pytest.raises(ValueError, match="parameters mismatch"):
        Query("q", "SELECT @a", {"a": 1, "extra": 2})
    query = split_query(SplitConfig(TAXI, start=datetime(2015, 1, 1), sample_fraction=0.5))
    placeholders = {
        p.name
        for p in sqlglot.parse_one(transpile(query), read="duckdb").find_all(
            sqlglot.exp.Placeholder
        )
    }
    assert placeholders == set(query.params) >= {"start", "salt", "sample_fraction"}


# ---- atomic publish -------------------------------------------------------------------------


def test_failed_run_leaves_no_output_dir(taxi_db, tmp_path, monkeypatch):
    def write_then_fail(self, query, destination, definition):
        (Path(destination) / "train").mkdir()
        (Path(destination) / "train" / "part-00000.parquet").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(DuckDBEngine, "write_splits", write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        run_split(SplitConfig(TAXI, warehouse=taxi_db), tmp_path / "splits")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_table_is_a_verdict_naming_it_and_leaves_no_output_dir(taxi_db, tmp_path):
    config = SplitConfig(TAXI, warehouse=taxi_db, table="chicago_taxi_trips.missing_table")
    with pytest.raises(TableProblem, match=r"chicago_taxi_trips\.missing_table does not exist"):
        run_split(config, tmp_path / "splits")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(taxi_db, tmp_path):
    out = tmp_path / "splits"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError):
        run_split(SplitConfig(TAXI, warehouse=taxi_db), out)
    assert (out / "keep.txt").read_text() == "old"
    result = run_split(SplitConfig(TAXI, warehouse=taxi_db), out, overwrite=True)
    assert not (out / "keep.txt").exists() and result.split_rows["train"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["splits"]


def test_split_files_are_the_same_bytes_whatever_the_number_of_threads(tmp_path):
    """Past one DuckDB row group (122,880 rows) per thread, the partitioned COPY's row order
    follows the threads; the split files must not."""
    db_path = tmp_path / "wide.duckdb"
    build_synthetic_warehouse(TAXI, db_path, rows=300_000, seed=4, start=date(2024, 1, 1), days=20)
    query = split_query(SplitConfig(TAXI, warehouse=db_path))
    digests = []
    for threads in (2, 1, 2):
        out = tmp_path / f"threads-{threads}-{len(digests)}"
        out.mkdir()
        output = DuckDBEngine(db_path, threads=threads).write_splits(query, str(out), TAXI)
        assert sum(output.split_rows.values()) == 300_000
        digests.append(
            {
                split: (Path(output.split_dirs[split]) / "part-00000.parquet").read_bytes()
                for split in SPLIT_NAMES
            }
        )
        assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_NAMES)
    assert digests[0] == digests[1] == digests[2]
    train = pq.read_table(Path(output.split_dirs["train"]))
    areas = train.column("pickup_community_area").to_pylist()[:1000]
    assert areas != sorted(areas, key=lambda a: (a is None, a))  # mixed, not sorted by a column


def test_manifest_is_json_and_published_with_the_splits(taxi_default):
    manifest = taxi_default.to_manifest()
    assert json.loads(json.dumps(manifest)) == manifest
    assert manifest["engine"] == "duckdb" and manifest["kept_rows"] == 15_002
    assert set(manifest["sql"]) == {"filter_counts", "split"}
    published = json.loads((Path(taxi_default.output_dir) / "warehouse_manifest.json").read_text())
    assert published["split_rows"] == manifest["split_rows"]


# ---- BigQuery engine, up to the wire --------------------------------------------------------


class FakeRow(dict):
    pass


@dataclasses.dataclass
class FakeField:
    name: str
    field_type: str


@dataclasses.dataclass
class FakeTable:
    schema: list


class FakeRows(list):
    total_rows: int = 0


class FakeJob:
    def __init__(self, rows: FakeRows, total_bytes: int = 0) -> None:
        self._rows = rows
        self.total_bytes_processed = total_bytes

    def result(self) -> FakeRows:
        return self._rows


class FakeBigQueryClient:
    """Records every job; answers the filter counts, per-split row totals and the source
    table's schema (the definition's columns as BigQuery field types)."""

    def __init__(self, split_rows: dict[str, int] | None = None, schema=None) -> None:
        self.calls: list[dict] = []
        self.split_rows = split_rows or {"train": 76, "eval": 9, "test": 9}
        fields = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "STRING": "STRING"}
        self.schema = schema or [
            FakeField(c.name, fields.get(c.type.value, c.type.value)) for c in TAXI.columns
        ]
        self.tables_read: list[str] = []

    def get_table(self, table_id):
        self.tables_read.append(table_id)
        return FakeTable(self.schema)

    def query(self, sql, job_config=None, location=None, job_id_prefix=None):
        self.calls.append(
            {"sql": sql, "config": job_config, "location": location, "prefix": job_id_prefix}
        )
        rows = FakeRows()
        params = {p.name: p.value for p in job_config.query_parameters}
        if "AS input_rows" in sql:
            names = list(sqlglot.parse_one(sql, read="bigquery").named_selects)
            counts = {n: 100 if n == "input_rows" else 1 for n in names}
            counts["duplicate_rows"] = 0
            rows.append(FakeRow(counts))
        elif "split" in params:  # 100 rows in, 6 filters removing one each: 94 kept
            rows.total_rows = self.split_rows[params["split"]]
        return FakeJob(rows, total_bytes=1_000_000)


@pytest.fixture
def bigquery_run(gcs_bucket):
    options = BigQueryOptions(
        project="my-proj", destination_dataset="work", location="EU", labels=(("run", "r1"),)
    )
    config = SplitConfig(
        TAXI, engine="bigquery", bigquery=options, start=datetime(2015, 1, 1), sample_fraction=0.5
    )
    client = FakeBigQueryClient()
    # An earlier attempt's export of this interval must not survive into this one's split dirs.
    stale = f"{gcs_bucket}/runs/r1/train/part-stale.parquet"
    storage.write_bytes_atomic(stale, b"from an earlier attempt")
    output = f"{gcs_bucket}/runs/r1/"
    result = run_split(config, output, engine=BigQueryEngine(options, client), overwrite=True)
    assert not storage.exists(stale)
    return config, client, result, gcs_bucket


def test_bigquery_jobs_carry_parameters_location_and_labels(bigquery_run):
    config, client, _, _ = bigquery_run
    counts, split = client.calls[0], client.calls[1]
    assert counts["sql"] == filter_counts_query(config).sql
    assert split["sql"] == split_query(config).sql
    assert "`my-proj`.`chicago_taxi_trips`.`taxi_trips`" in split["sql"]
    for call in client.calls:
        assert call["location"] == "EU"
        assert call["config"].labels == {"run": "r1"}
        assert call["config"].use_legacy_sql is False
        sqlglot.parse_one(call["sql"], read="bigquery")  # valid BigQuery syntax
    params = {p.name: (p.type_, p.value) for p in split["config"].query_parameters}
    assert params["start"] == ("TIMESTAMP", datetime(2015, 1, 1, tzinfo=UTC))
    assert params["sample_fraction"] == ("FLOAT64", 0.5)
    assert params["train_upper"] == ("INT64", 8000)
    assert params["salt"] == ("STRING", config.resolved_salt)


def test_bigquery_writes_a_table_and_an_export_per_split(bigquery_run):
    _, client, result, bucket = bigquery_run
    assigned = client.calls[1]["config"]
    assert assigned.destination.table_id == "split_assigned"
    assert assigned.write_disposition == "WRITE_TRUNCATE"
    destinations = [
        c["config"].destination.table_id for c in client.calls if c["config"].destination
    ]
    assert destinations == ["split_assigned", "split_train", "split_eval", "split_test"]
    exports = [c["sql"] for c in client.calls if "EXPORT DATA" in c["sql"]]
    assert len(exports) == 3
    assert f"uri = '{bucket}/runs/r1/train/part-*.parquet'" in exports[0]
    assert "format = 'PARQUET'" in exports[0]
    assert result.split_dirs["test"] == f"{bucket}/runs/r1/test"
    assert result.split_rows == {"train": 76, "eval": 9, "test": 9}
    assert result.input_rows == 100 and result.removed_rows["sample"] == 1
    assert result.output_dir == f"{bucket}/runs/r1"


def test_bigquery_dry_run_reports_bytes():
    options = BigQueryOptions(project="my-proj", destination_dataset="work")
    client = FakeBigQueryClient()
    config = SplitConfig(TAXI, engine="bigquery", bigquery=options)
    report = BigQueryEngine(options, client).dry_run([split_query(config)])
    assert report["total_bytes_processed"] == {"split": 1_000_000}
    config = client.calls[0]["config"]
    assert config.dry_run is True and config.use_query_cache is False


def test_table_refs_render_quoted_parts():
    ref = TableRef.parse("ds.t", project="my-proj")
    assert ref.bigquery_sql() == "`my-proj`.`ds`.`t`"
    assert ref.duckdb_sql() == '"ds"."t"'


# ---- command line ---------------------------------------------------------------------------


def test_cli_prints_counts(taxi_db, tmp_path, capsys):
    out = tmp_path / "splits"
    code = warehouse_cli.main(
        ["--db", str(taxi_db), "--output", str(out), "--split", "70,20,10", "--salt", "cli"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert sum(report["split_rows"].values()) == report["input_rows"] == 15_002
    assert abs(report["split_rows"]["eval"] / 15_002 - 0.2) < 0.01


def test_cli_rejects_injection(taxi_db, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        warehouse_cli.main(
            ["--db", str(taxi_db), "--output", str(tmp_path / "o"), "--stratify-by", "fare; DROP"]
        )
    assert exit_status.value.code == 2
    assert "stratify-by column" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_pipeline_run_splits_on_bigquery_into_a_gcs_run_dir(gcs_bucket, monkeypatch):
    """``pipeline.run --warehouse-engine bigquery`` (the DAG's gcp warehouse task), to the wire."""
    from pipeline import run as run_module
    from pipeline.warehouse import stage as stage_module

    # 100 rows in, five filters (the window and the dataset's; no sampling) removing one each.
    client = FakeBigQueryClient({"train": 76, "eval": 10, "test": 9})
    monkeypatch.setattr(
        stage_module, "make_engine", lambda config: BigQueryEngine(config.bigquery, client)
    )
    runs = f"{gcs_bucket}/runs"
    args, beam_args = run_module.parse_args(
        ["--run-id", "20240305", "--stages", "data,warehouse", "--runs-dir", runs,
         "--start", "2024-03-05", "--end", "2024-03-06", "--table", "raw.trips",
         "--warehouse-engine", "bigquery", "--bq-project", "taxi-prod", "--bq-dataset", "work",
         "--bq-location", "EU", "--bq-label", "team=ml"]
    )  # fmt: skip
    manifest = run_module.run(args, beam_args)

    data_record = manifest["stages"]["data"]
    assert {k: data_record[k] for k in ("status", "engine", "table")} == {
        "status": "succeeded", "engine": "bigquery", "table": "raw.trips",
    }  # fmt: skip
    warehouse = manifest["stages"]["warehouse"]
    assert warehouse["engine"] == "bigquery"
    assert warehouse["split_dirs"]["train"] == f"{runs}/20240305/splits/train"
    assert manifest["rows_per_split"] == {"train": 76, "eval": 10, "test": 9}
    assert client.tables_read == ["taxi-prod.raw.trips"]  # the source checked before splitting
    assert "`taxi-prod`.`raw`.`trips`" in client.calls[1]["sql"]
    # The interval reaches BigQuery as query parameters of the split query.
    params = {p.name: p.value for p in client.calls[1]["config"].query_parameters}
    assert (params["start"], params["end"]) == (
        datetime(2024, 3, 5, tzinfo=UTC),
        datetime(2024, 3, 6, tzinfo=UTC),
    )
    for call in client.calls:
        assert call["location"] == "EU"
        assert call["config"].labels == {"pipeline": "taxi", "run": "20240305", "team": "ml"}
    tables = [c["config"].destination.table_id for c in client.calls if c["config"].destination]
    # Named after the run: daily runs never overwrite each other's tables.
    assert tables == [f"split_20240305_{s}" for s in ("assigned", "train", "eval", "test")]
    exports = [c["sql"] for c in client.calls if "EXPORT DATA" in c["sql"]]
    assert f"uri = '{runs}/20240305/splits/train/part-*.parquet'" in exports[0]
    stored = json.loads(storage.read_text(f"{runs}/20240305/manifest.json"))
    assert stored["stages"]["warehouse"]["status"] == "succeeded"


def test_pipeline_run_refuses_bigquery_without_project_and_dataset(tmp_path):
    from pipeline import run as run_module
    from pipeline.cli import UsageError

    args, beam_args = run_module.parse_args(
        ["--runs-dir", str(tmp_path), "--run-id", "x", "--warehouse-engine", "bigquery"]
    )
    with pytest.raises(UsageError, match="needs --bq-project and --bq-dataset"):
        run_module.run(args, beam_args)
    assert list(tmp_path.iterdir()) == []  # nothing written before the flags were checked
