"""A small dataset with every kind of derived column, and a warehouse of edge cases for it.

Deliveries (the main table) by depot: each row's windows count earlier deliveries of its depot
(two windows, lag 0, every aggregation) and, with a 30-minute lag, their delays; an as-of join
brings the depot's latest sensor reading (lag 10 minutes, at most 2 hours old), a window over the
readings their mean over an hour, and a lookup the truck's capacity. Times fall on a 5-minute
grid, so many events share a time, sit exactly on window edges or at a row's own time; values,
keys and times are sometimes NULL (values sometimes NaN).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.definition import (
    AsOfJoin,
    BinaryLabel,
    Column,
    ColumnType,
    DatasetDefinition,
    Feature,
    Lookup,
    ModelPart,
    SideTable,
    SplitSettings,
    WindowFeature,
)
from transforms import kinds

INT, FLOAT, STRING, TIMESTAMP = (
    ColumnType.INT64, ColumnType.FLOAT64, ColumnType.STRING, ColumnType.TIMESTAMP,
)  # fmt: skip
TABLE = "depot.deliveries"
START = 1_700_000_000 - 1_700_000_000 % 3600  # on the hour
STEP = 300

COLUMNS = (
    Column("delivery_id", INT, nullable=False),
    Column("depot", STRING),
    Column("truck", STRING),
    Column("delivered_at", TIMESTAMP),
    Column("delay", FLOAT),
    Column("late", INT, nullable=False),
)
READINGS = SideTable(
    "readings",
    "depot.readings",
    (Column("depot", STRING), Column("read_at", TIMESTAMP), Column("temp", FLOAT)),
)
TRUCKS = SideTable("trucks", "depot.trucks", (Column("truck", STRING), Column("capacity", INT)))
ALL_AGGREGATIONS = ("count", "sum", "mean", "min", "max", "stddev", "last")

WINDOWS = (
    WindowFeature("depot", "depot", "delay", ALL_AGGREGATIONS, ("1h", "3h")),
    WindowFeature("depot_known", "depot", "delay", ("count", "mean", "last"), "2h", lag="30m"),
    WindowFeature(
        "depot_temp",
        "depot",
        "temp",
        ("count", "mean"),
        "1h",
        events="readings",
        event_time="read_at",
        event_id=("depot", "read_at"),
    ),
)
JOINS = (
    AsOfJoin("reading", "readings", "depot", "read_at", ("temp",), lag="10m", max_age="2h"),
    Lookup("truck", "trucks", "truck", ("capacity",)),
)

DEFINITION = DatasetDefinition(
    name="deliveries",
    table=TABLE,
    columns=COLUMNS,
    label=BinaryLabel("was_late", "late", ">", 0),
    features=(
        Feature("depot", "depot", kinds.Vocabulary(num_oov_buckets=1)),
        Feature("recent", "depot_count_1h", kinds.ZScore(impute="mean"), ModelPart.DEEP),
    ),
    split=SplitSettings(key_columns=("delivery_id",)),
    unknown_at_serving=("late", "delay"),
    timestamp_column="delivered_at",
    side_tables=(READINGS, TRUCKS),
    windows=WINDOWS,
    joins=JOINS,
)


def make_tables(seed: int = 5, rows: int = 600) -> dict[str, list[dict]]:
    """Rows of the three tables (times in Unix seconds or None)."""
    rng = np.random.default_rng(seed)
    depots = ["north", "south", "east"]
    trucks = [f"T{i}" for i in range(8)]
    deliveries = []
    for index in range(rows):
        delay = float(rng.integers(-10, 60))
        if rng.random() < 0.1:
            delay = None
        elif rng.random() < 0.05:
            delay = float("nan")
        deliveries.append(
            {
                "delivery_id": index,
                "depot": None if rng.random() < 0.03 else str(rng.choice(depots)),
                "truck": None if rng.random() < 0.05 else str(rng.choice([*trucks, "T99"])),
                "delivered_at": None
                if rng.random() < 0.02
                else START + STEP * int(rng.integers(0, 200)),
                "delay": delay,
                "late": int(rng.random() < 0.3),
            }
        )
    readings = [
        {
            "depot": depot,
            "read_at": START + 900 * k + int(rng.integers(0, 3)) * STEP,
            "temp": None if rng.random() < 0.1 else round(float(rng.normal(15, 5)), 2),
        }
        for depot in depots
        for k in range(0, 68, 1 if depot != "east" else 3)
    ]
    unique = {(r["depot"], r["read_at"]): r for r in readings}
    trucks_table = [{"truck": t, "capacity": int(rng.integers(5, 40))} for t in trucks]
    trucks_table.append({"truck": "T7b", "capacity": None})
    return {
        TABLE: deliveries,
        READINGS.table: list(unique.values()),
        TRUCKS.table: trucks_table,
    }


def build_warehouse(path: Path, tables: dict[str, list[dict]]) -> Path:
    """A DuckDB warehouse holding ``tables`` (the definition's layout; TIMESTAMPs from seconds)."""
    import duckdb
    import pandas as pd

    from pipeline.warehouse.schema import duckdb_create_table_sql, duckdb_insert_select_sql

    connection = duckdb.connect(str(path))
    try:
        for table, columns in DEFINITION.tables.items():
            for statement in duckdb_create_table_sql(table, columns):
                connection.execute(statement)
            frame = pd.DataFrame(
                {c.name: pd.Series([r[c.name] for r in tables[table]], dtype=_dtype(c))
                 for c in columns}
            )  # fmt: skip
            connection.register("frame", frame)
            connection.execute(duckdb_insert_select_sql(table, columns, "frame"))
            connection.unregister("frame")
            _restore_nans(connection, table, columns, tables[table])
    finally:
        connection.close()
    return path


def _restore_nans(connection, table: str, columns, rows: list[dict]) -> None:
    """A pandas scan reads NaN as NULL: put the NaNs back (rowid follows insertion order)."""
    from pipeline.warehouse.schema import duckdb_table_ref

    ref = duckdb_table_ref(table).duckdb_sql()
    for column in columns:
        if column.type is not FLOAT:
            continue
        ids = [i for i, r in enumerate(rows) if isinstance(r[column.name], float)
               and r[column.name] != r[column.name]]  # fmt: skip
        if ids:
            connection.execute(
                f"UPDATE {ref} SET {column.name} = 'NaN'::DOUBLE WHERE rowid IN "
                f"({', '.join(map(str, ids))})"
            )


def _dtype(column: Column) -> str:
    # object keeps None (NULL) apart from NaN for FLOAT64 columns
    return "object" if column.type in (STRING, FLOAT) else "Int64"
