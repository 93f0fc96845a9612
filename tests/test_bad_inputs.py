"""A catalog of bad inputs, each driven through a real command line on a real DuckDB file.

Every case corrupts a copy of one small synthetic warehouse (300 trips over five days, every
filter count zero before the corruption) or passes a bad flag, runs ``python -m
pipeline.warehouse`` (in this process: its ``main`` returns the exit status), ``python -m
pipeline.run --stages data,warehouse`` (a child process), the warehouse then ``python -m
pipeline.validation stats/check``, or ``python -m pipeline.data prepare`` and ``python -m
pipeline.validation check`` of a dataset folder written here (a CSV source, found through
``PIPELINE_DATASET_PATH``), and asserts:

* the exit status: 0 ok, 2 usage, 3 verdict; never 1 (a crash) for bad data or a bad flag;
* that the message names the table, column, file or flag at fault;
* for every run that splits: rows in (counted in the DuckDB file) = rows in the split files +
  rows removed, and the removals per named filter are exactly what the corruption put there;
  for a CSV load: lines in = rows loaded + rows kept aside in ``rejected-<table>.csv``;
* that a refused run leaves no output (no split directory, no run directory for a usage error).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import subprocess
import textwrap
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import EXIT_USAGE
from pipeline.data import build_synthetic_warehouse
from pipeline.datasets import get_dataset
from pipeline.definition import SPLIT_NAMES
from pipeline.verdicts import EXIT_VERDICT
from pipeline.warehouse import cli as warehouse_cli
from tests.conftest import PYTHON, REPO_ROOT, subprocess_env

TAXI = get_dataset("taxi")
TABLE = TAXI.table
BASE_ROWS = 300
INJECTION = "x'); DROP TABLE chicago_taxi_trips.taxi_trips; --"
LONG_TEXT = "long " * 20_000  # 100,000 characters
UNICODE_TEXT = "Ünïcødé 出租车 🚕 \u200b\t"
ORDERS_ROWS = 200
EVERY_FILTER = ("fare_non_negative", "trip_seconds_non_negative", "label_present",
                "required_present")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: how to corrupt the warehouse copy, how to call, what must come out."""

    name: str
    sql: tuple[str, ...] = ()  # statements on the copy; ``{t}`` is the source table
    args: tuple[str, ...] = ()  # extra flags of the command
    command: str = "warehouse"  # warehouse | run | validation
    warehouse: str = "copy"  # copy | missing | garbage (what --db points at)
    exit: int = 0
    message: str = ""  # fragment the error output must contain (case-insensitive)
    removed: dict[str, int] = dataclasses.field(default_factory=dict)  # nonzero removals
    manifest: dict = dataclasses.field(default_factory=dict)  # other warehouse record fields
    kept: tuple[tuple[str, object, int], ...] = ()  # (column, value, rows) in the split files
    csv_lines: tuple[str, ...] = ()  # prepare: lines appended to a dataset folder's good CSV
    csv_drop: str = ""  # prepare: a declared column the CSV lacks
    rejected: int = 0  # prepare: rows kept aside in rejected-<table>.csv

    def __str__(self) -> str:
        return self.name


def _ids(where: str) -> str:
    return f"rowid IN (SELECT rowid FROM {{t}} ORDER BY rowid LIMIT {where})"


