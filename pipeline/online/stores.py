"""The online store: events by (namespace, entity), ordered by time, behind one interface.

Two implementations:

* :class:`SQLiteStore` (``sqlite:PATH``): an embedded file, the default; WAL mode so the streaming
  job writes while a server reads.
* :class:`RedisStore` (``redis://host:port[/db]``): a sorted set per entity (member: event id,
  score: event time) and a hash of payloads beside it, written in one transaction; reads run as
  a Lua script, so a read never sees an id without its payload. Production would use a managed
  Redis (Memorystore), see the README.

Both write idempotently by event id (writing an id again replaces its time and payload: a
redelivered event changes nothing, a corrected one replaces the old version), and evict an
entity's events older than its newest event minus the namespace's retention. Reads are batched:
one call answers every (namespace, entity, time range) a request needs.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pipeline.online.records import StoreRecord

Event = tuple[int, str, Any]  # (time, event id, payload)


@dataclasses.dataclass(frozen=True)
class RangeQuery:
    """The events of one entity with ``start <= time <= end`` (whole seconds; None: open)."""

    namespace: str
    entity: str
    start: int | None
    end: int | None


class OnlineStore(Protocol):
    uri: str

    def write(self, records: Sequence[StoreRecord], retention: Mapping[str, int | None]) -> None:
        """Upsert records by (namespace, entity, event id); then evict past the retention."""
        ...

    def events(self, queries: Sequence[RangeQuery]) -> list[list[Event]]:
        """Every event in each query's range, in time order."""
        ...

    def latest(self, queries: Sequence[RangeQuery]) -> list[Event | None]:
        """The latest event in each query's range (of equal times: the largest id)."""
        ...

    def clear(self) -> None:
        """Remove everything (tests, and a replay into a fresh store)."""
        ...

    def close(self) -> None: ...


def open_store(uri: str) -> OnlineStore:
    """``sqlite:PATH`` or ``redis://host:port[/db]``; anything else is a ValueError naming it."""
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:")
        if not path:
            raise ValueError(f"invalid online store {uri!r}: sqlite:PATH")
        return SQLiteStore(Path(path))
    if uri.startswith("redis://"):
        return RedisStore(uri)
    raise ValueError(f"invalid online store {uri!r}: sqlite:PATH or redis://host:port[/db]")


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


