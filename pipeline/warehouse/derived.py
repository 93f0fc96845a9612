"""The derived columns in SQL: window features and as-of joins as CTEs, lookups as joins.

``derived_ctes`` renders one CTE per window feature (``sql/window_feature.sql``) and per as-of
join (``sql/as_of_join.sql``); ``derived_rows`` joins them, and the lookups, to the raw table for
the ``source`` CTE. Every identifier comes from the (checked) dataset definition and passes
:mod:`pipeline.warehouse.identifiers`; windows and lags are frame offsets, which BigQuery takes
as constants only, so they are rendered as validated Python integers, never as text from
outside. The event-id counts let the warehouse refuse an event table whose ids repeat: the
online store writes events idempotently by id, so a repeated id would count once online and
twice here.
"""

from __future__ import annotations

import dataclasses

from pipeline.definition import (
    Aggregation,
    AsOfJoin,
    Column,
    ColumnType,
    DatasetDefinition,
    Lookup,
    WindowFeature,
)
from pipeline.warehouse.identifiers import TableRef, validate_column_name

_AGGREGATES = {
    Aggregation.COUNT: "COUNT(_v)",
    Aggregation.SUM: "SUM(_v)",
    Aggregation.MEAN: "AVG(_v)",
    Aggregation.MIN: "MIN(_v)",
    Aggregation.MAX: "MAX(_v)",
    Aggregation.STDDEV: "STDDEV_POP(_v)",
    # _v_last: the largest value of the events at the same (key, time), so that of several
    # events at the latest time every one carries the same value, whichever the engine picks.
    Aggregation.LAST: "LAST_VALUE(_v_last IGNORE NULLS)",
}
ROW_ALIAS = "_row"


@dataclasses.dataclass(frozen=True)
class EventIdCheck:
    """One declaration's events: each id must stand for one version of the event.

    Copies of an event (the same id with the same keys, time and values: a row loaded twice)
    count once, here as in the online store; an id with two different versions would count as
    whichever the online store received last, so it is a verdict.
    """

    owner: str  # the window feature or join, for the verdict
    slug: str  # names its count columns
    table: TableRef
    id_columns: tuple[Column, ...]
    content_columns: tuple[Column, ...]  # keys, time and the values the store keeps
    present: tuple[str, ...]  # columns an event needs (keys, time): the others are no events

    @property
    def ids_name(self) -> str:
        return f"distinct_event_ids_{self.slug}"

    @property
    def versions_name(self) -> str:
        return f"distinct_events_{self.slug}"


@dataclasses.dataclass(frozen=True)
class SideTableRef:
    """A side table as the warehouse reads it, with the columns the definition declares."""

    ref: TableRef
    columns: tuple[Column, ...]

    def dotted(self) -> str:
        return self.ref.dotted()


def _int(value: int, what: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"invalid {what}: {value!r} (a non-negative integer)")
    return str(int(value))


def _columns_of(columns: tuple[Column, ...]) -> dict[str, Column]:
    return {c.name: c for c in columns}


@dataclasses.dataclass(frozen=True)
class Tables:
    """Where the main table and the side tables are (the run may point the main one elsewhere)."""

    main: TableRef
    project: str | None

    def ref(self, definition: DatasetDefinition, table_name: str | None) -> TableRef:
        if table_name is None:
            return self.main
        return TableRef.parse(definition.side_table(table_name).table, project=self.project)


def _not_null(names: list[str]) -> str:
    return " AND ".join(f"{validate_column_name(n)} IS NOT NULL" for n in names)


def _aliased(names: tuple[str, ...]) -> str:
    return ", ".join(f"{validate_column_name(n)} AS _k{i}" for i, n in enumerate(names))


def _key_aliases(count: int) -> str:
    return ", ".join(f"_k{i}" for i in range(count))


def _event_value(column: Column) -> str:
    """The event's value as FLOAT64; NaN means missing, so it becomes NULL."""
    name = validate_column_name(column.name)
    if column.type is ColumnType.FLOAT64:
        return f"IF(IS_NAN({name}), NULL, {name})"
    return f"CAST({name} AS FLOAT64)"


def _joined_value(alias: str, column: Column) -> str:
    """A side table's column as a derived column: NaN means missing, so it becomes NULL."""
    name = f"{alias}.{validate_column_name(column.name)}"
    if column.type is ColumnType.FLOAT64:
        return f"IF(IS_NAN({name}), NULL, {name})"
    return name


