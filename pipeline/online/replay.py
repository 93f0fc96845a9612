"""Parity of the derived columns: the streaming path replayed against the batch SQL.

For the eval split (or a documented, deterministic part of it: the rows of its last ``days``
days, and at least its latest ``MIN_ROWS`` rows), the events those rows' windows and joins can
reach are exported from the warehouse in time order and streamed through the real Beam job into
a real online store (keeping the whole history, since every row is queried at its own past
time). Then each eval row, as a client sends it (its client columns only), is enriched by the
server's :class:`Enricher` and every derived column is compared with the batch SQL's value in
the split files: counts and other integers exactly, floats within ``FLOAT_RTOL`` relative (plus
``FLOAT_ATOL`` absolute, for values that are zero up to rounding, e.g. a standard deviation of
equal values), missing must match missing. With an export, the end-to-end prediction (enriched
JSON request -> serving encoder -> export) is compared with the prediction on the batch row.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.definition import ColumnType, DatasetDefinition
from pipeline.online.enrich import Enricher
from pipeline.online.jobs import export_events, run_files
from pipeline.online.stores import open_store

FLOAT_RTOL = 1e-6
FLOAT_ATOL = 1e-9
PREDICTION_RTOL = 1e-5
DAY = 86_400
MIN_ROWS = 200


@dataclasses.dataclass
class ReplayReport:
    rows: int
    eval_rows: int
    subset: str
    events: int
    records_written: int
    columns_compared: list[str]
    max_deviation: dict[str, float]
    mismatches: list[str]
    max_prediction_deviation: float | None = None
    store: str = ""
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def to_manifest(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "eval_rows": self.eval_rows,
            "subset": self.subset,
            "events_replayed": self.events,
            "records_written": self.records_written,
            "columns_compared": self.columns_compared,
            "max_relative_deviation": self.max_deviation,
            "max_prediction_deviation": self.max_prediction_deviation,
            "mismatch_count": len(self.mismatches),
            "mismatches": self.mismatches[:50],
            "store": self.store,
            "seconds": self.seconds,
        }


def read_split_rows(split_dir: Path | str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(str(split_dir)).to_pylist()


def select_rows(
    definition: DatasetDefinition,
    rows: Sequence[Mapping[str, Any]],
    days: int | None,
    min_rows: int = MIN_ROWS,
) -> tuple[list[Mapping[str, Any]], str]:
    """The rows of the split's last ``days`` days, reaching further back until at least
    ``min_rows`` are in (all rows with ``days=None``), and how they were chosen."""
    column = definition.timestamp_column
    timed = sorted((r for r in rows if r.get(column) is not None), key=lambda r: -r[column])
    if days is None or not timed:
        return list(rows), "the whole split"
    start = timed[0][column] - days * DAY
    if sum(r[column] > start for r in timed) < min_rows:  # a sparse split: the latest rows
        start = timed[min(min_rows, len(timed)) - 1][column] - 1
    chosen = [r for r in timed if r[column] > start]
    return chosen, f"the split's last {days} day(s), at least {min_rows} rows: time > {start}"


def event_range(
    definition: DatasetDefinition, rows: Sequence[Mapping[str, Any]]
) -> tuple[int | None, int]:
    """Event times the rows can reach: from the first row minus the longest reach, to the last."""
    column = definition.timestamp_column
    times = [r[column] for r in rows if r.get(column) is not None]
    first, last = min(times), max(times)
    reach = definition.max_lookback_seconds
    for join in definition.joins:
        if hasattr(join, "max_age_seconds"):
            if join.max_age_seconds is None:
                return None, last
            reach = max(reach, join.max_age_seconds + join.lag_seconds)
    return first - reach, last


def replay(
    definition: DatasetDefinition,
    warehouse: Path,
    split_dir: Path | str,
    store_uri: str | None = None,
    days: int | None = None,
    export_dir: Path | str | None = None,
    beam_args: Sequence[str] = (),
    work_dir: Path | None = None,
) -> ReplayReport:
    """Replay, enrich, compare (see the module docstring); a fresh store by default."""
    seconds: dict[str, float] = {}
    all_rows = read_split_rows(split_dir)
    rows, subset = select_rows(definition, all_rows, days)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        store_uri = store_uri or f"sqlite:{Path(tmp) / 'online.sqlite'}"
        store = open_store(store_uri)
        store.clear()
        if not rows:
            return ReplayReport(0, len(all_rows), subset, 0, 0, [], {}, [], store=store_uri)
        started = time.perf_counter()
        start, end = event_range(definition, rows)
        events_file = Path(tmp) / "events.jsonl"
        events = export_events(definition, Path(warehouse), events_file, start, end)
        seconds["export_events"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        ingest = run_files(definition, store_uri, [str(events_file)], beam_args, keep_history=True)
        seconds["stream"] = round(time.perf_counter() - started, 3)
        if ingest.invalid_events:
            raise ValueError(f"{ingest.invalid_events} exported events were rejected by the job")
        started = time.perf_counter()
        client = [{c.name: r.get(c.name) for c in definition.client_columns} for r in rows]
        enriched = Enricher(definition, store).enrich(client)
        seconds["enrich"] = round(time.perf_counter() - started, 3)
        store.close()
    deviations, mismatches = compare_derived(definition, rows, enriched)
    report = ReplayReport(
        rows=len(rows),
        eval_rows=len(all_rows),
        subset=subset,
        events=events,
        records_written=ingest.records_written,
        columns_compared=list(definition.derived_column_names),
        max_deviation=deviations,
        mismatches=mismatches,
        store=store_uri.split(":", 1)[0],
        seconds=seconds,
    )
    if export_dir is not None:
        started = time.perf_counter()
        serving = [{c.name: r.get(c.name) for c in definition.serving_columns} for r in rows]
        deviation, failures = compare_predictions(definition, export_dir, serving, enriched)
        report.max_prediction_deviation = deviation
        report.mismatches += failures
        seconds["predict"] = round(time.perf_counter() - started, 3)
    return report


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def compare_derived(
    definition: DatasetDefinition,
    batch: Sequence[Mapping[str, Any]],
    online: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, float], list[str]]:
    """Largest relative deviation per derived column, and every mismatch (described)."""
    deviations: dict[str, float] = {}
    mismatches: list[str] = []
    time_column = definition.timestamp_column
    for column in definition.derived_columns:
        worst = 0.0
        for index, (want_row, got_row) in enumerate(zip(batch, online, strict=True)):
            want, got = want_row.get(column.name), got_row.get(column.name)
            problem = _difference(column.type, want, got)
            if problem is None:
                if column.type is ColumnType.FLOAT64 and not _missing(want):
                    scale = max(abs(want), abs(got))
                    worst = max(worst, abs(want - got) / scale if scale else 0.0)
                continue
            worst = math.inf
            mismatches.append(
                f"{column.name}: row {index} (t={want_row.get(time_column)}): batch {want!r} != "
                f"online {got!r} ({problem})"
            )
        deviations[column.name] = worst
    return deviations, mismatches


def _difference(kind: ColumnType, want: Any, got: Any) -> str | None:
    if _missing(want) or _missing(got):
        return None if _missing(want) and _missing(got) else "missing in one path only"
    if kind is ColumnType.FLOAT64:
        tolerance = FLOAT_RTOL * max(abs(want), abs(got)) + FLOAT_ATOL
        return None if abs(want - got) <= tolerance else "beyond 1e-6 relative"
    return None if want == got else "not equal"


def compare_predictions(
    definition: DatasetDefinition,
    export_dir: Path | str,
    batch: Sequence[Mapping[str, Any]],
    enriched: Sequence[Mapping[str, Any]],
) -> tuple[float, list[str]]:
    """The export's prediction on each enriched client request against the batch row's."""
    import numpy as np
    import tensorflow as tf

    from pipeline.export import EXAMPLES_INPUT, SERVING_SIGNATURE, load_export, primary_output
    from pipeline.serving.examples import ExampleEncoder

    encoder = ExampleEncoder(definition)
    serve = load_export(export_dir).signatures[SERVING_SIGNATURE]
    key = primary_output(definition)

    def predict(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        outputs = []
        for first in range(0, len(rows), 2048):
            part = [_json_row(r) for r in rows[first : first + 2048]]
            examples = tf.constant(encoder.encode_rows(part, "rows"))
            outputs.append(serve(**{EXAMPLES_INPUT: examples})[key].numpy().reshape(len(part), -1))
        return np.concatenate(outputs)

    want, got = predict(batch), predict(enriched)
    scale = np.maximum(np.maximum(np.abs(want), np.abs(got)), 1e-12)
    relative = (np.abs(want - got) / scale).max(axis=1)
    failures = [
        f"prediction: row {int(i)}: batch row {want[i].tolist()} != enriched request "
        f"{got[i].tolist()}"
        for i in np.argwhere(relative > PREDICTION_RTOL)[:20, 0]
    ]
    return float(relative.max()) if relative.size else 0.0, failures


def _json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON would carry it: NaN (missing in split files) as null."""
    return {k: None if _missing(v) else v for k, v in row.items()}
