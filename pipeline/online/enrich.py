"""The server fills a request's derived columns from the online store.

A client sends what it knows (for a flight: carrier, origin, dest, the schedule, ``time_hour``);
:class:`Enricher` adds every window feature and join value for the row's entity keys as of the
row's own time (the definition's timestamp column), with exactly the batch SQL's point-in-time
rule, in one batched read per request. A row without a key or a time gets those columns missing,
as the SQL gives them (the transform imputes missing values). :class:`EnrichingEncoder` wraps the
serving encoder so JSON rows are enriched just before they are encoded; serialized ``tf.Example``
instances (``b64``) are passed on as they are: a client that builds them sends every feature.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.definition import AsOfJoin, ColumnType, DatasetDefinition, Lookup, WindowFeature
from pipeline.online.aggregates import read_range, window_values
from pipeline.online.records import LOOKUP_TIME, Declaration, declarations, entity_key
from pipeline.online.stores import Event, OnlineStore, RangeQuery


def read_windows(store: OnlineStore, queries: Sequence[RangeQuery]) -> list[list[Event]]:
    """``store.events(queries)``, reading each (namespace, entity) once over all its ranges.

    Many rows of one entity (a replay of a split, a batch request) ask for overlapping windows:
    read one by one, the same events came back and had their payloads decoded once per row
    (at 1M synthetic rows of the default dataset, 3,834 replayed rows took 11 s). Each query's
    events are then the slice of its entity's events inside its range, in time order still.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for index, query in enumerate(queries):
        groups.setdefault((query.namespace, query.entity), []).append(index)
    merged = []
    for (namespace, entity), indices in groups.items():
        starts = [queries[i].start for i in indices]
        ends = [queries[i].end for i in indices]
        start = None if None in starts else min(starts)
        end = None if None in ends else max(ends)
        merged.append(RangeQuery(namespace, entity, start, end))
    results: list[list[Event]] = [[] for _ in queries]
    for indices, events in zip(groups.values(), store.events(merged), strict=True):
        times = [event[0] for event in events]
        for index in indices:
            query = queries[index]
            low = 0 if query.start is None else bisect.bisect_left(times, query.start)
            high = len(times) if query.end is None else bisect.bisect_right(times, query.end)
            results[index] = events[low:high]
    return results


class Enricher:
    """Fills the derived columns of raw rows from a store (see the module docstring)."""

    def __init__(self, definition: DatasetDefinition, store: OnlineStore) -> None:
        self.definition = definition
        self.store = store
        self.declarations = declarations(definition)
        self.derived = {c.name: c.type for c in definition.derived_columns}
        self.key_types = {c.name: c.type for c in definition.columns}
        self.time_column = definition.timestamp_column

    def enrich(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Copies of ``rows`` with every derived column filled (None where missing)."""
        times = [_integer(row.get(self.time_column)) for row in rows]
        filled = [{**row, **dict.fromkeys(self.derived)} for row in rows]
        window_queries: list[tuple[int, Declaration, RangeQuery]] = []
        latest_queries: list[tuple[int, Declaration, RangeQuery]] = []
        for index, (row, t) in enumerate(zip(rows, times, strict=True)):
            for declaration in self.declarations:
                query = self._query(declaration, row, t)
                if query is None:
                    continue
                target = (
                    window_queries
                    if declaration.namespace.startswith("window:")
                    else (latest_queries)
                )
                target.append((index, declaration, query))
        if window_queries:
            results = read_windows(self.store, [q for _, _, q in window_queries])
            for (index, declaration, _), events in zip(window_queries, results, strict=True):
                filled[index].update(window_values(declaration.source, times[index], events))
        if latest_queries:
            results = self.store.latest([q for _, _, q in latest_queries])
            for (index, declaration, _), found in zip(latest_queries, results, strict=True):
                if found is not None:
                    filled[index].update(self._joined(declaration.source, found[2]))
        return filled

    def _query(self, declaration: Declaration, row: Mapping[str, Any], t: int | None):
        source = declaration.source
        keys = [self._key(name, row.get(name)) for name in source.keys]
        if any(k is None for k in keys):
            return None
        entity = entity_key(keys)
        if isinstance(source, Lookup):
            return RangeQuery(declaration.namespace, entity, LOOKUP_TIME, LOOKUP_TIME)
        if t is None:
            return None
        if isinstance(source, WindowFeature):
            start, end = read_range(source, t)
            return RangeQuery(declaration.namespace, entity, start, end)
        max_age = source.max_age_seconds
        start = None if max_age is None else t - max_age
        return RangeQuery(declaration.namespace, entity, start, t - source.lag_seconds)

    def _key(self, name: str, value: Any) -> Any:
        value = _unwrap(value)
        if self.key_types[name] is ColumnType.STRING:
            return value if isinstance(value, str) else None
        return _integer(value)

    def _joined(self, join: AsOfJoin | Lookup, payload: Mapping[str, Any]) -> dict[str, Any]:
        values = {}
        for column in join.columns:
            name = join.output_name(column)
            value = payload.get(column)
            if value is not None and self.derived[name] is ColumnType.FLOAT64:
                value = float(value)
            values[name] = value
        return values

    def wrap(self, encoder: Any) -> EnrichingEncoder:
        """``encoder`` (the server's JSON encoder) with this enricher in front of it."""
        return EnrichingEncoder(encoder, self)

    def check_not_sent(self, row: Mapping[str, Any], where: str) -> None:
        """A client must not send what the server fills (400 naming the field otherwise)."""
        from pipeline.serving.errors import BadRequest

        for name in row:
            if name in self.derived:
                raise BadRequest(
                    f"{where}: {name!r} is filled by the server from the online store; "
                    "do not send it"
                )


def _unwrap(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if len(value) == 1 else None
    return value


def _integer(value: Any) -> int | None:
    """An integer (Unix seconds, an INT64 key) from JSON; None when it is not one."""
    value = _unwrap(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


class EnrichingEncoder:
    """The serving encoder with the derived columns filled in first (same interface)."""

    def __init__(self, encoder: Any, enricher: Enricher) -> None:
        self.encoder = encoder
        self.enricher = enricher

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)

    def encode_rows(self, rows, where: str, positions=None) -> list[bytes]:
        positions = range(len(rows)) if positions is None else positions
        for position, row in zip(positions, rows, strict=True):
            if isinstance(row, Mapping):
                self.enricher.check_not_sent(row, f"{where}[{position}]")
        if not all(isinstance(row, Mapping) for row in rows):
            return self.encoder.encode_rows(rows, where, positions)
        return self.encoder.encode_rows(self.enricher.enrich(rows), where, positions)

    def encode_columns(self, columns, where: str) -> list[bytes]:
        lists = isinstance(columns, Mapping) and all(isinstance(v, list) for v in columns.values())
        sizes = {len(v) for v in columns.values()} if lists else set()
        if not lists or len(sizes) != 1:
            return self.encoder.encode_columns(columns, where)  # its own error names the field
        self.enricher.check_not_sent(columns, where)
        size = sizes.pop()
        rows = [{name: values[i] for name, values in columns.items()} for i in range(size)]
        enriched = self.enricher.enrich(rows)
        names = list(enriched[0]) if enriched else list(columns)
        return self.encoder.encode_columns(
            {name: [row.get(name) for row in enriched] for name in names}, where
        )
