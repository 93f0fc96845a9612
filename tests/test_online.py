"""Derived columns online: both stores, the streaming job on a TestStream, enrichment, the
parity replay and the leakage test (batch SQL and online)."""

from __future__ import annotations

import json
import math
import random

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as EventStream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.datasets import get_dataset
from pipeline.definition import SPLIT_NAMES
from pipeline.online.enrich import Enricher, EnrichingEncoder, read_windows
from pipeline.online.records import StoreRecord
from pipeline.online.replay import compare_derived, replay
from pipeline.online.stores import RangeQuery, open_store
from pipeline.online.stream import DEAD_LETTER, EventsToStore, event_message
from pipeline.serving.errors import BadRequest
from pipeline.serving.examples import ExampleEncoder
from pipeline.warehouse import SplitConfig, run_split
from tests.conftest import REPO_ROOT
from tests.window_data import DEFINITION, READINGS, START, STEP, TABLE, build_warehouse
from tests.window_data import make_tables as make_window_tables

NS = "window:test"


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    uri = f"sqlite:{tmp_path / 'store.sqlite'}"
    if request.param == "redis":
        uri = request.getfixturevalue("redis_url")
    opened = open_store(uri)
    opened.clear()
    yield opened
    opened.clear()
    opened.close()


def record(entity: str, event_id: str, time: int, payload) -> StoreRecord:
    return StoreRecord(NS, json.dumps([entity]), event_id, time, payload)


def test_writes_are_idempotent_by_event_id(store):
    entity = json.dumps(["a"])
    store.write([record("a", "1", 100, 5.0), record("a", "2", 200, 7.0)], {})
    store.write([record("a", "1", 100, 5.0)], {})  # a redelivery changes nothing
    store.write([record("a", "2", 250, 8.0)], {})  # a correction replaces the earlier version
    (events,) = store.events([RangeQuery(NS, entity, None, None)])
    assert events == [(100, "1", 5.0), (250, "2", 8.0)]
    (inside,) = store.events([RangeQuery(NS, entity, 101, 250)])  # both ends inclusive
    assert inside == [(250, "2", 8.0)]
    assert store.events([RangeQuery(NS, json.dumps(["b"]), None, None)]) == [[]]


def test_eviction_keeps_what_the_windows_reach(store):
    records = [record("a", str(i), 1000 + 600 * i, float(i)) for i in range(20)]
    random.Random(3).shuffle(records)  # arrival order does not matter
    for first in range(0, 20, 6):
        store.write(records[first : first + 6], {NS: 3600})
    (events,) = store.events([RangeQuery(NS, json.dumps(["a"]), None, None)])
    newest = 1000 + 600 * 19
    assert [t for t, _, _ in events] == [
        t for t in range(1000, newest + 1, 600) if t >= newest - 3600
    ]
    store.write([record("a", "late", 1000, 1.0)], {NS: 3600})  # too old on arrival: evicted
    (again,) = store.events([RangeQuery(NS, json.dumps(["a"]), None, None)])
    assert again == events


def test_latest_is_the_newest_in_range_and_ties_go_to_the_largest_id(store):
    store.write(
        [
            record("a", "x", 100, {"v": 1}),
            record("a", "y", 100, {"v": 2}),
            record("a", "z", 300, {"v": 3}),
        ],
        {},
    )
    entity = json.dumps(["a"])
    found = store.latest([RangeQuery(NS, entity, None, 200), RangeQuery(NS, entity, 0, None),
                          RangeQuery(NS, entity, 301, None)])  # fmt: skip
    assert found == [(100, "y", {"v": 2}), (300, "z", {"v": 3}), None]


def test_windows_read_once_per_entity_equal_one_read_per_query(store):
    """Overlapping, nested, open and empty ranges of several entities, equal times included."""
    rng = random.Random(11)
    entities = [json.dumps([name]) for name in ("a", "b", "c")]
    store.write(
        [
            StoreRecord(NS, entity, f"{n:03d}", rng.randrange(0, 500, 5), float(n))
            for entity in entities[:2]
            for n in range(120)
        ],
        {},
    )
    bounds = [None, *range(-10, 520, 7)]
    queries = [
        RangeQuery(NS, rng.choice(entities), rng.choice(bounds), rng.choice(bounds))
        for _ in range(300)
    ]
    expected = store.events(queries)
    assert read_windows(store, queries) == expected
    assert sum(map(len, expected)) > 3000 and any(not found for found in expected)


