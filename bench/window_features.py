"""Window features and point-in-time joins: batch SQL, streaming writes, online lookups.

    .venv/bin/python bench/window_features.py [--synthetic-events 5000000] [--stream-events 50000]
        [--lookups 2000] [--skip-redis]

Every figure comes with a baseline measured in the same run, and the load (``os.getloadavg``):

* **batch**: the derived rows (every window, as-of join and lookup, as the split's ``source`` CTE
  reads them) of every row of ``--dataset`` (flights: all 2013 flights) and of N synthetic events
  (1,000 entities over a year, one window feature with five aggregations over 1 h and 1 d), on
  the embedded DuckDB, against a plain scan of the same table's columns;
* **streaming**: events per second through the Beam job (DirectRunner, JSON lines) into SQLite
  and Redis, against the same job without the store write;
* **online lookups**: latency p50 / p99 of filling one request row's derived columns from each
  store (every window, as-of join and lookup of the dataset), against encoding that row as a
  ``tf.Example`` (which every request pays anyway).

Redis is Debian's ``redis-server``, started here on a free loopback port and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data import warehouse_path
from pipeline.datasets import get_dataset
from pipeline.definition import (
    BinaryLabel,
    Column,
    ColumnType,
    DatasetDefinition,
    Feature,
    SplitSettings,
    WindowFeature,
)
from pipeline.warehouse import SplitConfig
from pipeline.warehouse.derived import derived_ctes, derived_rows
from pipeline.warehouse.duckdb_engine import DuckDBEngine, transpile
from pipeline.warehouse.query import Query, derived_tables
from transforms import kinds

SYNTHETIC = DatasetDefinition(
    name="bench_events",
    table="bench.events",
    columns=(
        Column("event_id", ColumnType.INT64, nullable=False),
        Column("entity", ColumnType.INT64),
        Column("happened_at", ColumnType.TIMESTAMP),
        Column("amount", ColumnType.FLOAT64),
        Column("flag", ColumnType.INT64, nullable=False),
    ),
    label=BinaryLabel("flagged", "flag", ">", 0),
    features=(Feature("amount", "amount", kinds.ZScore(impute="mean")),),
    split=SplitSettings(key_columns=("event_id",)),
    unknown_at_serving=("flag",),
    timestamp_column="happened_at",
    windows=(
        WindowFeature(
            "entity_amount", "entity", "amount", ("count", "sum", "mean", "max", "stddev"),
            ("1h", "1d"),
        ),
    ),
)  # fmt: skip


def timed(connection, sql: str, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        connection.execute(sql).fetchall()
        best = min(best, time.perf_counter() - started)
    return best


def batch(definition: DatasetDefinition, database: Path) -> dict:
    """Seconds of the derived rows vs a plain scan of the same table (best of two)."""
    config = SplitConfig(definition, warehouse=database)
    tables = derived_tables(config)
    ctes = ",\n".join(derived_ctes(definition, tables))
    derived = derived_rows(definition, tables)
    names = ", ".join(definition.derived_column_names)
    enriched = Query(
        "derived", f"WITH {ctes}\nSELECT COUNT(*), {_sums(definition)} FROM {derived}", {}
    )
    # Every column read and turned into text, so the engine cannot answer from metadata.
    reads = ", ".join(f"SUM(LENGTH(CAST({c} AS STRING)))" for c in definition.column_names)
    plain = Query("scan", f"SELECT COUNT(*), {reads} FROM {tables.main.bigquery_sql()}", {})
    connection = DuckDBEngine(database).connect()
    try:
        rows = connection.execute(transpile(plain)).fetchone()[0]  # also warms the cache
        scan = timed(connection, transpile(plain))
        seconds = timed(connection, transpile(enriched))
    finally:
        connection.close()
    return {
        "rows": rows,
        "derived_columns": len(definition.derived_column_names),
        "derived_seconds": round(seconds, 3),
        "plain_scan_seconds": round(scan, 3),
        "ratio_to_scan": round(seconds / scan, 1),
        "columns": names[:80] + ("..." if len(names) > 80 else ""),
    }


def _sums(definition: DatasetDefinition) -> str:
    """Aggregate every derived column, so no engine can skip computing one."""
    return ", ".join(f"SUM(CAST({c} AS FLOAT64))" for c in definition.derived_column_names)


def synthetic_events(path: Path, events: int) -> Path:
    import duckdb

    connection = duckdb.connect(str(path))
    connection.execute("CREATE SCHEMA bench")
    connection.execute(
        f"""CREATE TABLE bench.events AS SELECT
              i AS event_id,
              CAST(hash(i) % 1000 AS BIGINT) AS entity,
              make_timestamp(CAST(1704067200 + (hash(i * 7) % (365 * 86400)) AS BIGINT) * 1000000)
                AS happened_at,
              CAST(hash(i * 13) % 10000 AS DOUBLE) / 100 AS amount,
              CAST(hash(i * 17) % 2 AS BIGINT) AS flag
            FROM range({int(events)}) AS t(i)"""
    )
    connection.close()
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis(port=port).ping()
            return server, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.1)


def streaming(definition, events_file: Path, events: int, stores: dict[str, str]) -> dict:
    """Events/s through the job into each store, and through the job without a write."""
    import apache_beam as beam

    from pipeline.online.jobs import run_files
    from pipeline.online.stream import ParseEvents, ToStoreRecords

    results = {}
    started = time.perf_counter()
    with beam.Pipeline() as p:
        _ = (
            p
            | beam.io.ReadFromText(str(events_file))
            | beam.ParDo(ParseEvents())
            | beam.ParDo(ToStoreRecords(definition))
            | beam.combiners.Count.Globally()
        )
    baseline = time.perf_counter() - started
    results["job_without_store"] = {
        "seconds": round(baseline, 2),
        "events_per_second": round(events / baseline),
    }
    for name, uri in stores.items():
        started = time.perf_counter()
        result = run_files(definition, uri, [str(events_file)], keep_history=True)
        seconds = time.perf_counter() - started
        results[name] = {
            "seconds": round(seconds, 2),
            "events_per_second": round(events / seconds),
            "records_per_second": round(result.records_written / seconds),
            "ratio_to_job_without_store": round(seconds / baseline, 2),
        }
    return results


def lookups(definition, rows: list[dict], stores: dict[str, str]) -> dict:
    """p50 / p99 of one-row enrichment per store, against encoding the row as a tf.Example."""
    from pipeline.online.enrich import Enricher
    from pipeline.online.stores import open_store
    from pipeline.serving.examples import ExampleEncoder

    encoder = ExampleEncoder(definition)
    full = [{c.name: r.get(c.name) for c in definition.serving_columns} for r in rows]
    results = {
        "encode_row_baseline": _latencies(lambda i: encoder.encode_rows([full[i]], "r"), len(rows))
    }
    client = [{c.name: r.get(c.name) for c in definition.client_columns} for r in rows]
    base = results["encode_row_baseline"]["p50_ms"]
    for name, uri in stores.items():
        store = open_store(uri)
        figures = _latencies(_one_row(Enricher(definition, store), client), len(rows))
        store.close()
        results[name] = {**figures, "p50_ratio_to_encoding": round(figures["p50_ms"] / base, 1)}
    return results


def _one_row(enricher, rows: list[dict]):
    """A request of one row: the server's enrichment of ``rows[i]``."""

    def call(index: int) -> None:
        enricher.enrich([rows[index]])

    return call