def window_cte(
    definition: DatasetDefinition, window: WindowFeature, index: int, tables: Tables
) -> str:
    """The CTE of one window feature: per (key, time) of the main table, every aggregate."""
    from pipeline.warehouse.query import render

    columns = _columns_of(definition.event_table_columns(window.events))
    keys = window.keys
    frames, aggregates = [], []
    lag = window.lag_seconds
    for position, seconds in enumerate(window.window_seconds):
        frames.append(
            f"_w{position} AS (PARTITION BY {_key_aliases(len(keys))} ORDER BY _t RANGE BETWEEN "
            f"{_int(seconds, 'window')} PRECEDING AND {_int(lag + 1, 'lag')} PRECEDING)"
        )
        for aggregation in window.aggregation_kinds:
            name = validate_column_name(window.output_name(aggregation, seconds))
            aggregates.append(f"{_AGGREGATES[aggregation]} OVER _w{position} AS {name}")
    tie_value = ""
    if Aggregation.LAST in window.aggregation_kinds:
        tie_value = (
            f",\n        MAX(_v) OVER (PARTITION BY {_key_aliases(len(keys))}, _t) AS _v_last"
        )
    event_time = definition.event_time_column(window)
    event_keys = list(window.matching_event_keys)
    id_columns = [(c, columns[c].type) for c in definition.event_id_columns(window)]
    return render(
        "window_feature",
        cte_name=window_cte_name(index),
        feature=window.name,
        key_aliases=_key_aliases(len(keys)),
        aggregates=",\n      ".join(aggregates),
        tie_value=tie_value,
        point_keys=_aliased(keys),
        row_time=validate_column_name(definition.timestamp_column),
        main_table=tables.main.bigquery_sql(),
        point_filter=_not_null([*keys, definition.timestamp_column]),
        event_keys=_aliased(window.matching_event_keys),
        event_time=validate_column_name(event_time),
        event_value=(
            "CAST(1 AS FLOAT64)" if window.value is None else _event_value(columns[window.value])
        ),
        event_table=tables.ref(definition, window.events).bigquery_sql(),
        event_filter=_not_null([*event_keys, event_time]),
        event_id=_key_text(id_columns),
        frames=",\n      ".join(frames),
    ).rstrip("\n")


def as_of_cte(definition: DatasetDefinition, join: AsOfJoin, index: int, tables: Tables) -> str:
    """The CTE of one as-of join: per (key, time) of the main table, the matching row's columns."""
    from pipeline.warehouse.query import render

    lag, max_age = join.lag_seconds, join.max_age_seconds
    frame_start = (
        "UNBOUNDED PRECEDING"
        if max_age is None
        else f"{_int(max_age - lag, 'max_age - lag')} PRECEDING"
    )
    table_keys = join.matching_table_keys
    match = [f"_obs.{validate_column_name(k)} = _p._k{i}" for i, k in enumerate(table_keys)] + [
        f"UNIX_SECONDS(_obs.{validate_column_name(join.time)}) = _p._match_t"
    ]
    side = _columns_of(definition.event_table_columns(join.table))
    distinct_side = _distinct_rows(
        tables.ref(definition, join.table), [*table_keys, join.time, *join.columns]
    )
    joined = [
        f"{_joined_value('_obs', side[c])} AS {validate_column_name(join.output_name(c))}"
        for c in join.columns
    ]
    return render(
        "as_of_join",
        cte_name=as_of_cte_name(index),
        feature=join.name,
        joined_columns=",\n    ".join(joined),
        key_aliases=_key_aliases(len(join.keys)),
        frame_start=frame_start,
        point_keys=_aliased(join.keys),
        row_time=validate_column_name(definition.timestamp_column),
        main_table=tables.main.bigquery_sql(),
        point_filter=_not_null([*join.keys, definition.timestamp_column]),
        observation_keys=_aliased(table_keys),
        observation_time=validate_column_name(join.time),
        lag=_int(lag, "lag"),
        side_table=tables.ref(definition, join.table).bigquery_sql(),
        distinct_side_table=distinct_side,
        observation_filter=_not_null([*table_keys, join.time]),
        match_condition="\n    AND ".join(match),
    ).rstrip("\n")


def window_cte_name(index: int) -> str:
    return f"_window_{index}"


def as_of_cte_name(index: int) -> str:
    return f"_as_of_{index}"


def derived_ctes(definition: DatasetDefinition, tables: Tables) -> list[str]:
    """Every window-feature and as-of CTE, in declaration order."""
    ctes = [window_cte(definition, w, i, tables) for i, w in enumerate(definition.windows)]
    as_of = [j for j in definition.joins if isinstance(j, AsOfJoin)]
    return ctes + [as_of_cte(definition, j, i, tables) for i, j in enumerate(as_of)]


