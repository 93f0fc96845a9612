"""Derived columns in batch: the warehouse SQL on DuckDB against a reference of the rule, and the
BigQuery text up to the wire."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from pipeline.definition import SPLIT_NAMES
from pipeline.warehouse import BigQueryOptions, SplitConfig, TableProblem, run_split
from pipeline.warehouse.bigquery_engine import BigQueryEngine
from pipeline.warehouse.query import filter_counts_query, split_query
from tests.point_in_time_reference import as_of_reference, lookup_reference, window_reference
from tests.test_warehouse import FakeBigQueryClient, FakeField, FakeTable
from tests.window_data import DEFINITION, READINGS, START, STEP, TABLE, TRUCKS, build_warehouse
from tests.window_data import make_tables as make_window_tables

REL = 1e-9


@pytest.fixture(scope="module")
def tables():
    return make_window_tables()


@pytest.fixture(scope="module")
def warehouse(tables, tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("windows") / "w.duckdb", tables)


def split_rows(result) -> list[dict]:
    table = pa.concat_tables(pq.read_table(result.split_dirs[s]) for s in SPLIT_NAMES)
    return sorted(table.to_pylist(), key=lambda r: r["delivery_id"])


@pytest.fixture(scope="module")
def rows(warehouse, tmp_path_factory):
    out = tmp_path_factory.mktemp("window_split") / "splits"
    return split_rows(run_split(SplitConfig(DEFINITION, warehouse=warehouse), out))


def close(want, got) -> bool:
    if want is None or got is None:
        return want is None and got is None
    return math.isclose(want, got, rel_tol=REL, abs_tol=1e-9)


def test_split_files_carry_the_derived_columns_after_the_raw_ones(rows):
    names = list(rows[0])
    assert names == [c.name for c in DEFINITION.split_file_columns]
    assert names[len(DEFINITION.columns)] == "depot_count_1h" and names[-1] == "was_late"
    assert len(rows) == 600  # every row kept: nothing here removes a row


@pytest.mark.parametrize("window", DEFINITION.windows, ids=lambda w: w.name)
def test_window_features_follow_the_point_in_time_rule(window, rows, tables):
    events = tables[TABLE if window.events is None else READINGS.table]
    time = "delivered_at" if window.events is None else "read_at"
    for seconds in window.window_seconds:
        expected = window_reference(
            rows, events, key="depot", event_key="depot", row_time="delivered_at",
            event_time=time, value=window.value, window=seconds, lag=window.lag_seconds,
        )  # fmt: skip
        for aggregation in window.aggregation_kinds:
            column = window.output_name(aggregation, seconds)
            for row, want in zip(rows, expected, strict=True):
                got = row[column]
                assert close(want[aggregation.value], got), (column, row["delivery_id"], want, got)
    counted = [r[window.output_name(window.aggregation_kinds[0], window.window_seconds[0])]
               for r in rows]  # fmt: skip
    assert 0 in counted and max(c or 0 for c in counted) > 1  # empty and busy windows occur


def test_as_of_join_and_lookup_follow_their_rules(rows, tables):
    as_of = as_of_reference(
        rows, tables[READINGS.table], key="depot", obs_key="depot", row_time="delivered_at",
        obs_time="read_at", columns=("temp",), lag=600, max_age=7200,
    )  # fmt: skip
    assert [r["reading_temp"] for r in rows] == [w["temp"] for w in as_of]
    lookup = lookup_reference(
        rows, tables[TRUCKS.table], key="truck", table_key="truck", columns=("capacity",)
    )
    assert [r["truck_capacity"] for r in rows] == [w["capacity"] for w in lookup]
    assert any(r["reading_temp"] is None and r["depot"] for r in rows)  # too old or none yet
    assert any(r["truck_capacity"] is None and r["truck"] for r in rows)  # unknown truck


def test_edges_of_the_windows_by_hand(rows, tables):
    """One row spelled out: an event one window back counts, its own time never does."""
    events = tables[TABLE]
    row = next(
        r for r in rows
        if r["depot"] == "north" and r["delivered_at"] and r["delivered_at"] >= START + 7200
    )  # fmt: skip
    t = row["delivered_at"]

    def delays(low, high):  # events of the depot with low <= time < high, present delays
        return [e["delay"] for e in events if e["depot"] == "north" and e["delivered_at"]
                is not None and low <= e["delivered_at"] < high and e["delay"] is not None
                and not math.isnan(e["delay"])]  # fmt: skip

    assert row["depot_count_1h"] == len(delays(t - 3600, t))  # [t - 1h, t): t - 1h included
    assert row["depot_known_count_2h"] == len(delays(t - 7200, t - 1800))  # lag: [t-2h, t-30m)


def test_filters_the_time_window_and_sampling_never_remove_events(warehouse, rows, tmp_path):
    config = SplitConfig(
        DEFINITION,
        warehouse=warehouse,
        start=datetime.fromtimestamp(START + 100 * STEP, UTC),
        end=datetime.fromtimestamp(START + 150 * STEP, UTC),
        sample_fraction=0.5,
    )
    narrow = split_rows(run_split(config, tmp_path / "narrow"))
    full = {r["delivery_id"]: r for r in rows}
    assert 0 < len(narrow) < len(rows) / 4
    for row in narrow:  # the same windows as over the whole table (floats: summation order)
        for column in DEFINITION.derived_column_names:
            assert close(full[row["delivery_id"]][column], row[column]), column


def test_copies_of_an_event_count_once(tables, rows, tmp_path):
    """A row loaded twice is one event (the online store keeps one per id): nothing changes."""
    copied = {
        **tables,
        TABLE: [*tables[TABLE], *tables[TABLE][:50]],
        READINGS.table: [*tables[READINGS.table], *tables[READINGS.table][:20]],
        TRUCKS.table: [*tables[TRUCKS.table], tables[TRUCKS.table][0]],
    }
    db = build_warehouse(tmp_path / "copies.duckdb", copied)
    again = split_rows(run_split(SplitConfig(DEFINITION, warehouse=db), tmp_path / "splits"))
    first = {r["delivery_id"]: r for r in again}  # the copied deliveries are rows twice, too
    assert len(again) == len(rows) + 50
    for row in rows:
        for column in DEFINITION.derived_column_names:
            assert close(row[column], first[row["delivery_id"]][column]), column


def test_an_event_id_with_two_versions_is_a_verdict_naming_the_feature(tables, tmp_path):
    reading = tables[READINGS.table][3]
    conflicting = {**tables, READINGS.table: [*tables[READINGS.table], {**reading, "temp": 99.5}]}
    db = build_warehouse(tmp_path / "conflict.duckdb", conflicting)
    with pytest.raises(TableProblem, match=r"window feature 'depot_temp'.*two versions"):
        run_split(SplitConfig(DEFINITION, warehouse=db), tmp_path / "splits")
    assert not (tmp_path / "splits").exists()


def test_a_missing_side_table_is_a_verdict_naming_it(warehouse, tmp_path):
    import duckdb

    db = tmp_path / "no_trucks.duckdb"
    db.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(db)) as connection:
        connection.execute("DROP TABLE depot.trucks")
    with pytest.raises(TableProblem, match=r"depot\.trucks does not exist"):
        run_split(SplitConfig(DEFINITION, warehouse=db), tmp_path / "splits")


# ---- BigQuery, up to the wire ------------------------------------------------------------------


class TablesClient(FakeBigQueryClient):
    """The fake client, describing each of the definition's tables with its own columns."""

    def get_table(self, table_id):
        self.tables_read.append(table_id)
        columns = {t: c for t, c in DEFINITION.tables.items()}[table_id.split(".", 1)[1]]
        fields = {"INT64": "INTEGER", "FLOAT64": "FLOAT"}
        return FakeTable(
            [FakeField(c.name, fields.get(c.type.value, c.type.value)) for c in columns]
        )