def test_an_unknown_store_is_refused_by_name():
    with pytest.raises(ValueError, match="invalid online store 'memcached://x'"):
        open_store("memcached://x")


# ---- the streaming job and the batch SQL ---------------------------------------------------------


@pytest.fixture(scope="module")
def window_tables():
    return make_window_tables()


@pytest.fixture(scope="module")
def window_warehouse(window_tables, tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("online") / "w.duckdb", window_tables)


def split_rows(warehouse, out) -> list[dict]:
    result = run_split(SplitConfig(DEFINITION, warehouse=warehouse), out)
    table = pa.concat_tables(pq.read_table(result.split_dirs[s]) for s in SPLIT_NAMES)
    return sorted(table.to_pylist(), key=lambda r: r["delivery_id"])


@pytest.fixture(scope="module")
def batch_rows(window_warehouse, tmp_path_factory):
    return split_rows(window_warehouse, tmp_path_factory.mktemp("online_split") / "splits")


def messages(tables) -> list[str]:
    return [event_message(table, row) for table, rows in tables.items() for row in rows]


def client_rows(rows) -> list[dict]:
    return [{c.name: r[c.name] for c in DEFINITION.client_columns} for r in rows]


def stream_into(store_uri: str, texts: list[str], seed: int) -> None:
    """Run the job in streaming mode on a TestStream: shuffled, redelivered, bad messages."""
    shuffled = texts + texts[::7]  # every 7th message arrives twice
    random.Random(seed).shuffle(shuffled)
    stream = EventStream()
    for first in range(0, len(shuffled), 250):
        stream = stream.add_elements(shuffled[first : first + 250]).advance_watermark_to(first)
    stream = stream.add_elements(["not json", event_message("depot.nowhere", {})])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner", "DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = p | stream | EventsToStore(DEFINITION, store_uri, max_batch=64, keep_history=True)
        errors = out[DEAD_LETTER] | beam.Map(lambda d: d["error"][:30])
        assert_that(
            errors,
            equal_to(["Expecting value: line 1 column", "events of table 'depot.nowhere"]),
        )


def test_the_streaming_job_gives_every_row_the_batch_sql_values(store, window_tables, batch_rows):
    stream_into(store.uri, messages(window_tables), seed=1)
    online = Enricher(DEFINITION, store).enrich(client_rows(batch_rows))
    deviations, mismatches = compare_derived(DEFINITION, batch_rows, online)
    assert mismatches == []
    assert set(deviations) == set(DEFINITION.derived_column_names)
    assert sum(r["depot_count_1h"] or 0 for r in online) > 100  # the windows are not empty


# ---- leakage -------------------------------------------------------------------------------------


def _changed(tables, deliveries_when, readings_when) -> dict:
    """Copies of the tables with the delivery delays and reading temperatures selected changed."""
    deliveries = [
        {**r, "delay": 999.0} if deliveries_when(r["delivered_at"]) else r for r in tables[TABLE]
    ]
    readings = [
        {**r, "temp": -99.0} if readings_when(r["read_at"]) else r for r in tables[READINGS.table]
    ]
    return {**tables, TABLE: deliveries, READINGS.table: readings}


T0 = START + 100 * STEP
ALL = DEFINITION.derived_column_names


def _never(t) -> bool:
    return False


def _after(t) -> bool:
    return t is not None and t > T0


def _at(t) -> bool:
    return t == T0


LEAKS = {
    "after_t": (_after, _after, ALL),
    "at_t": (_at, _at, ALL),  # lag 0: an event at the row's own time does not count
    # Inside the lags: deliveries less than 30 min old (depot_known), readings less than 10 min
    # old (the as-of join; one exactly 10 min old would qualify, so (t - 10 min, t]).
    "inside_window_lag": (
        lambda t: t is not None and T0 - 1800 < t < T0,
        _never,
        ("depot_known_count_2h", "depot_known_mean_2h", "depot_known_last_2h"),
    ),
    "inside_as_of_lag": (_never, lambda t: T0 - 600 < t <= T0, ("reading_temp",)),
}


