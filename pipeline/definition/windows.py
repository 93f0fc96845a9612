"""Window aggregations and point-in-time joins: columns derived from events before a row's time.

Declared once in the dataset definition, computed twice: in batch by the warehouse SQL (for the
split files, i.e. training) and online from an event stream kept in an online store (for
serving); the parity proof checks both give the same values. Downstream of the warehouse the
derived columns are raw columns like any other: they are in the split files (after the raw
columns, before the label), in the TFDV schema, and features read them.

A row's time ``t`` is the definition's ``timestamp_column``; all times are whole Unix seconds
(the resolution of the split files).

**Window features** (:class:`WindowFeature`). For a row at time ``t`` with entity key ``k``, an
event ``e`` of the event table counts iff ``e.key == k``, ``e.time >= t - window`` and
``e.time + lag < t``: strictly before, so with ``lag = 0`` an event at the row's own time does not
count, and with ``lag > 0`` an event is seen only once it is ``lag`` old (a flight's departure
delay is known once it has left). Aggregates ignore NULL (and NaN) values; ``count`` counts the
non-null values; ``stddev`` is the population standard deviation; ``last`` is the value of the
latest counting event, and of several events at that same latest time the largest value. With
no counting event ``count`` is 0 and every other aggregate is NULL (missing: the transform then
imputes it like any missing value). A row whose key or time is NULL gets NULL everywhere.
Without a value column (``value=None``) the only aggregation is ``count``: the number of events
(trips that started from the pickup area in the hour before).

**As-of joins** (:class:`AsOfJoin`): the side table's row for the key with the latest time
``obs.time`` such that ``obs.time + lag <= t`` (inclusive: the weather observed at the scheduled
hour is known then) and, with ``max_age``, ``obs.time >= t - max_age``; its columns, NULL when
no observation qualifies. **Lookups** (:class:`Lookup`): the side table's row for the key,
whatever the time (aircraft by tail number).

Every event has an id (``event_id`` columns; for as-of tables the keys and the time, for lookups
the keys): ids are unique in the event table (the warehouse checks it before splitting), and
the online store writes idempotently by id, so a replayed event never counts twice.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from pipeline.definition.columns import Column, ColumnType

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
NUMERIC = (ColumnType.INT64, ColumnType.FLOAT64)


class Aggregation(enum.StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    STDDEV = "stddev"  # population standard deviation
    LAST = "last"


def duration_seconds(value: str | int) -> int:
    """``"3h"`` / ``"90m"`` / ``"7d"`` / ``"30s"`` / an int of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int):
        return value
    match = _DURATION.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"invalid duration {value!r} (e.g. '90m', '3h', '7d' or seconds)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def duration_label(seconds: int) -> str:
    """The shortest exact label of a duration: 86400 -> ``1d``, 10800 -> ``3h``, 90 -> ``90s``."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _tuple(value) -> tuple:
    return (value,) if isinstance(value, str | int | Aggregation) else tuple(value)


@dataclasses.dataclass(frozen=True)
class WindowFeature:
    """Aggregates of ``value`` over each window of events before a row (see the module doc);
    ``value=None`` counts the events themselves.

    ``events`` names a side table (default: the main table); ``event_keys`` are its columns
    matching the row's ``keys`` (default: the same names); ``event_time`` its TIMESTAMP column
    (default for the main table: the definition's timestamp column); ``event_id`` the columns
    that identify an event (default for the main table: the split key columns). Each (window,
    aggregation) is a derived column ``<name>_<aggregation>_<window>``, e.g.
    ``origin_dep_delay_mean_3h``.
    """

    name: str
    keys: tuple[str, ...]
    value: str | None
    aggregations: tuple[str, ...]
    windows: tuple[str | int, ...]
    lag: str | int = 0
    events: str | None = None
    event_keys: tuple[str, ...] | None = None
    event_time: str | None = None
    event_id: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("keys", "aggregations", "windows"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))
        for field in ("event_keys", "event_id"):
            if getattr(self, field) is not None:
                object.__setattr__(self, field, _tuple(getattr(self, field)))

    @property
    def window_seconds(self) -> tuple[int, ...]:
        return tuple(duration_seconds(w) for w in self.windows)

    @property
    def lag_seconds(self) -> int:
        return duration_seconds(self.lag)

    @property
    def aggregation_kinds(self) -> tuple[Aggregation, ...]:
        return tuple(Aggregation(a) for a in self.aggregations)

    @property
    def matching_event_keys(self) -> tuple[str, ...]:
        return self.event_keys or self.keys

    @property
    def lookback_seconds(self) -> int:
        """How far back a row's events reach: the largest window."""
        return max(self.window_seconds)

    def output_name(self, aggregation: Aggregation, window: int) -> str:
        return f"{self.name}_{aggregation.value}_{duration_label(window)}"

    @property
    def outputs(self) -> tuple[tuple[str, Aggregation, int], ...]:
        """``(column name, aggregation, window seconds)`` of every derived column."""
        return tuple(
            (self.output_name(a, w), a, w)
            for w in self.window_seconds
            for a in self.aggregation_kinds
        )

    def derived_columns(self) -> tuple[Column, ...]:
        lag = duration_label(self.lag_seconds) if self.lag_seconds else "0"
        return tuple(
            Column(
                name,
                ColumnType.INT64 if aggregation is Aggregation.COUNT else ColumnType.FLOAT64,
                f"{aggregation.value} of {self.value or 'events'} over "
                f"[t-{duration_label(window)}, t-{lag})"
                f" by {', '.join(self.keys)}",
            )
            for name, aggregation, window in self.outputs
        )

    def parameter_problems(self) -> list[str]:
        """What is wrong with the windows, the lag and the aggregations on their own."""
        found = []
        if not _NAME.fullmatch(self.name):
            found.append("name must be lower-case letters, digits and _ (a column-name prefix)")
        if not self.keys:
            found.append("needs at least one key column")
        try:
            windows, lag = self.window_seconds, self.lag_seconds
        except ValueError as error:
            return [*found, str(error)]
        if not windows:
            found.append("needs at least one window")
        if len(set(windows)) != len(windows):
            found.append(f"duplicate windows {self.windows}")
        if lag < 0:
            found.append(f"lag must not be negative, got {self.lag!r}")
        for window in windows:
            if window <= 0:
                found.append(f"window {window} s must be positive")
            elif lag >= window:
                found.append(
                    f"lag {duration_label(lag)} >= window {duration_label(window)}: the window "
                    "would never hold an event"
                )
        try:
            kinds = self.aggregation_kinds
        except ValueError:
            known = ", ".join(a.value for a in Aggregation)
            return [*found, f"unknown aggregation in {self.aggregations} (known: {known})"]
        if not kinds:
            found.append("needs at least one aggregation")
        if len(set(kinds)) != len(kinds):
            found.append(f"duplicate aggregations {self.aggregations}")
        if self.value is None and set(kinds) - {Aggregation.COUNT}:
            found.append("without a value column the only aggregation is count (of events)")
        return found


@dataclasses.dataclass(frozen=True)
class AsOfJoin:
    """The latest row of side table ``table`` for the row's ``keys`` at the row's time.

    ``table_keys`` are the side table's columns matching ``keys`` (default: the same names),
    ``time`` its TIMESTAMP column. An observation qualifies iff ``obs.time + lag <= t`` and, with
    ``max_age``, ``obs.time >= t - max_age``. Each of ``columns`` becomes ``<name>_<column>``.
    """

    name: str
    table: str
    keys: tuple[str, ...]
    time: str
    columns: tuple[str, ...]
    table_keys: tuple[str, ...] | None = None
    lag: str | int = 0
    max_age: str | int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("keys", "columns"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))
        if self.table_keys is not None:
            object.__setattr__(self, "table_keys", _tuple(self.table_keys))

    @property
    def matching_table_keys(self) -> tuple[str, ...]:
        return self.table_keys or self.keys

    @property
    def lag_seconds(self) -> int:
        return duration_seconds(self.lag)

    @property
    def max_age_seconds(self) -> int | None:
        return None if self.max_age is None else duration_seconds(self.max_age)

    @property
    def event_id(self) -> tuple[str, ...]:
        return (*self.matching_table_keys, self.time)

    @property
    def lookback_seconds(self) -> int | None:
        """How far back an observation may lie; None: unbounded."""
        return self.max_age_seconds

    def output_name(self, column: str) -> str:
        return f"{self.name}_{column}"

    def parameter_problems(self) -> list[str]:
        found = _join_name_problems(self)
        try:
            lag, max_age = self.lag_seconds, self.max_age_seconds
        except ValueError as error:
            return [*found, str(error)]
        if lag < 0:
            found.append(f"lag must not be negative, got {self.lag!r}")
        if max_age is not None and max_age < lag:
            found.append(
                f"max_age {duration_label(max_age)} < lag {duration_label(lag)}: no observation "
                "could ever qualify"
            )
        return found


