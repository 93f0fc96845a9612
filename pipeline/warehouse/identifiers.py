"""Validation of every identifier that is placed into SQL text.

Values travel as query parameters; identifiers (project, dataset, table, columns) and export
URIs cannot, so each one must match a strict pattern *and*, for columns, be a column of the dataset
definition. Anything else raises a ``ValueError`` that names the offending input, before any SQL
is rendered.
"""

from __future__ import annotations

import dataclasses
import re

from pipeline.definition import DatasetDefinition

# GCP project ids: 6-30 chars, lowercase letters, digits and hyphens, starting with a letter.
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
# Dataset and table names restricted to the portable subset (letters, digits, underscore).
_DATASET = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
# Export URIs: a GCS bucket and a plain object prefix, nothing that needs quoting in a literal.
_GCS_URI = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[A-Za-z0-9._=-]+)*/?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what}: {value!r} (must match {pattern.pattern})")
    return value


def validate_project(project: str) -> str:
    """A GCP project id, e.g. ``my-project-123``."""
    return _check(_PROJECT, project, "BigQuery project id")


def validate_dataset(dataset: str) -> str:
    """A dataset (DuckDB schema) name."""
    return _check(_DATASET, dataset, "dataset name")


def validate_table(table: str) -> str:
    """A table name."""
    return _check(_TABLE, table, "table name")


def validate_gcs_uri(uri: str) -> str:
    """A ``gs://bucket/prefix`` export location (rendered as a string literal, so kept plain)."""
    return _check(_GCS_URI, uri, "GCS URI").rstrip("/")


def validate_job_labels(labels: dict[str, str]) -> dict[str, str]:
    """BigQuery job labels: lowercase keys and values as the API requires."""
    for key, value in labels.items():
        _check(_LABEL_KEY, key, "job label key")
        _check(_LABEL_VALUE, value, f"job label value for {key!r}")
    return dict(labels)


def validate_column_name(name: str, what: str = "column") -> str:
    """A well-formed column name (the caller knows it is declared: a checked definition's)."""
    return _check(_COLUMN, name, what)


def validate_column(definition: DatasetDefinition, name: str, what: str = "column") -> str:
    """A column of ``definition``: well-formed *and* declared, or a ``ValueError``."""
    _check(_COLUMN, name, what)
    if name not in definition.column_names:
        raise ValueError(
            f"invalid {what}: {name!r} is not a column of dataset {definition.name!r} "
            f"(columns: {', '.join(definition.column_names)})"
        )
    return name


def validate_columns(
    definition: DatasetDefinition, names: tuple[str, ...], what: str = "column"
) -> tuple[str, ...]:
    """Several columns of ``definition``, each validated; an empty tuple is refused."""
    if not names:
        raise ValueError(f"invalid {what}: at least one column is required")
    return tuple(validate_column(definition, n, what) for n in names)


def quote_bigquery(identifier: str) -> str:
    """Backtick-quote an already validated identifier (BigQuery)."""
    return f"`{identifier}`"


def quote_duckdb(identifier: str) -> str:
    """Double-quote an already validated identifier (DuckDB)."""
    return f'"{identifier}"'


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A validated ``[project.]dataset.table`` reference."""

    dataset: str
    table: str
    project: str | None = None

    def __post_init__(self) -> None:
        validate_dataset(self.dataset)
        validate_table(self.table)
        if self.project is not None:
            validate_project(self.project)

    @classmethod
    def parse(cls, reference: str, project: str | None = None) -> TableRef:
        """Parse ``dataset.table`` or ``project.dataset.table``; anything else is refused."""
        if not isinstance(reference, str):
            raise ValueError(f"invalid table reference: {reference!r}")
        parts = reference.split(".")
        if len(parts) == 3 and project is None:
            return cls(project=parts[0], dataset=parts[1], table=parts[2])
        if len(parts) == 2:
            return cls(project=project, dataset=parts[0], table=parts[1])
        raise ValueError(
            f"invalid table reference: {reference!r} (expected dataset.table or "
            "project.dataset.table)"
        )

    def with_table(self, table: str) -> TableRef:
        """A sibling table in the same dataset (e.g. a per-split destination)."""
        return dataclasses.replace(self, table=table)

    def bigquery_sql(self) -> str:
        """The reference as it appears in BigQuery SQL, each part quoted."""
        parts = [p for p in (self.project, self.dataset, self.table) if p is not None]
        return ".".join(quote_bigquery(p) for p in parts)

    def duckdb_sql(self) -> str:
        """The reference as it appears in DuckDB SQL (schema.table; no project)."""
        return f"{quote_duckdb(self.dataset)}.{quote_duckdb(self.table)}"

    def dotted(self) -> str:
        """``[project.]dataset.table`` for messages and manifests."""
        return ".".join(p for p in (self.project, self.dataset, self.table) if p is not None)

    def api_id(self) -> str:
        """``project.dataset.table`` as the BigQuery client API expects it."""
        if self.project is None:
            raise ValueError(f"table {self.dataset}.{self.table} needs a project for BigQuery")
        return f"{self.project}.{self.dataset}.{self.table}"