@pytest.mark.parametrize("leak", list(LEAKS))
def test_events_a_row_cannot_know_change_none_of_its_features(
    leak, window_tables, batch_rows, tmp_path, redis_url
):
    deliveries_when, readings_when, protected = LEAKS[leak]
    changed = _changed(window_tables, deliveries_when, readings_when)
    at_t0 = [r for r in batch_rows if r["delivered_at"] == T0 and r["depot"] is not None]
    assert len(at_t0) >= 2
    ids = {r["delivery_id"] for r in at_t0}
    # Batch: the warehouse SQL over the changed tables.
    db = build_warehouse(tmp_path / "changed.duckdb", changed)
    batch = [r for r in split_rows(db, tmp_path / "splits") if r["delivery_id"] in ids]
    # Online: the changed events streamed into a store, each row read at its own time.
    store = open_store(redis_url)
    store.clear()
    stream_into(redis_url, messages(changed), seed=2)
    online = Enricher(DEFINITION, store).enrich(client_rows(at_t0))
    store.close()
    for original, after_batch, after_online in zip(at_t0, batch, online, strict=True):
        for column in protected:
            assert _same(original[column], after_batch[column]), (leak, column, "batch")
            assert _same(original[column], after_online[column]), (leak, column, "online")
    # The change is real: rows later than t0 do see it (the test could fail).
    later = [r for r in split_rows(db, tmp_path / "again") if (r["delivered_at"] or 0) > T0]
    if leak == "after_t":
        assert any(r["depot_max_1h"] == 999.0 for r in later)
        assert any(r["reading_temp"] == -99.0 for r in later)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# ---- enrichment and the serving encoder ----------------------------------------------------------


def test_rows_without_a_key_or_a_time_get_missing_derived_columns(store, window_tables, batch_rows):
    stream_into(store.uri, messages(window_tables), seed=3)
    enricher = Enricher(DEFINITION, store)
    row = client_rows(batch_rows[:1])[0]
    without_key, without_time = {**row, "depot": None}, {**row, "delivered_at": None}
    a, b = enricher.enrich([without_key, without_time])
    assert a["depot_count_1h"] is None and a["reading_temp"] is None
    assert b["depot_count_1h"] is None and b["truck_capacity"] == batch_rows[0]["truck_capacity"]


def test_the_enriching_encoder_fills_rows_and_refuses_what_the_server_fills(
    tmp_path, window_tables, batch_rows
):
    store = open_store(f"sqlite:{tmp_path / 's.sqlite'}")
    stream_into(store.uri, messages(window_tables), seed=4)
    base = ExampleEncoder(DEFINITION)
    encoder = EnrichingEncoder(base, Enricher(DEFINITION, store))
    rows = [r for r in batch_rows if r["depot"] and r["delivered_at"]][:5]
    sent = client_rows(rows)
    full = [{c.name: r[c.name] for c in DEFINITION.serving_columns} for r in rows]
    assert encoder.encode_rows(sent, "instances") == base.encode_rows(full, "instances")
    columns = {name: [r[name] for r in sent] for name in sent[0]}
    assert encoder.encode_columns(columns, "inputs") == base.encode_rows(full, "inputs")
    with pytest.raises(
        BadRequest, match=r"instances\[0\]: 'depot_count_1h' is filled by the server"
    ):
        encoder.encode_rows([{**sent[0], "depot_count_1h": 3}], "instances")


# ---- the parity replay ---------------------------------------------------------------------------


def test_replay_of_flights_days_has_no_mismatch(tmp_path):
    """The last three days of a flights eval split, through the real job into SQLite."""
    flights = get_dataset("flights")
    warehouse = REPO_ROOT / "data" / "flights" / "warehouse.duckdb"
    result = run_split(
        SplitConfig(flights, warehouse=warehouse, sample_fraction=0.2), tmp_path / "s"
    )
    report = replay(flights, warehouse, result.split_dirs["eval"], days=3)
    assert report.passed, report.mismatches[:5]
    assert report.rows > 50 and report.events > 2000
    assert report.max_deviation["origin_dep_delay_count_3h"] == 0.0


