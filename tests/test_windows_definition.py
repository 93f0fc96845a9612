"""Window features and joins in the definition language: derived columns and load-time checks."""

from __future__ import annotations

import dataclasses
import re

import pytest

from pipeline.datasets import get_dataset
from pipeline.definition import (
    AsOfJoin,
    ColumnType,
    DefinitionError,
    Lookup,
    WindowFeature,
    duration_label,
    duration_seconds,
)
from tests.window_data import DEFINITION


def test_durations_and_their_labels():
    assert [duration_seconds(d) for d in ("90s", "30m", "3h", "7d", 45)] == [
        90,
        1800,
        10800,
        604800,
        45,
    ]
    assert [duration_label(s) for s in (90, 1800, 10800, 86400, 5400)] == [
        "90s",
        "30m",
        "3h",
        "1d",
        "90m",
    ]
    with pytest.raises(ValueError, match="invalid duration '3 weeks'"):
        duration_seconds("3 weeks")


def test_derived_columns_sit_between_the_raw_columns_and_the_label():
    flights = get_dataset("flights")
    names = [c.name for c in flights.split_file_columns]
    raw, derived = list(flights.column_names), list(flights.derived_column_names)
    assert names == [*raw, *derived, "late_arrival"]
    types = flights.column_types
    assert types["origin_dep_delay_count_3h"] is ColumnType.INT64
    assert types["origin_dep_delay_mean_3h"] is ColumnType.FLOAT64
    assert types["plane_year"] is ColumnType.INT64  # a lookup keeps the side column's type
    # The export reads them from a request, a client never sends them: the server fills them.
    serving = [c.name for c in flights.serving_columns]
    client = [c.name for c in flights.client_columns]
    assert set(derived) <= set(serving) and not set(derived) & set(client)
    assert "time_hour" in client and "dep_delay" not in serving
    assert flights.max_lookback_seconds == 86400


def _with(**changes):
    return lambda: dataclasses.replace(DEFINITION, **changes)


WINDOW = DEFINITION.windows[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"windows": (dataclasses.replace(WINDOW, value="speed"),)},
            "window feature 'depot': value 'speed' is not a column of the main table",
        ),
        (
            {"windows": (dataclasses.replace(WINDOW, windows=("3x",)),)},
            "window feature 'depot': invalid duration '3x'",
        ),
        (
            {"windows": (dataclasses.replace(WINDOW, windows=("1h",), lag="1h"),)},
            "window feature 'depot': lag 1h >= window 1h",
        ),
        (
            {"windows": (dataclasses.replace(WINDOW, aggregations=("median",)),)},
            "window feature 'depot': unknown aggregation",
        ),
        (
            {
                "windows": (
                    dataclasses.replace(WINDOW, keys=("delivery_id",), event_keys=("depot",)),
                )
            },
            "window feature 'depot': key type mismatch: 'delivery_id' is INT64, "
            "the main table.depot is STRING",
        ),
        (
            {"windows": (dataclasses.replace(WINDOW, keys=("late",)),)},
            "window feature 'depot': key 'late' is unknown at serving",
        ),
        (
            {
                "joins": (
                    Lookup("delivery", "trucks", "truck", ("capacity",)),
                    Lookup("delivery", "trucks", "truck", ("capacity",)),
                )
            },
            "lookup 'delivery': derived column 'delivery_capacity' clashes with lookup 'delivery'",
        ),
        (
            {"joins": (AsOfJoin("reading", "readings", "depot", "temp", ("temp",)),)},
            "as-of join 'reading': time column 'temp' of side table 'readings' must be TIMESTAMP",
        ),
        (
            {
                "joins": (
                    AsOfJoin(
                        "reading", "readings", "depot", "read_at", ("temp",), lag="2h", max_age="1h"
                    ),
                )
            },
            "as-of join 'reading': max_age 1h < lag 2h",
        ),
        (
            {"joins": (Lookup("truck", "garages", "truck", ("capacity",)),)},
            "lookup 'truck': unknown side table 'garages'",
        ),
        (
            {"timestamp_column": None},
            "window features and joins need a timestamp column",
        ),
    ],
)
def test_bad_declarations_are_refused_naming_the_feature(change, message):
    with pytest.raises(DefinitionError, match=re.escape(message)):
        _with(**change)()


def test_a_derived_column_may_not_shadow_a_raw_column():
    renamed = WindowFeature("truck", "depot", "delay", ("count",), "1h")
    columns = (
        *DEFINITION.columns,
        dataclasses.replace(DEFINITION.columns[1], name="truck_count_1h"),
    )
    with pytest.raises(
        DefinitionError, match="derived column 'truck_count_1h' clashes with a raw column"
    ):
        dataclasses.replace(DEFINITION, columns=columns, windows=(renamed,))


def test_features_read_derived_columns_like_raw_ones():
    feature = DEFINITION.features[1]
    assert feature.inputs == ("depot_count_1h",)
    with pytest.raises(
        DefinitionError, match=r"feature 'recent' reads unknown column\(s\) \['nope'\]"
    ):
        dataclasses.replace(DEFINITION, features=(dataclasses.replace(feature, inputs=("nope",)),))


@pytest.mark.parametrize("name", ["flights", "taxi"])
def test_the_reviewed_schema_lists_the_derived_columns_for_serving_too(name):
    from pipeline.validation import load_schema

    dataset = get_dataset(name)
    schema = {f.name: f for f in load_schema(dataset).feature}
    assert list(schema) == [c.name for c in dataset.row_columns]
    for column in dataset.derived_column_names:
        assert not schema[column].not_in_environment, column  # the server fills them