# ---- SQLite ------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  namespace TEXT NOT NULL,
  entity TEXT NOT NULL,
  event_id TEXT NOT NULL,
  time INTEGER NOT NULL,
  payload TEXT NOT NULL,
  PRIMARY KEY (namespace, entity, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_time ON events (namespace, entity, time, event_id);
"""
_UPSERT = (
    "INSERT INTO events (namespace, entity, event_id, time, payload) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (namespace, entity, event_id) DO UPDATE SET time = excluded.time, "
    "payload = excluded.payload"
)
_EVICT = (
    "DELETE FROM events WHERE namespace = ? AND entity = ? AND time < "
    "(SELECT MAX(time) FROM events WHERE namespace = ? AND entity = ?) - ?"
)
_OPEN_LOW, _OPEN_HIGH = -(2**62), 2**62


class SQLiteStore:
    """The embedded store: one SQLite file; a connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.uri = f"sqlite:{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connection() as connection:
            connection.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            self._local.connection = connection
        return connection

    def write(self, records: Sequence[StoreRecord], retention: Mapping[str, int | None]) -> None:
        if not records:
            return
        rows = [(r.namespace, r.entity, r.event_id, r.time, _dumps(r.payload)) for r in records]
        touched = {(r.namespace, r.entity) for r in records if retention.get(r.namespace)}
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(_UPSERT, rows)
            connection.executemany(
                _EVICT, [(ns, e, ns, e, retention[ns]) for ns, e in sorted(touched)]
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def events(self, queries: Sequence[RangeQuery]) -> list[list[Event]]:
        connection = self._connection()
        sql = (
            "SELECT time, event_id, payload FROM events WHERE namespace = ? AND entity = ? "
            "AND time BETWEEN ? AND ? ORDER BY time, event_id"
        )
        return [
            [(t, i, json.loads(p)) for t, i, p in connection.execute(sql, _bounds(q))]
            for q in queries
        ]

    def latest(self, queries: Sequence[RangeQuery]) -> list[Event | None]:
        connection = self._connection()
        sql = (
            "SELECT time, event_id, payload FROM events WHERE namespace = ? AND entity = ? "
            "AND time BETWEEN ? AND ? ORDER BY time DESC, event_id DESC LIMIT 1"
        )
        found: list[Event | None] = []
        for query in queries:
            row = connection.execute(sql, _bounds(query)).fetchone()
            found.append(None if row is None else (row[0], row[1], json.loads(row[2])))
        return found

    def count(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def clear(self) -> None:
        self._connection().execute("DELETE FROM events")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _bounds(query: RangeQuery) -> tuple:
    start = _OPEN_LOW if query.start is None else query.start
    end = _OPEN_HIGH if query.end is None else query.end
    return (query.namespace, query.entity, start, end)


# ---- Redis -------------------------------------------------------------------------------------

# KEYS: the times sorted set, the payload hash; ARGV: min, max score (inclusive or "-inf"/"+inf").
_RANGE_SCRIPT = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
local out = {}
if #found == 0 then return out end
local ids = {}
for i = 1, #found, 2 do ids[#ids + 1] = found[i] end
local payloads = {}
for first = 1, #ids, 4000 do
  local last = math.min(first + 3999, #ids)
  local part = redis.call('HMGET', KEYS[2], unpack(ids, first, last))
  for j = 1, #part do payloads[#payloads + 1] = part[j] end
end
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = found[2 * i]
  out[#out + 1] = payloads[i]
end
return out
"""
# Of equal scores Redis orders members by their bytes, so the first one in reverse is the
# largest id: the same tie rule as SQLite's ORDER BY time DESC, event_id DESC.
_LATEST_SCRIPT = """
local found = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[1], 'WITHSCORES', 'LIMIT', 0, 1)
if #found == 0 then return {} end
return {found[1], found[2], redis.call('HGET', KEYS[2], found[1])}
"""
# ARGV[1]: retention in seconds. Removes members scored below the newest score minus it.
_EVICT_SCRIPT = """
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #newest == 0 then return 0 end
local cutoff = '(' .. (tonumber(newest[2]) - tonumber(ARGV[1]))
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
for first = 1, #old, 4000 do
  local last = math.min(first + 3999, #old)
  redis.call('HDEL', KEYS[2], unpack(old, first, last))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
return #old
"""


class RedisStore:
    """Redis 7: per entity a sorted set of event ids by time and a hash of their payloads.

    Both keys of an entity share a hash tag (``{namespace|entity}``), so a Redis Cluster (or
    Memorystore's cluster mode) keeps them in one slot and the scripts stay valid there.
    """

    def __init__(self, uri: str, prefix: str = "online") -> None:
        import redis

        self.uri = uri
        self.prefix = prefix
        self.client = redis.Redis.from_url(uri, decode_responses=True)
        self._range = self.client.register_script(_RANGE_SCRIPT)
        self._latest = self.client.register_script(_LATEST_SCRIPT)
        self._evict = self.client.register_script(_EVICT_SCRIPT)

    def _keys(self, namespace: str, entity: str) -> list[str]:
        tag = f"{self.prefix}:{{{namespace}|{entity}}}"
        return [f"{tag}:t", f"{tag}:p"]

    def write(self, records: Sequence[StoreRecord], retention: Mapping[str, int | None]) -> None:
        if not records:
            return
        pipe = self.client.pipeline(transaction=True)
        for record in records:
            times, payloads = self._keys(record.namespace, record.entity)
            pipe.zadd(times, {record.event_id: record.time})
            pipe.hset(payloads, record.event_id, _dumps(record.payload))
        touched = {(r.namespace, r.entity) for r in records if retention.get(r.namespace)}
        for namespace, entity in sorted(touched):
            self._evict(
                keys=self._keys(namespace, entity), args=[retention[namespace]], client=pipe
            )
        pipe.execute()

    def events(self, queries: Sequence[RangeQuery]) -> list[list[Event]]:
        pipe = self.client.pipeline(transaction=False)
        for query in queries:
            self._range(
                keys=self._keys(query.namespace, query.entity), args=_scores(query), client=pipe
            )
        return [
            [
                (int(float(flat[i + 1])), flat[i], json.loads(flat[i + 2]))
                for i in range(0, len(flat), 3)
            ]
            for flat in pipe.execute()
        ]

    def latest(self, queries: Sequence[RangeQuery]) -> list[Event | None]:
        pipe = self.client.pipeline(transaction=False)
        for query in queries:
            self._latest(
                keys=self._keys(query.namespace, query.entity), args=_scores(query), client=pipe
            )
        return [
            (int(float(found[1])), found[0], json.loads(found[2])) if found else None
            for found in pipe.execute()
        ]

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        for first in range(0, len(keys), 1000):
            self.client.delete(*keys[first : first + 1000])

    def close(self) -> None:
        self.client.close()


def _scores(query: RangeQuery) -> list[str]:
    low = "-inf" if query.start is None else str(query.start)
    high = "+inf" if query.end is None else str(query.end)
    return [low, high]