def test_replay_of_the_whole_split_into_redis(window_warehouse, tmp_path, redis_url):
    result = run_split(SplitConfig(DEFINITION, warehouse=window_warehouse), tmp_path / "s")
    report = replay(DEFINITION, window_warehouse, result.split_dirs["eval"], store_uri=redis_url)
    assert report.passed and report.subset == "the whole split"
    assert report.rows == result.split_rows["eval"] and report.store == "redis"
    manifest = report.to_manifest()
    assert json.loads(json.dumps(manifest)) == manifest


def test_replay_finds_a_store_that_disagrees(window_warehouse, tmp_path, monkeypatch):
    """A store that drops the newest event of every read: the replay must report mismatches."""
    from pipeline.online import stores

    original = stores.SQLiteStore.events

    def lossy(self, queries):
        return [found[:-1] for found in original(self, queries)]

    monkeypatch.setattr(stores.SQLiteStore, "events", lossy)
    result = run_split(SplitConfig(DEFINITION, warehouse=window_warehouse), tmp_path / "s")
    report = replay(DEFINITION, window_warehouse, result.split_dirs["eval"])
    assert not report.passed
    assert any(m.startswith("depot_count_1h: row") for m in report.mismatches)


def test_the_command_line_exports_ingests_and_looks_up(tmp_path, capsys):
    """Six hours of flights events through the CLI (evicting as in production), then a lookup
    at the newest hour against the SQL's own count."""
    import duckdb

    from pipeline.online.__main__ import main

    start = 1_357_016_400 + 30 * 86_400 + 9 * 3600  # 2013-01-31 14:00 UTC, 09:00 in New York
    data, events = str(REPO_ROOT / "data"), tmp_path / "events.jsonl"
    store = f"sqlite:{tmp_path / 'store.sqlite'}"
    assert main(["export-events", "--dataset", "flights", "--data-dir", data,
                 "--output", str(events), "--start", str(start),
                 "--end", str(start + 6 * 3600)]) == 0  # fmt: skip
    assert main(["ingest", "--dataset", "flights", "--store", store, "--events", str(events)]) == 0
    bad, dead = tmp_path / "bad.jsonl", tmp_path / "dead.jsonl"
    bad.write_text('{"table": "nycflights13.flights", "row": {"origin": 5}}\n')
    code = main(["ingest", "--dataset", "flights", "--store", store, "--events", str(bad),
                 "--dead-letter", str(dead)])  # fmt: skip
    assert code == 3
    assert "nycflights13.flights.origin: expected a string" in dead.read_text()
    capsys.readouterr()
    t = start + 5 * 3600
    request = {"origin": "JFK", "carrier": "B6", "tailnum": "N0EGMQ", "time_hour": t}
    assert (
        main(["lookup", "--dataset", "flights", "--store", store, "--row", json.dumps(request)])
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    with duckdb.connect(
        str(REPO_ROOT / "data" / "flights" / "warehouse.duckdb"), read_only=True
    ) as c:
        (expected,) = c.execute(
            "SELECT COUNT(dep_delay) FROM nycflights13.flights WHERE origin = 'JFK' AND "
            "epoch(time_hour) >= ? AND epoch(time_hour) < ?",
            [t - 3 * 3600, t - 3600],
        ).fetchone()
    assert row["origin_dep_delay_count_3h"] == expected > 0
    assert row["weather_temp"] is not None


def test_the_replay_subset_is_the_last_days_and_at_least_the_latest_rows():
    from pipeline.online.replay import select_rows

    rows = [{"delivered_at": START + 3600 * i} for i in range(1000)]  # hourly, about 41 days
    chosen, how = select_rows(DEFINITION, rows, days=20, min_rows=10)
    assert len(chosen) == 20 * 24 and "last 20 day(s)" in how
    chosen, _ = select_rows(DEFINITION, rows, days=2)  # 48 rows: reach back to the latest 200
    assert len(chosen) == 200 and min(r["delivered_at"] for r in chosen) == START + 3600 * 800
    assert select_rows(DEFINITION, rows, None) == (rows, "the whole split")