CASES = [
    # ---- the table's shape -----------------------------------------------------------------
    Case("empty_table", sql=("DELETE FROM {t}",), exit=EXIT_VERDICT,
         message="table chicago_taxi_trips.taxi_trips is empty"),
    Case("missing_required_column", sql=("ALTER TABLE {t} DROP COLUMN company",),
         exit=EXIT_VERDICT, message="taxi_trips lacks column(s) ['company']"),
    Case("extra_columns_are_ignored_and_reported",
         sql=("ALTER TABLE {t} ADD COLUMN driver_note VARCHAR DEFAULT 'n/a'",
              "ALTER TABLE {t} ADD COLUMN surcharge DOUBLE"),
         manifest={"extra_columns": ["driver_note", "surcharge"]}),
    Case("numeric_column_as_varchar", sql=("ALTER TABLE {t} ALTER fare TYPE VARCHAR",),
         exit=EXIT_VERDICT, message="fare is VARCHAR, the definition says FLOAT64"),
    Case("timestamp_column_as_bigint",
         sql=("ALTER TABLE {t} ALTER trip_start_timestamp TYPE BIGINT "
              "USING epoch(trip_start_timestamp)::BIGINT",),
         exit=EXIT_VERDICT,
         message="trip_start_timestamp is BIGINT, the definition says TIMESTAMP"),
    Case("string_column_as_bigint",
         sql=("ALTER TABLE {t} DROP COLUMN company", "ALTER TABLE {t} ADD COLUMN company BIGINT"),
         exit=EXIT_VERDICT, message="company is BIGINT, the definition says STRING"),
    # ---- values: NaN, NULL, infinities, negatives -------------------------------------------
    Case("nan_in_label_source",
         sql=("UPDATE {t} SET tips = 'NaN'::DOUBLE WHERE " + _ids("10"),),
         removed={"label_present": 10}),
    Case("null_in_label_source", sql=("UPDATE {t} SET tips = NULL WHERE " + _ids("12"),),
         removed={"label_present": 12}),
    Case("nan_in_a_filtered_column",  # fare: bound by fare_non_negative and a label source
         sql=("UPDATE {t} SET fare = 'NaN'::DOUBLE WHERE " + _ids("6"),),
         removed={"label_present": 6}),
    Case("null_in_a_required_column",
         sql=("UPDATE {t} SET trip_start_timestamp = NULL WHERE " + _ids("4"),),
         removed={"required_present": 4}),
    Case("nan_in_an_optional_column_is_kept_as_missing",
         sql=("UPDATE {t} SET trip_miles = 'NaN'::DOUBLE WHERE " + _ids("7"),),
         kept=(("trip_miles", math.nan, 7),)),
    Case("negative_values_removed_by_the_declared_filters",
         sql=("UPDATE {t} SET fare = -1.0 WHERE " + _ids("9"),
              "UPDATE {t} SET trip_seconds = -60 WHERE rowid IN "
              "(SELECT rowid FROM {t} ORDER BY rowid LIMIT 3 OFFSET 9)"),
         removed={"fare_non_negative": 9, "trip_seconds_non_negative": 3}),
    Case("minus_infinity_removed_by_a_bound_filter",
         sql=("UPDATE {t} SET fare = '-Infinity'::DOUBLE WHERE " + _ids("5"),),
         removed={"fare_non_negative": 5}),
    Case("plus_infinity_is_a_value_kept_for_validation",
         sql=("UPDATE {t} SET trip_miles = 'Infinity'::DOUBLE WHERE " + _ids("5"),),
         kept=(("trip_miles", math.inf, 5),)),
    Case("all_rows_filtered_in_the_warehouse_command", sql=("UPDATE {t} SET fare = -1.0",),
         removed={"fare_non_negative": BASE_ROWS}),
    Case("all_rows_filtered_stop_a_run", command="run", sql=("UPDATE {t} SET tips = NULL",),
         exit=EXIT_VERDICT,
         message="no training rows from chicago_taxi_trips.taxi_trips (input 300 rows",
         removed={"label_present": BASE_ROWS}),
    Case("no_training_rows_outside_the_interval_stop_a_run", command="run",
         args=("--start", "2030-01-01", "--end", "2030-02-01"), exit=EXIT_VERDICT,
         message="no training rows from chicago_taxi_trips.taxi_trips",
         removed={"time_window": BASE_ROWS}),
    Case("timestamps_outside_the_requested_interval",
         sql=("UPDATE {t} SET trip_start_timestamp = TIMESTAMP '2023-06-01' WHERE " + _ids("20"),
              "UPDATE {t} SET trip_start_timestamp = TIMESTAMP '2031-01-01' WHERE rowid IN "
              "(SELECT rowid FROM {t} ORDER BY rowid LIMIT 10 OFFSET 20)"),
         args=("--start", "2024-01-01", "--end", "2025-01-01"),
         removed={"time_window": 30}),
    # ---- exact duplicates (10%) under each policy --------------------------------------------
    Case("ten_percent_duplicates_keep",
         sql=("INSERT INTO {t} SELECT * FROM {t} WHERE " + _ids("30"),),
         args=("--duplicates", "keep"), manifest={"duplicate_rows": 30, "input_rows": 330}),
    Case("ten_percent_duplicates_drop",
         sql=("INSERT INTO {t} SELECT * FROM {t} WHERE " + _ids("30"),),
         args=("--duplicates", "drop"), removed={"duplicate": 30},
         manifest={"duplicate_rows": 30, "input_rows": 330}),
    Case("ten_percent_duplicates_block",
         sql=("INSERT INTO {t} SELECT * FROM {t} WHERE " + _ids("30"),),
         args=("--duplicates", "block"), exit=EXIT_VERDICT,
         message="chicago_taxi_trips.taxi_trips has 30 exact duplicate rows (of 330)"),
    # ---- strings are data, never SQL ----------------------------------------------------------
    Case("sql_injection_in_string_columns",
         sql=(f"UPDATE {{t}} SET company = '{INJECTION.replace(chr(39), chr(39) * 2)}' WHERE "
              + _ids("5"),
              "UPDATE {t} SET payment_type = 'Cash'' OR ''1''=''1' WHERE " + _ids("3")),
         kept=(("company", INJECTION, 5), ("payment_type", "Cash' OR '1'='1", 3))),
    Case("very_long_strings", sql=(f"UPDATE {{t}} SET company = '{LONG_TEXT}' WHERE " + _ids("4"),),
         kept=(("company", LONG_TEXT, 4),)),
    Case("unicode_and_empty_strings",
         sql=(f"UPDATE {{t}} SET company = '{UNICODE_TEXT}' WHERE " + _ids("6"),
              "UPDATE {t} SET company = '' WHERE rowid IN "
              "(SELECT rowid FROM {t} ORDER BY rowid LIMIT 4 OFFSET 6)"),
         kept=(("company", UNICODE_TEXT, 6), ("company", "", 4))),
    # ---- the warehouse file and the table name ----------------------------------------------
    Case("missing_warehouse_file", warehouse="missing", exit=EXIT_VERDICT,
         message="absent.duckdb not found"),
    Case("corrupt_warehouse_file", warehouse="garbage", exit=EXIT_VERDICT,
         message="garbage.duckdb cannot be opened as a DuckDB database"),
    Case("table_that_does_not_exist", args=("--table", "chicago_taxi_trips.no_such_trips"),
         exit=EXIT_VERDICT, message="table chicago_taxi_trips.no_such_trips does not exist"),
    Case("table_name_with_sql", args=("--table", "chicago_taxi_trips.taxi_trips; DROP TABLE x"),
         exit=EXIT_USAGE, message="table name"),
    Case("run_with_a_missing_warehouse_file", command="run", warehouse="missing",
         exit=EXIT_VERDICT, message="warehouse file"),
    Case("run_with_a_corrupt_warehouse_file", command="run", warehouse="garbage",
         exit=EXIT_VERDICT, message="garbage.duckdb cannot be opened as a DuckDB database"),
    # ---- the command line ----------------------------------------------------------------------
    Case("unknown_dataset", args=("--dataset", "no_such_dataset"), exit=EXIT_USAGE,
         message="no_such_dataset"),
    Case("run_unknown_dataset", command="run", args=("--dataset", "no_such_dataset"),
         exit=EXIT_USAGE, message="no_such_dataset"),
    Case("run_unknown_stages", command="run", args=("--stages", "data,warehouse,trian"),
         exit=EXIT_USAGE, message="unknown stage(s) ['trian']"),
    Case("run_duplicates_with_a_bad_value", command="run", args=("--duplicates", "maybe"),
         exit=EXIT_USAGE, message="--duplicates: invalid choice: 'maybe'"),
    Case("duplicates_with_a_bad_value", args=("--duplicates", "maybe"), exit=EXIT_USAGE,
         message="--duplicates: invalid choice: 'maybe'"),
    Case("split_with_two_numbers", args=("--split", "80,20"), exit=EXIT_USAGE,
         message="--split: invalid split '80,20'"),
    Case("split_that_is_not_numbers", args=("--split", "a,b,c"), exit=EXIT_USAGE,
         message="--split: invalid split 'a,b,c'"),
    Case("split_with_a_negative_share", args=("--split=-10,60,50",), exit=EXIT_USAGE,
         message="invalid split ratios"),
    Case("split_without_training_rows", args=("--split", "0,50,50"), exit=EXIT_USAGE,
         message="invalid split ratios: (0.0, 0.5, 0.5)"),
    Case("sample_fraction_zero", args=("--sample-fraction", "0"), exit=EXIT_USAGE,
         message="invalid sample fraction: 0.0"),
    Case("interval_that_ends_before_it_starts", args=("--start", "2024-02-01", "--end",
         "2024-01-01"), exit=EXIT_USAGE, message="invalid time window"),
    Case("unparseable_date", args=("--start", "2024-13-01"), exit=EXIT_USAGE,
         message="--start: invalid"),
    # ---- a dataset folder's CSV source and its schema ------------------------------------------
    Case("csv_with_unparseable_rows", command="prepare",
         csv_lines=("two,2024-03-01T10:00:00,north,3.0,1,0", "9001,yesterday,south,4.0,2,1",
                    "9002,2024-03-02T10:00:00,east,lots,2,1"),
         exit=EXIT_VERDICT, rejected=3,
         message=f"loaded {ORDERS_ROWS} rows into shop.orders, 3 rejected (all kept in"),
    Case("csv_without_a_declared_column", command="prepare", csv_drop="items",
         exit=EXIT_VERDICT, message="columns do not match table shop.orders: missing ['items']"),
    Case("schema_missing_for_a_dataset", command="schema", exit=EXIT_VERDICT,
         message="no reviewed schema for dataset 'orders'"),
    # ---- validation: the splits pass the warehouse, the schema refuses them --------------------
    Case("unseen_category_blocks_validation", command="validation",
         sql=("UPDATE {t} SET payment_type = 'Bitcoin' WHERE " + _ids("60"),),
         exit=EXIT_VERDICT, message="payment_type"),
    Case("value_outside_the_schema_domain_blocks_validation", command="validation",
         sql=("UPDATE {t} SET trip_start_hour = 99 WHERE " + _ids("60"),),
         exit=EXIT_VERDICT, message="trip_start_hour"),
]  # fmt: skip


