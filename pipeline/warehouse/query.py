"""Rendering of the warehouse SQL: BigQuery Standard SQL text plus its query parameters.

The SQL lives in ``sql/*.sql`` files so it can be reviewed as SQL. Their ``{{ slot }}``s are
filled only with identifiers that passed :mod:`pipeline.warehouse.identifiers` and with
expressions built here from the dataset definition; every value is a ``@parameter``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from pipeline.dataset import ColumnType, DatasetDefinition
from pipeline.warehouse.config import HASH_BUCKETS, SplitConfig, as_utc
from pipeline.warehouse.identifiers import TableRef, validate_gcs_uri

_SLOT = re.compile(r"\{\{ ([a-z_]+) \}\}")
FLOAT_KEY_SCALE = 1_000_000  # FLOAT64 key columns enter the key as round(x * 1e6)
SAMPLE_BUCKETS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Query:
    """A BigQuery Standard SQL statement and the values of its ``@parameters``."""

    name: str
    sql: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        check_parameters(self.sql, self.params)


@dataclasses.dataclass(frozen=True)
class NamedFilter:
    """A row filter with a stable name; rows failing it are counted under that name."""

    name: str
    predicate: str  # BigQuery boolean expression over `source` columns, never NULL


# ---- template handling ---------------------------------------------------------------------


@cache
def template(name: str) -> str:
    """The text of ``sql/<name>.sql`` shipped with the package."""
    return resources.files("pipeline.warehouse").joinpath("sql").joinpath(f"{name}.sql").read_text()


def render(name: str, **slots: str) -> str:
    """Fill the ``{{ slot }}``s of a template; a missing or unused slot is a bug, so it raises."""
    text = template(name)
    wanted = set(_SLOT.findall(text))
    if wanted != set(slots):
        raise KeyError(f"template {name}: slots {sorted(wanted)} but got {sorted(slots)}")
    return _SLOT.sub(lambda m: slots[m.group(1)], text)


def check_parameters(sql: str, params: dict[str, Any]) -> None:
    """Refuse SQL whose ``@parameters`` differ from the values supplied (both directions)."""
    import sqlglot
    from sqlglot import exp

    used = {p.name for p in sqlglot.parse_one(sql, read="bigquery").find_all(exp.Parameter)}
    if used != set(params):
        raise ValueError(
            f"query parameters mismatch: SQL uses {sorted(used)}, values for {sorted(params)}"
        )


# ---- expressions rendered from the dataset definition ---------------------------------------


def key_part(name: str, column_type: ColumnType) -> str:
    """A key column as text both engines render identically (see ``sql/source.sql``)."""
    if column_type is ColumnType.STRING:
        text = name
    elif column_type is ColumnType.INT64:
        text = f"CAST({name} AS STRING)"
    elif column_type is ColumnType.FLOAT64:
        text = f"CAST(SAFE_CAST(ROUND({name} * {FLOAT_KEY_SCALE}) AS INT64) AS STRING)"
    else:
        text = f"CAST(UNIX_MICROS({name}) AS STRING)"
    return f"IFNULL({text}, '')"


def key_expression(definition: DatasetDefinition, columns: tuple[str, ...]) -> str:
    parts = [key_part(c, definition.column(c).type) for c in columns]
    return "CONCAT(" + ", '|', ".join(parts) + ")" if len(parts) > 1 else parts[0]


def output_columns(definition: DatasetDefinition) -> str:
    """The definition's columns in order; TIMESTAMPs leave as INT64 Unix seconds."""
    rendered = []
    for column in definition.columns:
        if column.type is ColumnType.TIMESTAMP:
            rendered.append(f"UNIX_SECONDS({column.name}) AS {column.name}")
        else:
            rendered.append(column.name)
    return ",\n  ".join(rendered)


def label_expression(definition: DatasetDefinition) -> str:
    label = definition.label
    return f"({label.numerator} > @label_threshold * {label.denominator})"


def named_filters(config: SplitConfig) -> list[NamedFilter]:
    """The filters of ``config`` in the order they apply; each predicate is NULL-safe."""
    definition = config.definition
    filters: list[NamedFilter] = []
    if config.start or config.end:
        ts = definition.timestamp_column
        bounds = [f"{ts} >= @start"] if config.start else []
        bounds += [f"{ts} < @end"] if config.end else []
        filters.append(NamedFilter("time_window", " AND ".join(bounds)))
    if config.require_label:
        sources = definition.label.source_columns
        filters.append(NamedFilter("label_present", _all_present(sources)))
    if config.require_non_nullable:
        required = tuple(c.name for c in definition.columns if not c.nullable)
        if required:
            filters.append(NamedFilter("required_present", _all_present(required)))
    for name in config.non_negative:
        predicate = f"{name} >= 0"
        if definition.column(name).nullable:
            predicate = f"{name} IS NULL OR {predicate}"
        filters.append(NamedFilter(f"{name}_non_negative", predicate))
    if config.sample_fraction < 1:
        sample_hash = "FARM_FINGERPRINT(CONCAT(_key, '|', @salt, '|sample'))"
        bucket = f"MOD(ABS({sample_hash}), {SAMPLE_BUCKETS})"
        predicate = f"{bucket} < @sample_fraction * {SAMPLE_BUCKETS}"
        filters.append(NamedFilter("sample", predicate))
    return [dataclasses.replace(f, predicate=f"COALESCE({f.predicate}, FALSE)") for f in filters]


def _all_present(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"{c} IS NOT NULL" for c in columns)


# ---- queries ---------------------------------------------------------------------------------