def _latencies(call, count: int) -> dict:
    """Milliseconds of ``call(i)`` for each of ``count`` requests, after a warm-up."""
    for i in range(min(50, count)):  # warm up
        call(i)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[int(0.99 * (len(samples) - 1))], 3),
        "requests": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-events", type=int, default=5_000_000)
    parser.add_argument("--stream-events", type=int, default=50_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--dataset", help="a dataset with window features (default: the default)")
    args = parser.parse_args()
    dataset = get_dataset(args.dataset)
    database = warehouse_path(dataset, args.data_dir)
    report: dict = {"load_before": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="bench-windows-"))
    redis_server = None
    try:
        report[f"batch_{dataset.name}"] = batch(dataset, database)
        synthetic = synthetic_events(work / "events.duckdb", args.synthetic_events)
        report["batch_synthetic"] = batch(SYNTHETIC, synthetic)
        stores = {"sqlite": f"sqlite:{work / 'online.sqlite'}"}
        if not args.skip_redis:
            redis_server, stores["redis"] = start_redis(work)
        report["streaming"], rows = _stream(dataset, database, work, args.stream_events, stores)
        report["online_lookups"] = lookups(dataset, rows[: args.lookups], stores)
    finally:
        if redis_server is not None:
            redis_server.terminate()
            redis_server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


def _stream(dataset, database: Path, work: Path, events: int, stores: dict[str, str]):
    """Export the first ``events`` events (by time), stream them, return rows to look up."""
    from pipeline.online.jobs import export_events

    all_events = work / "all.jsonl"
    export_events(dataset, database, all_events)
    lines = all_events.read_text().splitlines()
    chosen = work / "events.jsonl"
    chosen.write_text("\n".join(lines[:events]) + "\n")
    event_rows = [json.loads(line)["row"] for line in lines[:events]]
    # Rows a client could send whole; if no row has every column, any row.
    complete = [r for r in event_rows if all(c.name in r for c in dataset.client_columns)]
    rows = complete or event_rows
    results = streaming(dataset, chosen, min(events, len(lines)), stores)
    return results, rows[len(rows) // 2 :]


if __name__ == "__main__":
    main()
