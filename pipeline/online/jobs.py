"""Running the streaming job: from Pub/Sub (production) or from event files (local, replays).

* :func:`run_pubsub`: ``ReadFromPubSub(subscription, with_attributes=True)`` -> EventsToStore, in
  streaming mode; on Dataflow with ``--runner DataflowRunner --project ... --region ...
  --temp_location gs://...`` (dead letters go to a Pub/Sub topic).
* :func:`run_files`: JSON-lines event files -> EventsToStore on the DirectRunner (a bounded
  pipeline: the same transforms), dead letters to a file; returns the counts.
* :func:`export_events`: the event tables of the embedded warehouse as a JSON-lines file in
  time order (what the job would have received), for local runs and the parity replay.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.definition import ColumnType, DatasetDefinition
from pipeline.online.records import declarations, event_tables
from pipeline.online.stream import DEAD_LETTER, EventsToStore, event_message


@dataclasses.dataclass(frozen=True)
class IngestResult:
    records_written: int
    invalid_events: int
    dead_letter_file: str | None


def run_files(
    definition: DatasetDefinition,
    store_uri: str,
    patterns: Sequence[str],
    beam_args: Sequence[str] = (),
    dead_letter_file: str | None = None,
    keep_history: bool = False,
) -> IngestResult:
    """Stream JSON-lines event files into the store (DirectRunner unless ``beam_args`` say)."""
    import apache_beam as beam

    from pipeline.runners import pipeline_options

    with tempfile.TemporaryDirectory() as tmp:
        counts_prefix = os.path.join(tmp, "written")
        invalid_prefix = dead_letter_file or os.path.join(tmp, "invalid")
        options = pipeline_options(list(beam_args) or ["--runner", "DirectRunner"])
        with beam.Pipeline(options=options) as p:
            lines = [
                p | f"Read{i}" >> beam.io.ReadFromText(pattern)
                for i, pattern in enumerate(patterns)
            ]
            events = lines | "Events" >> beam.Flatten()
            out = events | "EventsToStore" >> EventsToStore(
                definition, store_uri, keep_history=keep_history
            )
            _ = (
                out["written"]
                | "Total" >> beam.CombineGlobally(sum)
                | "WriteCount" >> beam.io.WriteToText(counts_prefix, shard_name_template="")
            )
            _ = (
                out[DEAD_LETTER]
                | "DeadLetterJson" >> beam.Map(json.dumps)
                | "WriteDeadLetters" >> beam.io.WriteToText(invalid_prefix, shard_name_template="")
            )
        written = int(Path(counts_prefix).read_text().strip() or 0)
        invalid_lines = Path(invalid_prefix).read_text().splitlines()
    return IngestResult(written, len(invalid_lines), dead_letter_file)


def run_pubsub(
    definition: DatasetDefinition,
    store_uri: str,
    subscription: str,
    dead_letter_topic: str | None,
    beam_args: Sequence[str],
) -> None:
    """The production job: a Pub/Sub subscription in streaming mode (blocks until cancelled)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline.runners import pipeline_options

    options = pipeline_options(beam_args)
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        messages = p | "ReadFromPubSub" >> beam.io.ReadFromPubSub(
            subscription=subscription, with_attributes=True
        )
        out = messages | "EventsToStore" >> EventsToStore(definition, store_uri)
        if dead_letter_topic:
            _ = (
                out[DEAD_LETTER]
                | "DeadLetterBytes" >> beam.Map(lambda d: json.dumps(d).encode())
                | "WriteDeadLetters" >> beam.io.WriteToPubSub(dead_letter_topic)
            )


def export_events(
    definition: DatasetDefinition,
    warehouse: Path,
    output: Path,
    start: int | None = None,
    end: int | None = None,
) -> int:
    """Events of every event table with ``start <= time <= end`` (Unix seconds; lookup tables
    whole), in time order, as JSON lines; returns how many. ``start`` should already reach back
    by the largest window (and as-of age) before the first row to be queried."""
    import duckdb

    from pipeline.warehouse.identifiers import TableRef, quote_duckdb

    times = _time_columns(definition)
    written = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = output.with_name(f".{output.name}.partial")
    connection = duckdb.connect(str(warehouse), read_only=True)
    try:
        with staged.open("w") as sink:
            queries = []
            for table, columns in event_tables(definition).items():
                names = [c.name for c in columns]
                select = ", ".join(
                    f"epoch({quote_duckdb(c.name)})::BIGINT AS {quote_duckdb(c.name)}"
                    if c.type is ColumnType.TIMESTAMP
                    else quote_duckdb(c.name)
                    for c in columns
                )
                time = times.get(table)
                where, order = "", "1"
                if time is not None:
                    order = f"epoch({quote_duckdb(time)})"
                    bounds = []
                    if start is not None:
                        bounds.append(f"{order} >= {int(start)}")
                    if end is not None:
                        bounds.append(f"{order} <= {int(end)}")
                    where = " WHERE " + " AND ".join(bounds) if bounds else ""
                ref = TableRef.parse(table).duckdb_sql()
                queries.append(
                    (table, names, f"SELECT {select} FROM {ref}{where} ORDER BY {order}")
                )
            # Lookup tables first (timeless), then every timed table merged in time order.
            rows = []
            for table, names, sql in queries:
                for values in connection.execute(sql).fetchall():
                    row = dict(zip(names, values, strict=True))
                    time = times.get(table)
                    rows.append((-1 if time is None else row[time], table, row))
            rows.sort(key=lambda item: item[0])
            for _, table, row in rows:
                sink.write(event_message(table, _json_row(row)) + "\n")
                written += 1
        staged.replace(output)
    finally:
        connection.close()
        staged.unlink(missing_ok=True)
    return written


def _time_columns(definition: DatasetDefinition) -> dict[str, str]:
    """Each event table's time column (absent for tables read only by lookups)."""
    found: dict[str, str] = {}
    for declaration in declarations(definition):
        if declaration.time_column is not None:
            found.setdefault(declaration.table, declaration.time_column)
    return found


def _json_row(row: dict) -> dict:
    clean = {}
    for name, value in row.items():
        if isinstance(value, float) and value != value:  # NaN means missing
            value = None
        elif isinstance(value, datetime):
            value = int(value.replace(tzinfo=UTC).timestamp())
        clean[name] = value
    return clean