def test_bigquery_runs_the_same_window_sql_with_frames_as_validated_literals(
    warehouse, gcs_bucket, tmp_path
):
    options = BigQueryOptions(project="my-proj", destination_dataset="work")
    config = SplitConfig(DEFINITION, engine="bigquery", bigquery=options)
    client = TablesClient({"train": 80, "eval": 9, "test": 9})  # 100 in, two filters
    run_split(config, f"{gcs_bucket}/run", engine=BigQueryEngine(options, client))
    assert client.tables_read == [
        "my-proj.depot.deliveries", "my-proj.depot.readings", "my-proj.depot.trucks",
    ]  # fmt: skip
    counts, split = client.calls[0]["sql"], client.calls[1]["sql"]
    assert counts == filter_counts_query(config).sql and split == split_query(config).sql
    for sql in (counts, split):
        sqlglot.parse_one(sql, read="bigquery")
    assert "RANGE BETWEEN 3600 PRECEDING AND 1 PRECEDING" in split  # 1 h, lag 0: before t
    assert "RANGE BETWEEN 7200 PRECEDING AND 1801 PRECEDING" in split  # 2 h, lag 30 min
    assert "RANGE BETWEEN 6600 PRECEDING AND CURRENT ROW" in split  # as-of: 2 h - 10 min
    assert "LAST_VALUE(_v_last IGNORE NULLS)" in split and "STDDEV_POP(_v)" in split
    assert (
        "LEFT JOIN (SELECT DISTINCT truck, capacity FROM `my-proj`.`depot`.`trucks`) AS _lookup_1"
        in split
    )
    assert (
        "FROM `my-proj`.`depot`.`readings` WHERE depot IS NOT NULL AND read_at IS NOT NULL) "
        "AS distinct_events_join_reading" in counts
    )
    # The same text the embedded engine transpiles, but for the project.
    local = split_query(
        dataclasses.replace(config, engine="duckdb", bigquery=None, warehouse=warehouse)
    )
    assert split.replace("`my-proj`.", "") == local.sql
