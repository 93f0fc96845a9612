"""The warehouse stage: filter, sample and split the raw table into Parquet split directories.

``run_split(config, output_dir)`` renders the BigQuery SQL once, hands it to the configured
engine, checks the counts add up and publishes ``output_dir/{train,eval,test}/part-*.parquet``
atomically: everything is written to a staging directory beside ``output_dir`` and renamed into
place at the end, so a failed run leaves nothing at ``output_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.definition import SPLIT_NAMES, DuplicatePolicy
from pipeline.warehouse.config import SplitConfig
from pipeline.warehouse.derived import SideTableRef, event_id_checks
from pipeline.warehouse.engine import Engine, SplitOutput, json_value
from pipeline.warehouse.query import Query, derived_tables, filter_counts_query, split_query
from pipeline.warehouse.table_check import TableProblem, check_table

MANIFEST_FILE = "warehouse_manifest.json"


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """What a warehouse run produced, and from what."""

    engine: str
    output_dir: str
    split_dirs: dict[str, str]
    split_rows: dict[str, int]
    removed_rows: dict[str, int]  # per named filter, in the order the filters apply
    input_rows: int
    duplicate_rows: int  # exact duplicates among the input (dropped only with duplicates=drop)
    sql: dict[str, str]  # statements actually run, in the engine's dialect
    source_sql: dict[str, str]  # the BigQuery Standard SQL they were rendered from
    params: dict[str, Any]
    seconds: float
    config: dict[str, Any]
    extra_columns: list[str] = dataclasses.field(default_factory=list)  # in the table, unused

    @property
    def kept_rows(self) -> int:
        return self.input_rows - sum(self.removed_rows.values())

    @property
    def splits(self) -> dict[str, str]:
        """Alias of ``split_dirs`` (split name -> directory or URI)."""
        return self.split_dirs

    @property
    def row_counts(self) -> dict[str, int]:
        """Alias of ``split_rows`` (split name -> rows written)."""
        return self.split_rows

    def to_manifest(self) -> dict[str, Any]:
        """JSON-serializable record of the run (for the run manifest)."""
        manifest = dataclasses.asdict(self)
        manifest["params"] = {k: json_value(v) for k, v in self.params.items()}
        manifest["kept_rows"] = self.kept_rows
        return manifest


def make_engine(config: SplitConfig, client: Any = None) -> Engine:
    """The engine ``config`` names (``client`` is an optional BigQuery client, for tests)."""
    if config.engine == "duckdb":
        from pipeline.warehouse.duckdb_engine import DuckDBEngine

        if config.warehouse is None:
            raise ValueError("engine 'duckdb' needs the warehouse file (SplitConfig.warehouse)")

        return DuckDBEngine(config.warehouse)
    from pipeline.warehouse.bigquery_engine import BigQueryEngine

    return BigQueryEngine(config.bigquery, client=client)


def dry_run(config: SplitConfig, engine: Engine | None = None) -> dict[str, Any]:
    """Render and check the queries without running them (BigQuery: bytes they would scan)."""
    engine = engine or make_engine(config)
    queries = [filter_counts_query(config), split_query(config)]
    report = engine.dry_run(queries)
    return {**report, "sql": {q.name: q.sql for q in queries}}


def run_split(
    config: SplitConfig,
    output_dir: Path | str,
    *,
    engine: Engine | None = None,
    overwrite: bool = False,
    db_path: Path | None = None,
) -> SplitResult:
    """Split the warehouse table into ``output_dir/{train,eval,test}``; see the module doc.

    ``db_path`` overrides ``config.warehouse`` (the DuckDB file). With the BigQuery engine
    ``output_dir`` is a ``gs://`` URI and the splits are exported there (GCS has no atomic
    rename; the per-split tables are the published artifact).
    """
    started = time.monotonic()
    if db_path is not None:
        config = dataclasses.replace(config, warehouse=Path(db_path))
    engine = engine or make_engine(config)
    counts_query, split = filter_counts_query(config), split_query(config)
    output_dir = str(output_dir).rstrip("/")
    if storage.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} exists (pass overwrite=True to replace it)")
    extra_columns = check_source(config, engine)
    counts, counts_sql = engine.filter_counts(counts_query)
    check_counts_verdicts(config, counts)
    if engine.writes_locally:
        output, staging = _write_staged(engine, config, split, output_dir)
    else:
        storage.rmtree(output_dir)  # an earlier attempt's export must not mix with this one
        output, staging = engine.write_splits(split, output_dir, config.definition), None
    queries = (counts_query, split)
    result = _result(config, engine, output_dir, output, counts, counts_sql, queries, started)
    result = dataclasses.replace(result, extra_columns=extra_columns)
    if staging is None:
        _check_counts(config, result)
        return result
    try:
        _check_counts(config, result)
        _write_manifest(staging, result)
        _publish(staging, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def check_source(config: SplitConfig, engine: Engine) -> list[str]:
    """The source table, and every side table a derived column reads, fit the definition (a
    :class:`TableProblem` otherwise); the source table's extra columns."""
    table = config.table_ref()
    extra = check_table(config.definition, table.dotted(), engine.describe_table(table))
    for side in event_side_tables(config):
        check_table(config.definition, side.dotted(), engine.describe_table(side.ref), side.columns)
    return extra


