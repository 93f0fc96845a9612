"""Batch scoring: every row of a warehouse table through the exported model, back as a table.

The batch side of serving (what TFX's BulkInferrer does)::

    python -m pipeline.score [--dataset NAME] --model models/<model> [--db FILE | --split-dir DIR]
        [--output-table DATASET.TABLE] [--beam-runner portable]

1. the warehouse's score query (BigQuery SQL, ``sql/score_input.sql``) selects the rows (the
   whole table, or a time window) with the row key the hash split uses, and exports them to
   Parquet: DuckDB locally, BigQuery + ``EXPORT DATA`` to GCS in production;
2. a Beam job (:mod:`pipeline.score.job`) reads Arrow batches, scores each batch with one call of
   the export's ``serving_default`` inside Beam's ``RunInference`` (:mod:`pipeline.score.model`)
   and writes prediction shards to a staging directory;
3. once the job succeeded and wrote exactly one prediction per input row, the shards replace the
   output table in one step (:mod:`pipeline.score.duckdb_tables`,
   :mod:`pipeline.score.bigquery_tables`); a failure anywhere leaves the old table as it was.

The output table has ``row_key`` (and any declared ``--key-column``), ``model_version`` (the
version scored with: a model base's newest, or the export directory's) and one column per output
of the signature.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import storage
from pipeline.arrow_io import list_batch_schema
from pipeline.definition import DatasetDefinition
from pipeline.score.model import MODEL_VERSION, ROW_KEY, ModelRef, output_fields, resolve_model
from pipeline.warehouse.config import BigQueryOptions, SplitConfig, to_datetime
from pipeline.warehouse.identifiers import TableRef, validate_columns
from pipeline.warehouse.query import score_input_query
from pipeline.warehouse.schema import split_file_arrow_type

DEFAULT_BATCH_SIZE = 8192


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """What to score, with which model, and where the predictions go."""

    definition: DatasetDefinition
    model: str  # an export directory or a model base
    model_version: int | None = None  # default: the export's, or the base's newest
    engine: str = "duckdb"  # or "bigquery"
    warehouse: Path | None = None  # duckdb: the warehouse file (input, and output by default)
    split_dir: Path | None = None  # duckdb: score a split directory's Parquet instead
    table: str | None = None  # source dataset.table (default: the definition's)
    output_table: str | None = None  # default: <source dataset>.<source table>_predictions
    output_db: Path | None = None  # duckdb: where the output table goes (default: warehouse)
    key_columns: tuple[str, ...] | None = None  # default: the split's key (every column)
    start: Any = None
    end: Any = None
    batch_size: int = DEFAULT_BATCH_SIZE
    bq_project: str | None = None
    bq_location: str = "US"
    staging_uri: str | None = None  # bigquery: gs:// prefix for the exported rows and shards
    labels: tuple[tuple[str, str], ...] = (("stage", "batch_scoring"),)

    def __post_init__(self) -> None:
        if self.engine not in ("duckdb", "bigquery"):
            raise ValueError(f"invalid engine {self.engine!r} (duckdb or bigquery)")
        if self.engine == "duckdb" and (self.warehouse is None) == (self.split_dir is None):
            raise ValueError("scoring on duckdb reads a warehouse file or a split directory")
        if self.engine == "duckdb" and self.output_db is None and self.warehouse is None:
            raise ValueError("scoring a split directory needs an output database (--output-db)")
        if self.engine == "bigquery" and not (self.bq_project and self.staging_uri):
            raise ValueError("scoring on bigquery needs a project and a gs:// staging URI")
        if self.key_columns:
            validate_columns(self.definition, self.key_columns, "key column")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")

    def output_ref(self) -> TableRef:
        """The prediction table: ``--output-table``, or ``<source table>_predictions`` beside it."""
        project = self.bq_project if self.engine == "bigquery" else None
        if self.output_table:
            explicit = TableRef.parse(self.output_table)
            return explicit if explicit.project else TableRef.parse(self.output_table, project)
        source = TableRef.parse(self.table or self.definition.table)
        return TableRef(source.dataset, f"{source.table}_predictions", project)

    def split_config(self) -> SplitConfig:
        """The warehouse config that selects the rows: the split's key, no training filters."""
        bigquery = None
        if self.engine == "bigquery":  # the split's BigQuery settings: where its jobs run
            output = self.output_ref()
            bigquery = BigQueryOptions(
                project=self.bq_project,
                destination_dataset=output.dataset,
                location=self.bq_location,
            )
        return SplitConfig(
            definition=self.definition,
            engine=self.engine,
            table=self.table,
            key_columns=self.key_columns,
            start=to_datetime(self.start),
            end=to_datetime(self.end),
            require_label=False,
            require_non_nullable=False,
            apply_filters=False,
            bigquery=bigquery,
        )


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    table: str
    model_version: int
    export_dir: str
    input_rows: int
    rows_written: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prediction_schema(config: ScoreConfig, model: ModelRef) -> pa.Schema:
    """Key columns, ``model_version``, then one column per output of the signature."""
    keys = [pa.field(ROW_KEY, pa.string())]
    for name in config.key_columns or ():
        column_type = config.definition.column(name).type
        keys.append(pa.field(name, pa.type_for_alias(split_file_arrow_type(column_type))))
    outputs = output_fields(model.export_dir)
    clashes = {f.name for f in keys} & {f.name for f in outputs} | (
        {MODEL_VERSION} & {f.name for f in outputs}
    )
    if clashes:
        raise ValueError(f"the export's outputs {sorted(clashes)} clash with the key columns")
    return pa.schema([*keys, pa.field(MODEL_VERSION, pa.int64()), *outputs])