@pytest.fixture(scope="module")
def base_warehouse(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("base") / "warehouse.duckdb"
    build_synthetic_warehouse(TAXI, db, rows=BASE_ROWS, seed=5, start=date(2024, 1, 1), days=5)
    return db


def prepared_warehouse(case: Case, base: Path, directory: Path) -> Path:
    """The file ``--db`` names for ``case``: a corrupted copy, an absent path, or garbage."""
    if case.warehouse == "missing":
        return directory / "absent.duckdb"
    if case.warehouse == "garbage":
        garbage = directory / "garbage.duckdb"
        garbage.write_bytes(b"not a database\n" * 400)
        return garbage
    db = directory / "warehouse.duckdb"
    shutil.copy(base, db)
    with duckdb.connect(str(db)) as con:
        for statement in case.sql:
            con.execute(statement.replace("{t}", TABLE))
    return db


def orders_folder(case: Case, root: Path) -> Path:
    """A dataset folder (the one tests/test_any_table.py runs end to end) with a CSV of
    ``ORDERS_ROWS`` good rows, corrupted as ``case`` says; the schema only for prepare cases."""
    from tests.test_any_table import DEFINITION, SCHEMA

    folder = root / "datasets" / "orders"
    folder.mkdir(parents=True)
    (folder / "definition.py").write_text(textwrap.dedent(DEFINITION))
    if case.command != "schema":
        (folder / "schema.pbtxt").write_text(SCHEMA)
    columns = ["order_id", "placed_at", "region", "amount", "items", "returned"]
    rows = [
        [str(i), f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:15:00", ["north", "south", "east"][i % 3],
         f"{10 + i % 37:.2f}", str(1 + i % 5), "1" if i % 4 == 0 else "0"]
        for i in range(ORDERS_ROWS)
    ]  # fmt: skip
    if case.csv_drop:
        index = columns.index(case.csv_drop)
        columns, rows = (
            columns[:index] + columns[index + 1 :],
            [r[:index] + r[index + 1 :] for r in rows],
        )
    lines = [",".join(columns), *(",".join(r) for r in rows), *case.csv_lines]
    (folder / "orders.csv").write_text("\n".join(lines) + "\n")
    return folder.parent


def run_folder_command(case: Case, directory: Path) -> tuple[int, str]:
    """``pipeline.data prepare`` or ``pipeline.validation check`` of the orders folder."""
    env = {**subprocess_env(), "PIPELINE_DATASET_PATH": str(orders_folder(case, directory))}
    if case.command == "prepare":
        args = ["pipeline.data", "prepare", "--dataset", "orders", "--data-dir", "data"]
    else:
        (directory / "empty.pb").write_bytes(b"")
        args = ["pipeline.validation", "check", "--dataset", "orders", "--stats", "empty.pb",
                "--environment", "TRAINING"]  # fmt: skip
    completed = subprocess.run(
        [PYTHON, "-m", *args], capture_output=True, text=True, cwd=directory, env=env,
        timeout=300, check=False,
    )  # fmt: skip
    return completed.returncode, completed.stderr


def assert_load_accounted(case: Case, directory: Path) -> None:
    """Lines in = rows loaded + rows rejected; the rejected ones are kept, no warehouse is."""
    data = directory / "data" / "orders"
    assert not (data / "warehouse.duckdb").exists()
    if case.rejected:
        with (data / "rejected-shop.orders.csv").open(newline="") as handle:
            kept_aside = list(csv.DictReader(handle))
        assert len(kept_aside) == case.rejected
        assert {row["column_name"] for row in kept_aside} == {"order_id", "placed_at", "amount"}


def run_warehouse_command(db: Path, output: Path, args: tuple[str, ...], capsys) -> tuple[int, str]:
    """``python -m pipeline.warehouse`` in this process: (exit status, stderr)."""
    try:
        status = warehouse_cli.main(["--db", str(db), "--output", str(output), *args])
    except SystemExit as exit_:  # argparse and usage errors
        status = exit_.code
    return status, capsys.readouterr().err


def run_pipeline(db: Path, runs: Path, args: tuple[str, ...]) -> tuple[int, str]:
    """``python -m pipeline.run --stages data,warehouse`` in a child process."""
    stages = () if "--stages" in args else ("--stages", "data,warehouse")
    completed = subprocess.run(
        [PYTHON, "-m", "pipeline.run", "--runner", "DirectRunner", "--runs-dir", str(runs),
         "--run-id", "case", "--db", str(db), *stages, *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env(), timeout=300,
        check=False,
    )  # fmt: skip
    return completed.returncode, completed.stderr


def run_validation(splits: Path, directory: Path, capsys) -> tuple[int, str]:
    """``python -m pipeline.validation stats`` of the train split, then ``check``."""
    from pipeline.validation import cli as validation_cli

    stats = directory / "train.pb"
    pattern = str(splits / "train" / "*.parquet")
    assert validation_cli.main(["stats", "--input", pattern, "--output", str(stats)]) == 0
    capsys.readouterr()
    status = validation_cli.main(["check", "--stats", str(stats), "--environment", "TRAINING"])
    return status, capsys.readouterr().err


def split_rows(splits: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(splits / split) for split in SPLIT_NAMES)


def table_rows(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]


def assert_rows_add_up(case: Case, db: Path, record: dict, splits: Path | None) -> None:
    """Rows in = rows in the split files + rows removed, per named filter as the case says."""
    rows_in = table_rows(db)
    assert record["input_rows"] == rows_in
    removed = record["removed_rows"]
    assert {k: v for k, v in removed.items() if v} == case.removed
    assert set(EVERY_FILTER) <= set(removed)
    written = sum(record["split_rows"].values())
    assert rows_in == written + sum(removed.values())
    if splits is not None:
        assert split_rows(splits).num_rows == written
    for field, expected in case.manifest.items():
        assert record[field] == expected, field


def assert_values_kept(case: Case, splits: Path) -> None:
    """Each value the case planted arrives in the split files verbatim, as often as planted."""
    kept = split_rows(splits)
    for column, value, rows in case.kept:
        values = kept[column].to_pylist()
        if isinstance(value, float) and math.isnan(value):
            found = sum(1 for v in values if v is not None and math.isnan(v))
        else:
            found = sum(1 for v in values if v == value)
        assert found == rows, (column, value)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case: Case, base_warehouse, tmp_path, capsys):
    db = prepared_warehouse(case, base_warehouse, tmp_path)
    output = tmp_path / "splits"
    if case.command in ("prepare", "schema"):
        status, err = run_folder_command(case, tmp_path)
        assert status == case.exit, err[-3000:]
        assert case.message.lower() in err.lower(), err[-3000:]
        if case.command == "prepare":
            assert_load_accounted(case, tmp_path)
        return
    if case.command == "run":
        status, err = run_pipeline(db, tmp_path / "runs", case.args)
    else:
        status, err = run_warehouse_command(db, output, case.args, capsys)
        if case.command == "validation":
            assert status == 0, err
            status, err = run_validation(output, tmp_path, capsys)
    assert status == case.exit, err[-3000:]
    if case.exit:
        assert case.message.lower() in err.lower(), err[-3000:]
    if case.command == "warehouse" and case.exit:
        assert not output.exists() and not list(tmp_path.glob(".splits.staging-*"))
    if case.exit == EXIT_USAGE and case.command == "run":
        assert not (tmp_path / "runs" / "case").exists()  # refused before anything was written
    if case.command == "run" and (case.removed or not case.exit):
        manifest = json.loads((tmp_path / "runs" / "case" / "manifest.json").read_text())
        assert_rows_add_up(case, db, manifest["stages"]["warehouse"], None)
    if case.command != "run" and output.exists():
        record = json.loads((output / "warehouse_manifest.json").read_text())
        assert_rows_add_up(case, db, record, output)
        assert_values_kept(case, output)
    if case.warehouse == "copy" and not case.sql and case.command != "run":
        assert table_rows(db) == BASE_ROWS  # nothing a flag said changed the table


def test_the_catalog_is_a_catalog():
    """Distinct names, and more than 25 cases, each with the exit status of its kind."""
    assert len({case.name for case in CASES}) == len(CASES) >= 25
    assert {case.exit for case in CASES} == {0, EXIT_USAGE, EXIT_VERDICT}
    assert all(case.message for case in CASES if case.exit)