def _source_cte(config: SplitConfig) -> str:
    definition = config.definition
    columns = ",\n    ".join(definition.column_names)
    return render(
        "source",
        columns=columns,
        key_expression=key_expression(definition, config.resolved_key_columns),
        table=config.table_ref().bigquery_sql(),
    ).rstrip("\n")


def _filter_params(config: SplitConfig) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if config.start:
        params["start"] = as_utc(config.start)
    if config.end:
        params["end"] = as_utc(config.end)
    if config.sample_fraction < 1:
        params["salt"] = config.salt
        params["sample_fraction"] = float(config.sample_fraction)
    return params


def filter_counts_query(config: SplitConfig) -> Query:
    """Input row count and the rows each named filter removes (first failing filter wins)."""
    filters = named_filters(config)
    removed = []
    for index, current in enumerate(filters):
        passed = [f"{f.predicate}" for f in filters[:index]]
        condition = " AND ".join([*passed, f"NOT {current.predicate}"])
        removed.append(f",\n  COUNTIF({condition}) AS removed_{current.name}")
    sql = render("filter_counts", source_cte=_source_cte(config), removed_counts="".join(removed))
    return Query("filter_counts", sql, _filter_params(config))


def split_query(config: SplitConfig) -> Query:
    """Rows of the kept data with their split, in the definition's column layout plus ``_split``."""
    definition = config.definition
    filters = named_filters(config)
    if config.stratify_by is None:
        assignment = render("assign_hash")
    else:
        stratum = "_label" if config.stratify_by == definition.label.name else config.stratify_by
        assignment = render("assign_stratified", stratum=stratum)
    columns = output_columns(definition)
    if config.oversampling:
        output = render("output_oversampled", output_columns=columns)
    else:
        output = render("output_plain", output_columns=columns)
    sql = render(
        "split",
        source_cte=_source_cte(config),
        label_expression=label_expression(definition),
        filters="\n    AND ".join(f.predicate for f in filters) or "TRUE",
        assignment=assignment.rstrip("\n"),
        output=output.rstrip("\n"),
    )
    train_upper, eval_upper = config.split_boundaries
    params = {
        **_filter_params(config),
        "salt": config.salt,
        "label_threshold": float(definition.label.threshold),
        "hash_buckets": HASH_BUCKETS,
        "train_upper": train_upper,
        "eval_upper": eval_upper,
    }
    if config.oversampling:
        params["oversample_target"] = float(config.oversample_target)
    return Query("split", sql, params)


def select_split_query(assigned: TableRef, split: str) -> Query:
    """BigQuery: one split of the assigned table, for its own destination table."""
    sql = render("select_split", assigned_table=assigned.bigquery_sql())
    return Query(f"select_{split}", sql, {"split": split})


def export_split_query(split_table: TableRef, uri: str) -> Query:
    """BigQuery: ``EXPORT DATA`` of a split table to Parquet under a validated GCS URI."""
    validate_gcs_uri(uri.removesuffix("/part-*.parquet"))
    if not uri.endswith("/part-*.parquet"):
        raise ValueError(f"invalid export URI: {uri!r} (must end with /part-*.parquet)")
    sql = render("export_split", uri=uri, split_table=split_table.bigquery_sql())
    return Query(f"export_{split_table.table}", sql, {})


# ---- reference implementation of the split, in Python ---------------------------------------


def reference_key(definition: DatasetDefinition, columns: tuple[str, ...], row: dict) -> str:
    """The row key the SQL computes, from a split-file row (TIMESTAMP as Unix seconds).

    Documents the key format and lets tests check that a row's split is a pure function of its
    key and the salt, whatever engine ran the SQL.
    """
    parts = []
    for name in columns:
        value = row[name]
        column_type = definition.column(name).type
        if value is None or (isinstance(value, float) and math.isnan(value)):
            text = ""
        elif column_type is ColumnType.FLOAT64:
            text = str(_round_half_away(value * FLOAT_KEY_SCALE))
        elif column_type is ColumnType.TIMESTAMP:
            seconds = value.timestamp() if isinstance(value, datetime) else value
            text = str(int(seconds) * 1_000_000)
        else:
            text = str(value)
        parts.append(text)
    return "|".join(parts)


def reference_split(key: str, salt: str, ratios: tuple[float, float, float]) -> str:
    """Hash split of one key, computed as the BigQuery SQL defines it."""
    from pipeline.warehouse.fingerprint import farm_fingerprint

    bucket = abs(farm_fingerprint(f"{key}|{salt}")) % HASH_BUCKETS
    train_upper = round(ratios[0] * HASH_BUCKETS)
    eval_upper = round((ratios[0] + ratios[1]) * HASH_BUCKETS)
    if bucket < train_upper:
        return "train"
    return "eval" if bucket < eval_upper else "test"


def _round_half_away(value: float) -> int:
    magnitude = abs(value)
    whole = math.floor(magnitude)
    rounded = whole + (1 if magnitude - whole >= 0.5 else 0)
    return int(math.copysign(rounded, value)) if rounded else 0


# ---- batch scoring ---------------------------------------------------------------------------


def score_input_query(config: SplitConfig) -> Query:
    """Every row ``config``'s filters keep, with its row key: what batch scoring reads.

    The key is the split's (``config.key_columns``, default every column), so predictions join
    back to the rows and to their split assignment. Scoring configs switch the training filters
    off (:func:`pipeline.score.scoring_split_config`): a row without a label is still scored.
    """
    filters = named_filters(config)
    sql = render(
        "score_input",
        source_cte=_source_cte(config),
        output_columns=output_columns(config.definition),
        filters="\n  AND ".join(f.predicate for f in filters) or "TRUE",
    )
    return Query("score_input", sql, _filter_params(config))