@dataclasses.dataclass(frozen=True)
class Lookup:
    """The row of side table ``table`` whose ``table_keys`` equal the row's ``keys``."""

    name: str
    table: str
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    table_keys: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("keys", "columns"):
            object.__setattr__(self, field, _tuple(getattr(self, field)))
        if self.table_keys is not None:
            object.__setattr__(self, "table_keys", _tuple(self.table_keys))

    @property
    def matching_table_keys(self) -> tuple[str, ...]:
        return self.table_keys or self.keys

    @property
    def event_id(self) -> tuple[str, ...]:
        return self.matching_table_keys

    def output_name(self, column: str) -> str:
        return f"{self.name}_{column}"

    def parameter_problems(self) -> list[str]:
        return _join_name_problems(self)


Join = AsOfJoin | Lookup


def _join_name_problems(join: Join) -> list[str]:
    found = []
    if not _NAME.fullmatch(join.name):
        found.append("name must be lower-case letters, digits and _ (a column-name prefix)")
    if not join.keys:
        found.append("needs at least one key column")
    if not join.columns:
        found.append("needs at least one column to bring")
    if len(set(join.columns)) != len(join.columns):
        found.append(f"duplicate columns {join.columns}")
    return found


def join_derived_columns(join: Join, side_columns: dict[str, Column]) -> tuple[Column, ...]:
    """The derived columns of a join, typed like the side table's columns they copy."""
    kind = "as of the row's time" if isinstance(join, AsOfJoin) else "by key"
    return tuple(
        Column(
            join.output_name(name),
            side_columns[name].type,
            f"{join.table}.{name} {kind} ({', '.join(join.keys)})",
        )
        for name in join.columns
        if name in side_columns
    )