def event_side_tables(config: SplitConfig) -> list[SideTableRef]:
    """The side tables the definition's window features and joins read, each once."""
    definition, tables = config.definition, derived_tables(config)
    names = [w.events for w in definition.windows if w.events] + [j.table for j in definition.joins]
    unique = list(dict.fromkeys(names))
    return [
        SideTableRef(tables.ref(definition, n), definition.side_table(n).columns) for n in unique
    ]


def check_counts_verdicts(config: SplitConfig, counts: dict[str, int]) -> None:
    """Verdicts the filter counts decide: an empty table, duplicates the dataset forbids."""
    table = config.table_ref().dotted()
    if counts["input_rows"] == 0:
        raise TableProblem(f"table {table} is empty")
    for check in event_id_checks(config.definition, derived_tables(config)):
        ids, versions = counts[check.ids_name], counts[check.versions_name]
        if ids != versions:
            raise TableProblem(
                f"{check.owner}: table {check.table.dotted()} has event ids with two versions "
                f"({versions} versions of {ids} ids; the id is "
                f"{', '.join(c.name for c in check.id_columns)}): an id must stand for one "
                "event, since the online store keeps one version per id (copies are fine)"
            )
    duplicates = counts["duplicate_rows"]
    if duplicates and config.resolved_duplicates is DuplicatePolicy.BLOCK:
        raise TableProblem(
            f"table {table} has {duplicates} exact duplicate rows (of {counts['input_rows']}); "
            "the dataset's duplicates policy is 'block' (keep or drop them with --duplicates)"
        )


def _write_staged(
    engine: Engine, config: SplitConfig, query: Query, output_dir: str
) -> tuple[SplitOutput, Path]:
    """Run the split into a fresh local staging dir; final paths in the output.

    The staging dir is beside ``output_dir`` (one rename publishes it) or, for a remote
    ``output_dir``, a local temporary dir that :func:`_publish` uploads.
    """
    if storage.is_remote(output_dir):
        staging = Path(tempfile.mkdtemp(prefix="warehouse-split-"))
    else:
        parent = Path(output_dir).parent
        parent.mkdir(parents=True, exist_ok=True)
        storage.remove_leftovers(output_dir)  # a killed attempt's staging copy
        staging = parent / f".{Path(output_dir).name}.staging-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
    try:
        output = engine.write_splits(query, str(staging), config.definition)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final_dirs = {split: storage.join(output_dir, split) for split in output.split_dirs}
    return dataclasses.replace(output, split_dirs=final_dirs), staging


def _result(
    config: SplitConfig,
    engine: Engine,
    output_dir: Path | str,
    output: SplitOutput,
    counts: dict[str, int],
    counts_sql: str,
    queries: tuple[Query, Query],
    started: float,
) -> SplitResult:
    removed = {k.removeprefix("removed_"): v for k, v in counts.items() if k.startswith("removed_")}
    params: dict[str, Any] = {}
    for query in queries:
        params.update(query.params)
    return SplitResult(
        engine=engine.name,
        output_dir=str(output_dir).rstrip("/"),
        split_dirs={s: output.split_dirs[s] for s in SPLIT_NAMES},
        split_rows={s: output.split_rows[s] for s in SPLIT_NAMES},
        removed_rows=removed,
        input_rows=counts["input_rows"],
        duplicate_rows=counts["duplicate_rows"],
        sql={queries[0].name: counts_sql, **output.executed},
        source_sql={q.name: q.sql for q in queries},
        params=params,
        seconds=round(time.monotonic() - started, 3),
        config=config.to_dict(),
    )


def _check_counts(config: SplitConfig, result: SplitResult) -> None:
    """Without oversampling every kept row is in exactly one split; anything else is a bug."""
    if config.oversampling:
        return
    written = sum(result.split_rows.values())
    if written != result.kept_rows:
        raise RuntimeError(
            f"split rows {written} != input {result.input_rows} - removed "
            f"{sum(result.removed_rows.values())}: the filters and the split disagree"
        )


def _write_manifest(staging: Path, result: SplitResult) -> None:
    """What the splits are and how they were made, beside them: the same bytes for the same
    inputs (no timings, no absolute locations; the run manifest has those)."""
    record = result.to_manifest()
    for volatile in ("seconds", "output_dir"):
        record.pop(volatile)
    record["split_dirs"] = {split: split for split in record["split_dirs"]}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    (staging / MANIFEST_FILE).write_text(text)


def _publish(staging: Path, output_dir: str, overwrite: bool) -> None:
    """Publish the staging dir as ``output_dir`` (replacing an old one only when asked)."""
    if storage.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} appeared while the split was running")
    if not storage.is_remote(output_dir):
        storage.publish_dir(staging, output_dir)
        return
    remote_staging = storage.staging_dir(output_dir)
    try:
        storage.copytree(staging, remote_staging)
        storage.publish_dir(remote_staging, output_dir)
    finally:
        storage.rmtree(remote_staging)
        shutil.rmtree(staging, ignore_errors=True)
