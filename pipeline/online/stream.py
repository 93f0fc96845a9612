"""The streaming job: events in, online store records out (Apache Beam).

    events (Pub/Sub | JSON-lines files | TestStream)
      -> ParseEvents      {"table": "<dataset.table>", "row": {column: value}} -> (table, row);
                          invalid events go to a dead-letter output with the reason
      -> ToStoreRecords   one record per declaration that reads the table (pipeline.online.records)
      -> BatchElements    up to a few hundred records per store call
      -> WriteToStore     idempotent upserts by event id, eviction past each namespace's retention

The same transforms run everywhere: on Dataflow reading a Pub/Sub subscription (streaming), on
the DirectRunner reading files (a bounded replay, e.g. the parity replay) and in tests from a
``TestStream``. Writes are idempotent, so Beam's at-least-once retries and a replay of the same
events never count an event twice, and the result does not depend on the order events arrive
in: the point-in-time rule is applied when a value is read, never when it is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam import pvalue

from pipeline.definition import DatasetDefinition
from pipeline.online.records import InvalidEvent, RecordMaker, StoreRecord
from pipeline.online.stores import open_store

DEAD_LETTER = "invalid"
MAX_BATCH = 500


def event_message(table: str, row: dict[str, Any]) -> str:
    """The JSON text of one event (a Pub/Sub message's data, a line of an events file); a NaN,
    which means missing, travels as null."""
    clean = {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}
    return json.dumps({"table": table, "row": clean}, separators=(",", ":"), allow_nan=False)


class ParseEvents(beam.DoFn):
    """JSON text (or bytes, or a Pub/Sub message) -> (table, row); bad input -> dead letter."""

    def process(self, element: Any) -> Iterable[Any]:
        table_attribute = None
        if hasattr(element, "data"):  # PubsubMessage with attributes
            table_attribute = (element.attributes or {}).get("table")
            element = element.data
        try:
            text = element.decode("utf-8") if isinstance(element, bytes) else element
            message = json.loads(text) if isinstance(text, str) else text
            if not isinstance(message, dict) or not isinstance(message.get("row"), dict):
                raise InvalidEvent('an event is {"table": "dataset.table", "row": {...}}')
            table = message.get("table", table_attribute)
            if not isinstance(table, str):
                raise InvalidEvent("an event names its table (dataset.table)")
            yield table, message["row"]
        except (ValueError, UnicodeDecodeError) as error:
            yield pvalue.TaggedOutput(
                DEAD_LETTER, {"event": _printable(element), "error": str(error)}
            )


class ToStoreRecords(beam.DoFn):
    """(table, row) -> the store records of every declaration reading that table."""

    def __init__(self, definition: DatasetDefinition) -> None:
        self.definition = definition

    def setup(self) -> None:
        self.maker = RecordMaker(self.definition)

    def process(self, element: tuple[str, dict]) -> Iterable[Any]:
        table, row = element
        try:
            yield from self.maker.records(table, row)
        except InvalidEvent as error:
            yield pvalue.TaggedOutput(DEAD_LETTER, {"event": {"table": table, "row": row},
                                                    "error": str(error)})  # fmt: skip


class WriteToStore(beam.DoFn):
    """Batches of records -> the online store (a connection per worker, opened in setup)."""

    def __init__(self, store_uri: str, retention: dict[str, int | None]) -> None:
        self.store_uri = store_uri
        self.retention = retention
        self.written = beam.metrics.Metrics.counter("online_store", "records_written")

    def setup(self) -> None:
        self.store = open_store(self.store_uri)

    def process(self, batch: list[StoreRecord]) -> Iterable[int]:
        self.store.write(batch, self.retention)
        self.written.inc(len(batch))
        yield len(batch)

    def teardown(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


class EventsToStore(beam.PTransform):
    """The whole job after the source: returns ``{"written": counts, "invalid": dead letters}``.

    Each entity's events older than its newest event minus the namespace's retention (the
    largest window plus the lag) are evicted; ``keep_history`` keeps them all (replays).
    """

    def __init__(
        self,
        definition: DatasetDefinition,
        store_uri: str,
        max_batch: int = MAX_BATCH,
        keep_history: bool = False,
    ):
        super().__init__()
        self.definition = definition
        self.store_uri = store_uri
        self.max_batch = max_batch
        self.keep_history = keep_history

    def expand(self, events):
        # A store serves requests at about the newest event's time, so each entity keeps the
        # newest events its windows can reach; a replay that will be queried at every past time
        # keeps the whole history instead (keep_history).
        retention = {} if self.keep_history else RecordMaker(self.definition).retention
        parsed = events | "ParseEvents" >> beam.ParDo(ParseEvents()).with_outputs(
            DEAD_LETTER, main="events"
        )
        records = parsed.events | "ToStoreRecords" >> beam.ParDo(
            ToStoreRecords(self.definition)
        ).with_outputs(DEAD_LETTER, main="records")
        written = (
            records.records
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.max_batch)
            | "WriteToStore" >> beam.ParDo(WriteToStore(self.store_uri, retention))
        )
        invalid = (parsed[DEAD_LETTER], records[DEAD_LETTER]) | "DeadLetters" >> beam.Flatten()
        return {"written": written, "invalid": invalid}


def _printable(element: Any) -> Any:
    if isinstance(element, bytes):
        return element.decode("utf-8", errors="replace")
    return element