def score_table(
    config: ScoreConfig, beam_args: list[str], bigquery_client: Any = None
) -> ScoreResult:
    """Score every selected row and publish the prediction table; see the module doc."""
    from pipeline.score.job import run_scoring_job
    from pipeline.score.model import ExportModelHandler

    started = time.perf_counter()
    model = resolve_model(config.model, config.model_version)
    schema = prediction_schema(config, model)
    definition = config.definition
    serving_schema = list_batch_schema(
        definition, tuple(c.name for c in definition.serving_columns)
    )
    handler = ExportModelHandler(model, serving_schema, schema)
    columns = list(dict.fromkeys([ROW_KEY, *(config.key_columns or ()), *serving_schema.names]))
    # Split files hold the derived columns their split computed over the whole warehouse.
    query = score_input_query(config.split_config(), derived_stored=config.split_dir is not None)
    target = config.output_ref()
    with _staging(config) as staging:
        if config.engine == "bigquery":
            from pipeline.score.bigquery_tables import BigQueryScoringTables

            tables = BigQueryScoringTables(
                target, config.bq_location, dict(config.labels), bigquery_client
            )
            pattern, input_rows = tables.export_input(query, storage.join(staging, "input"))
        else:
            from pipeline.score import duckdb_tables

            pattern, input_rows = duckdb_tables.export_input(
                query, Path(staging) / "input", warehouse=config.warehouse,
                split_dir=config.split_dir, definition=definition,
            )  # fmt: skip
        shards_dir = storage.join(staging, "predictions")
        written = 0  # no rows: no job (its Parquet source would find no files)
        if input_rows:
            written = run_scoring_job(
                pattern, shards_dir, handler, schema, columns, beam_args, config.batch_size
            )
        shards = _shards(shards_dir, schema)
        if written != input_rows:
            raise RuntimeError(f"scored {written} of {input_rows} rows; nothing was published")
        if config.engine == "bigquery":
            tables.publish(storage.join(shards_dir, "part-*.parquet"), input_rows)
        else:
            output_db = config.output_db or config.warehouse
            duckdb_tables.publish(output_db, target, shards, input_rows)
    seconds = time.perf_counter() - started
    return ScoreResult(
        target.dotted(), model.version, model.export_dir, input_rows, written, round(seconds, 3)
    )


def _shards(directory: str, schema: pa.Schema) -> list[str]:
    """The job's shards; one empty shard when there were no rows, so a table still appears."""
    import pyarrow.parquet as pq

    shards = storage.glob(storage.join(directory, "part-*.parquet"))
    if not shards:
        path = storage.join(directory, "part-empty.parquet")
        with storage.open_write(path) as handle:
            pq.write_table(schema.empty_table(), handle)
        shards = [path]
    return shards


@contextlib.contextmanager
def _staging(config: ScoreConfig) -> Iterator[str]:
    """A fresh staging location for one run (local, or under the gs:// staging URI), removed at
    the end whatever happened."""
    if config.engine == "bigquery":
        location = storage.join(config.staging_uri, f"score-{uuid.uuid4().hex[:12]}")
    else:
        location = tempfile.mkdtemp(prefix="score-")
    try:
        yield location
    finally:
        storage.rmtree(location)