def derived_rows(definition: DatasetDefinition, tables: Tables) -> str:
    """The raw table joined with every derived column: a subquery for ``source``'s FROM."""
    row_time = f"UNIX_SECONDS({ROW_ALIAS}.{validate_column_name(definition.timestamp_column)})"
    selected = [f"{ROW_ALIAS}.{validate_column_name(n)}" for n in definition.column_names]
    joins = []
    for index, window in enumerate(definition.windows):
        alias = window_cte_name(index)
        selected += [f"{alias}.{name}" for name, _, _ in window.outputs]
        joins.append(_point_join(alias, window.keys, row_time))
    as_of_index = 0
    for position, join in enumerate(definition.joins):
        if isinstance(join, AsOfJoin):
            alias = as_of_cte_name(as_of_index)
            as_of_index += 1
            joins.append(_point_join(alias, join.keys, row_time))
        else:
            alias = f"_lookup_{position}"
            joins.append(_lookup_join(definition, join, alias, tables))
        for column in join.columns:
            output = validate_column_name(join.output_name(column))
            if isinstance(join, AsOfJoin):
                selected.append(f"{alias}.{output}")
            else:
                side = _columns_of(definition.event_table_columns(join.table))
                selected.append(f"{_joined_value(alias, side[column])} AS {output}")
    table = tables.main.bigquery_sql()
    return (
        "(\n    SELECT\n      "
        + ",\n      ".join(selected)
        + f"\n    FROM {table} AS {ROW_ALIAS}\n    "
        + "\n    ".join(joins)
        + "\n  )"
    )


def _point_join(alias: str, keys: tuple[str, ...], row_time: str) -> str:
    conditions = [
        f"{alias}._k{i} = {ROW_ALIAS}.{validate_column_name(k)}" for i, k in enumerate(keys)
    ]
    conditions.append(f"{alias}._t = {row_time}")
    return f"LEFT JOIN {alias} ON " + " AND ".join(conditions)


def _distinct_rows(table: TableRef, columns: list[str]) -> str:
    """The table's distinct rows over ``columns``: copies of a row join once (the checked ids
    make the rest unique)."""
    selected = ", ".join(validate_column_name(c) for c in dict.fromkeys(columns))
    return f"(SELECT DISTINCT {selected} FROM {table.bigquery_sql()})"


def _key_text(columns: list[tuple[str, ColumnType]]) -> str:
    from pipeline.warehouse.query import key_text

    return key_text([(validate_column_name(name), kind) for name, kind in columns])


def _lookup_join(definition: DatasetDefinition, join: Lookup, alias: str, tables: Tables) -> str:
    table = _distinct_rows(
        tables.ref(definition, join.table), [*join.matching_table_keys, *join.columns]
    )
    conditions = [
        f"{alias}.{validate_column_name(t)} = {ROW_ALIAS}.{validate_column_name(k)}"
        for k, t in zip(join.keys, join.matching_table_keys, strict=True)
    ]
    return f"LEFT JOIN {table} AS {alias} ON " + " AND ".join(conditions)


def event_id_checks(definition: DatasetDefinition, tables: Tables) -> list[EventIdCheck]:
    """Every declaration's events: their table, id, what the store keeps, what they need."""
    checks = []
    for window in definition.windows:
        columns = _columns_of(definition.event_table_columns(window.events))
        time = definition.event_time_column(window)
        present = (*window.matching_event_keys, time)
        content = present + ((window.value,) if window.value else ())
        checks.append(
            EventIdCheck(
                f"window feature {window.name!r}",
                f"window_{window.name}",
                tables.ref(definition, window.events),
                tuple(columns[c] for c in definition.event_id_columns(window)),
                tuple(columns[c] for c in content),
                present,
            )
        )
    for join in definition.joins:
        columns = _columns_of(definition.event_table_columns(join.table))
        as_of = isinstance(join, AsOfJoin)
        present = (*join.matching_table_keys, join.time) if as_of else join.matching_table_keys
        checks.append(
            EventIdCheck(
                f"{'as-of join' if as_of else 'lookup'} {join.name!r}",
                f"join_{join.name}",
                tables.ref(definition, join.table),
                tuple(columns[c] for c in join.event_id),
                tuple(columns[c] for c in dict.fromkeys((*present, *join.columns))),
                present,
            )
        )
    return checks


def event_id_count_columns(definition: DatasetDefinition, tables: Tables) -> str:
    """Select-list items of the filter-count query: per declaration, its distinct event ids and
    its distinct versions of events (equal unless an id has two versions)."""
    items = []
    for check in event_id_checks(definition, tables):
        table = check.table.bigquery_sql()
        ids = _key_text([(c.name, c.type) for c in check.id_columns])
        content = _key_text([(c.name, c.type) for c in check.content_columns])
        where = _not_null(list(check.present))
        items.append(
            f"(SELECT COUNT(DISTINCT {ids}) FROM {table} WHERE {where}) AS {check.ids_name}"
        )
        items.append(
            f"(SELECT COUNT(DISTINCT CONCAT({ids}, '#', {content})) FROM {table} WHERE {where}) "
            f"AS {check.versions_name}"
        )
    return "".join(f",\n  {item}" for item in items)
