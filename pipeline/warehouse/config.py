"""Configuration of the warehouse stage, validated before any SQL is rendered.

The dataset definition says how its rows are split and filtered (``DatasetDefinition.split``,
``.filters``); a :class:`SplitConfig` adds what belongs to one run (engine, warehouse file, data
interval, sampling) and may override the definition's split settings for an experiment.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

from pipeline.definition import SPLIT_NAMES, DatasetDefinition, DuplicatePolicy, LabelKind
from pipeline.warehouse import identifiers

__all__ = ["ENGINES", "HASH_BUCKETS", "SPLIT_NAMES", "BigQueryOptions", "SplitConfig"]

ENGINES: tuple[str, ...] = ("duckdb", "bigquery")
# Resolution of split boundaries: ratios become integer bucket boundaries out of this many.
HASH_BUCKETS = 10_000


@dataclasses.dataclass(frozen=True)
class BigQueryOptions:
    """Where the BigQuery engine reads, writes its per-split tables and exports Parquet."""

    project: str
    destination_dataset: str
    export_uri: str | None = None  # gs://bucket/prefix; one folder per split below it
    location: str = "US"
    destination_prefix: str = "split"
    labels: tuple[tuple[str, str], ...] = (("stage", "warehouse"),)

    def __post_init__(self) -> None:
        identifiers.validate_project(self.project)
        identifiers.validate_dataset(self.destination_dataset)
        identifiers.validate_table(self.destination_prefix)
        identifiers.validate_job_labels(dict(self.labels))
        if self.export_uri is not None:
            identifiers.validate_gcs_uri(self.export_uri)
        if not self.location.replace("-", "").isalnum():
            raise ValueError(f"invalid BigQuery location: {self.location!r}")


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Everything that decides which rows land in which split.

    Fields left at ``None`` take the definition's split settings. ``apply_filters`` turns the
    definition's row filters off (the label, required-column and duplicate rules always apply).
    """

    definition: DatasetDefinition
    warehouse: Path | None = None  # DuckDB file (engine duckdb)
    engine: str = "duckdb"
    table: str | None = None  # dataset.table; default: the definition's table
    ratios: tuple[float, float, float] | None = None
    salt: str | None = None
    key_columns: tuple[str, ...] | None = None
    sample_fraction: float = 1.0
    start: datetime | None = None  # inclusive, on the definition's timestamp column
    end: datetime | None = None  # exclusive
    stratify_by: str | None = None  # a column, or the label's name
    oversample_target: float | None = None  # minority / majority in train after oversampling
    duplicates: DuplicatePolicy | None = None
    require_label: bool = True
    require_non_nullable: bool = True
    apply_filters: bool = True
    bigquery: BigQueryOptions | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"invalid engine: {self.engine!r} (one of {', '.join(ENGINES)})")
        self.table_ref()
        self._check_ratios()
        self._check_fractions()
        self._check_window()
        self._check_columns()
        if self.engine == "bigquery" and self.bigquery is None:
            raise ValueError("engine 'bigquery' needs BigQueryOptions (project, dataset, ...)")
        if not isinstance(self.resolved_salt, str):
            raise ValueError(f"invalid salt: {self.salt!r} (must be a string)")
        if self.duplicates is not None:
            DuplicatePolicy(self.duplicates)

    # ---- resolved values -------------------------------------------------------------------

    @property
    def resolved_ratios(self) -> tuple[float, float, float]:
        return tuple(self.ratios) if self.ratios is not None else self.definition.split.ratios

    @property
    def resolved_salt(self) -> str:
        return self.salt if self.salt is not None else self.definition.split.salt

    @property
    def resolved_key_columns(self) -> tuple[str, ...]:
        return self.key_columns or self.definition.split.key_columns

    @property
    def resolved_stratify_by(self) -> str | None:
        return self.stratify_by or self.definition.split.stratify_by

    @property
    def resolved_oversample_target(self) -> float | None:
        if self.oversample_target is not None:
            return self.oversample_target
        return self.definition.split.oversample_target

    @property
    def resolved_duplicates(self) -> DuplicatePolicy:
        return DuplicatePolicy(self.duplicates or self.definition.split.duplicates)

    @property
    def row_filters(self):
        return self.definition.filters if self.apply_filters else ()

    @property
    def project(self) -> str | None:
        """The BigQuery project tables are qualified with (None on the embedded engine)."""
        return self.bigquery.project if self.bigquery and self.engine == "bigquery" else None

    def table_ref(self) -> identifiers.TableRef:
        """The validated source table (the BigQuery project added when that engine is used)."""
        project = self.project
        reference = self.table if self.table is not None else self.definition.table
        return identifiers.TableRef.parse(reference, project=project)

    @property
    def split_boundaries(self) -> tuple[int, int]:
        """Upper bucket bounds (exclusive) of train and eval out of ``HASH_BUCKETS``."""
        ratios = self.resolved_ratios
        train = round(ratios[0] * HASH_BUCKETS)
        return train, round((ratios[0] + ratios[1]) * HASH_BUCKETS)

    @property
    def oversampling(self) -> bool:
        return self.resolved_oversample_target is not None

    def to_dict(self) -> dict:
        """JSON-serializable view for manifests."""
        return {
            "dataset": self.definition.name,
            "engine": self.engine,
            "warehouse": str(self.warehouse) if self.engine == "duckdb" else None,
            "table": self.table_ref().dotted(),
            "ratios": dict(zip(SPLIT_NAMES, self.resolved_ratios, strict=True)),
            "salt": self.resolved_salt,
            "key_columns": list(self.resolved_key_columns),
            "sample_fraction": self.sample_fraction,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "stratify_by": self.resolved_stratify_by,
            "oversample_target": self.resolved_oversample_target,
            "duplicates": str(self.resolved_duplicates),
            "require_label": self.require_label,
            "require_non_nullable": self.require_non_nullable,
            "filters": [f.name for f in self.row_filters],
        }

    # ---- validation ------------------------------------------------------------------------

    def _check_ratios(self) -> None:
        ratios = tuple(self.resolved_ratios)
        if len(ratios) != 3 or any(not isinstance(r, int | float) for r in ratios):
            raise ValueError(f"invalid split ratios: {ratios!r} (three numbers)")
        if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] == 0:
            raise ValueError(
                f"invalid split ratios: {ratios!r} (non-negative, train > 0, sum to 1)"
            )

    def _check_fractions(self) -> None:
        if not isinstance(self.sample_fraction, int | float) or not (0 < self.sample_fraction <= 1):
            raise ValueError(f"invalid sample fraction: {self.sample_fraction!r} (in (0, 1])")
        target = self.resolved_oversample_target
        if target is not None and (not isinstance(target, int | float) or not 0 < target <= 1):
            raise ValueError(
                f"invalid oversample target: {target!r} (minority/majority ratio in (0, 1])"
            )
        if target is not None and self.definition.label.kind is not LabelKind.BINARY:
            raise ValueError("oversampling needs a binary label")

    def _check_window(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                raise ValueError(f"invalid {name}: {value!r} (a datetime)")
        if (self.start or self.end) and not self.definition.timestamp_column:
            raise ValueError(f"dataset {self.definition.name!r} has no timestamp column")
        if self.start and self.end and as_utc(self.start) >= as_utc(self.end):
            raise ValueError(
                f"invalid time window: start {self.start} is not before end {self.end}"
            )

    def _check_columns(self) -> None:
        definition = self.definition
        if self.key_columns is not None:
            identifiers.validate_columns(definition, tuple(self.key_columns), "key column")
        stratum = self.resolved_stratify_by
        if stratum is not None and stratum != definition.label.name:
            identifiers.validate_column(definition, stratum, "stratify-by column")
        if stratum == definition.label.name and definition.label.kind is LabelKind.REGRESSION:
            raise ValueError("cannot stratify by a regression label")


def default_split_config(
    definition: DatasetDefinition,
    *,
    start: str | date | datetime | None = None,
    end: str | date | datetime | None = None,
    **overrides,
) -> SplitConfig:
    """The end-to-end run's config for ``definition``, optionally limited to a data interval.

    ``start``/``end`` accept ISO dates or datetimes (strings as a DAG passes them); dates mean
    midnight UTC. ``overrides`` are any other :class:`SplitConfig` fields.
    """
    return SplitConfig(
        definition=definition, start=to_datetime(start), end=to_datetime(end), **overrides
    )


def to_datetime(value: str | date | datetime | None) -> datetime | None:
    """An aware UTC datetime from an ISO string, a date (midnight UTC) or a datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"invalid date or timestamp: {value!r} (ISO 8601)") from None
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise ValueError(f"invalid date or timestamp: {value!r}")
        value = datetime(value.year, value.month, value.day)
    return as_utc(value)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken as UTC, like BigQuery TIMESTAMP literals)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
