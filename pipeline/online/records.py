"""What the online store keeps of an event, for every declaration that reads its table.

An event is one row of an event table (the main table or a side table), as a JSON-like dict with
TIMESTAMP columns in Unix seconds (the form of split files and serving requests). Each window
feature, as-of join and lookup over that table makes one :class:`StoreRecord` of it: the
declaration's namespace, the entity (its key values), the event id, the event time and the
payload the read side needs (a window's value; a join's columns). Records with a NULL key or time
are not kept: they never count in the SQL either.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.definition import AsOfJoin, Column, ColumnType, DatasetDefinition, WindowFeature

LOOKUP_TIME = 0  # lookups are timeless: one record per key, the latest write wins


class InvalidEvent(ValueError):
    """An event that does not fit its table; the message names the table and the field."""


@dataclasses.dataclass(frozen=True)
class StoreRecord:
    namespace: str
    entity: str  # canonical JSON of the key values
    event_id: str
    time: int  # Unix seconds
    payload: Any  # JSON-serializable


@dataclasses.dataclass(frozen=True)
class Declaration:
    """One window feature or join as the online path sees it."""

    namespace: str
    table: str  # warehouse table (dataset.table) whose events it reads
    key_columns: tuple[str, ...]  # in the event table
    time_column: str | None  # None: a lookup
    id_columns: tuple[str, ...]
    payload_columns: tuple[str, ...]  # a window's value, or a join's columns
    retention_seconds: int | None  # events older than the newest minus this are evicted
    source: WindowFeature | AsOfJoin | Any


def entity_key(values: Iterable[Any]) -> str:
    """The store's key of an entity: canonical JSON of its key values."""
    return json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)


def declarations(definition: DatasetDefinition) -> tuple[Declaration, ...]:
    """Every window feature and join of ``definition``, with what the store must keep."""
    found = []
    for window in definition.windows:
        table = _table_name(definition, window.events)
        found.append(
            Declaration(
                namespace=f"window:{window.name}",
                table=table,
                key_columns=window.matching_event_keys,
                time_column=definition.event_time_column(window),
                id_columns=definition.event_id_columns(window),
                payload_columns=() if window.value is None else (window.value,),
                retention_seconds=window.lookback_seconds + window.lag_seconds,
                source=window,
            )
        )
    for join in definition.joins:
        as_of = isinstance(join, AsOfJoin)
        retention = None
        if as_of and join.max_age_seconds is not None:
            retention = join.max_age_seconds + join.lag_seconds
        found.append(
            Declaration(
                namespace=f"{'as_of' if as_of else 'lookup'}:{join.name}",
                table=_table_name(definition, join.table),
                key_columns=join.matching_table_keys,
                time_column=join.time if as_of else None,
                id_columns=join.event_id,
                payload_columns=join.columns,
                retention_seconds=retention,
                source=join,
            )
        )
    return tuple(found)


def _table_name(definition: DatasetDefinition, side: str | None) -> str:
    return definition.table if side is None else definition.side_table(side).table


def event_tables(definition: DatasetDefinition) -> dict[str, tuple[Column, ...]]:
    """The tables events come from (warehouse name -> columns), main table first."""
    names = {d.table for d in declarations(definition)}
    return {name: cols for name, cols in definition.tables.items() if name in names}


class RecordMaker:
    """Turns events of a definition's event tables into store records (checked, typed)."""

    def __init__(self, definition: DatasetDefinition) -> None:
        self.declarations = declarations(definition)
        self.columns = {
            table: {c.name: c for c in columns}
            for table, columns in event_tables(definition).items()
        }
        self.retention = {d.namespace: d.retention_seconds for d in self.declarations}

    def records(self, table: str, row: Mapping[str, Any]) -> list[StoreRecord]:
        """The records of one event; :class:`InvalidEvent` names what does not fit."""
        if table not in self.columns:
            raise InvalidEvent(f"events of table {table!r} are not read by any declaration")
        columns = self.columns[table]
        if not isinstance(row, Mapping):
            raise InvalidEvent(f"{table}: an event must be a JSON object of columns")
        typed = {name: typed_value(table, columns[name], row.get(name)) for name in columns}
        found = []
        for declaration in self.declarations:
            if declaration.table != table:
                continue
            record = _record(declaration, typed)
            if record is not None:
                found.append(record)
        return found


def _record(declaration: Declaration, row: Mapping[str, Any]) -> StoreRecord | None:
    keys = [row[c] for c in declaration.key_columns]
    if any(k is None for k in keys):
        return None
    if declaration.time_column is None:
        time = LOOKUP_TIME
    else:
        time = row[declaration.time_column]
        if time is None:
            return None
    event_id = "|".join("" if row[c] is None else str(row[c]) for c in declaration.id_columns)
    if declaration.namespace.startswith("window:"):
        # A window's value; without a value column every event counts as one.
        columns = declaration.payload_columns
        payload: Any = row[columns[0]] if columns else 1.0
    else:
        payload = {c: row[c] for c in declaration.payload_columns}
    return StoreRecord(declaration.namespace, entity_key(keys), event_id, int(time), payload)


def typed_value(table: str, column: Column, value: Any) -> Any:
    """``value`` as the column's type (None for missing, NaN included); else InvalidEvent."""
    where = f"{table}.{column.name}"
    if isinstance(value, list):
        if len(value) > 1:
            raise InvalidEvent(f"{where}: expected one value, got {len(value)}")
        value = value[0] if value else None
    if value is None:
        return None
    kind = column.type
    if kind is ColumnType.STRING:
        if not isinstance(value, str):
            raise InvalidEvent(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{where}: expected a number, got {value!r}")
    if kind is ColumnType.FLOAT64:
        return None if math.isnan(value) else float(value)
    if isinstance(value, float) and not value.is_integer():
        raise InvalidEvent(f"{where}: expected an integer ({kind}), got {value!r}")
    return int(value)
