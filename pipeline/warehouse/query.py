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

from pipeline.definition import (
    AtLeast,
    AtMost,
    BinaryLabel,
    ColumnType,
    DatasetDefinition,
    DuplicatePolicy,
    MultiClassLabel,
    RegressionLabel,
    RequirePresent,
)
from pipeline.warehouse.config import HASH_BUCKETS, SplitConfig, as_utc
from pipeline.warehouse.derived import (
    Tables,
    derived_ctes,
    derived_rows,
    event_id_count_columns,
)
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
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    return key_text([(c, definition.column(c).type) for c in columns])


def key_text(columns: list[tuple[str, ColumnType]]) -> str:
    """Columns as one text, ``|``-separated, rendered alike by both engines (see key_part)."""
    parts = [key_part(name, column_type) for name, column_type in columns]
    return "CONCAT(" + ", '|', ".join(parts) + ")" if len(parts) > 1 else parts[0]


def output_columns(definition: DatasetDefinition, with_label: bool = True) -> str:
    """The definition's columns in order (raw, then derived), cast to their types (a narrower
    integer or an integer FLOAT64 column in the warehouse still leaves as the split files' type;
    TIMESTAMPs leave as INT64 Unix seconds), then the label computed by
    :func:`label_value_expression`."""
    rendered = []
    for column in definition.row_columns:
        if column.type is ColumnType.TIMESTAMP:
            rendered.append(f"UNIX_SECONDS({column.name}) AS {column.name}")
        else:
            rendered.append(f"CAST({column.name} AS {column.type.value}) AS {column.name}")
    if with_label:
        rendered.append(f"_label_value AS {definition.label.name}")
    return ",\n  ".join(rendered)


def label_value_expression(definition: DatasetDefinition) -> str:
    """The label the model trains on, computed once, here, in double precision on the
    warehouse's own values: 0/1 (binary), the class id (multi-class), the target (regression,
    ``LN(1 + y)`` with ``log1p``). The transform reads it from the split files; recomputing it
    in TensorFlow from float32 copies would flip rows exactly at a threshold (a 20% tip)."""
    label = definition.label
    expression, _ = label_expression(definition)
    if isinstance(label, BinaryLabel):
        return f"CAST(IF({expression}, 1, 0) AS INT64)"
    if isinstance(label, MultiClassLabel):
        return f"CAST({expression} AS INT64)"
    if label.log1p:
        return f"LN(1 + CAST({label.column} AS FLOAT64))"
    return f"CAST({label.column} AS FLOAT64)"


def row_text_expression(definition: DatasetDefinition) -> str:
    """Every column as text (floats to 1e-6): equal texts are exact duplicate rows."""
    return key_expression(definition, definition.column_names)


def label_expression(definition: DatasetDefinition) -> tuple[str, dict[str, Any]]:
    """``_label``: the binary rule (BOOL) or the class id (INT64); NULL for regression.

    Only strata and oversampling read it; rows whose label cannot be computed are removed by
    the ``label_present`` / ``label_valid`` filters before.
    """
    label = definition.label
    if isinstance(label, BinaryLabel):
        bound = "@label_threshold"
        if label.scale_column is not None:
            bound = f"@label_threshold * {label.scale_column}"
        return f"({label.column} {label.op} {bound})", {"label_threshold": float(label.threshold)}
    if isinstance(label, MultiClassLabel) and label.boundaries is None:
        params = {f"label_class_{i}": name for i, name in enumerate(label.classes)}
        cases = " ".join(f"WHEN @label_class_{i} THEN {i}" for i in range(len(label.classes)))
        return f"(CASE {label.column} {cases} END)", params
    if isinstance(label, MultiClassLabel):
        params = {f"label_boundary_{i}": float(b) for i, b in enumerate(label.boundaries)}
        terms = [f"IF({label.column} > @label_boundary_{i}, 1, 0)" for i in range(len(params))]
        return "(" + " + ".join(terms) + ")", params
    return "CAST(NULL AS INT64)", {}


def present(definition: DatasetDefinition, column: str) -> str:
    """``column`` carries a value: not NULL, and for FLOAT64 not NaN (NaN means missing)."""
    if definition.column(column).type is ColumnType.FLOAT64:
        return f"({column} IS NOT NULL AND NOT IS_NAN({column}))"
    return f"{column} IS NOT NULL"


def _missing(definition: DatasetDefinition, column: str) -> str:
    if definition.column(column).type is ColumnType.FLOAT64:
        return f"{column} IS NULL OR IS_NAN({column})"
    return f"{column} IS NULL"


def _label_filters(definition: DatasetDefinition) -> list[NamedFilter]:
    label = definition.label
    filters = [NamedFilter("label_present", _all_present(definition, label.source_columns))]
    if isinstance(label, MultiClassLabel) and label.boundaries is None:
        params = {f"valid_class_{i}": name for i, name in enumerate(label.classes)}
        choices = ", ".join(f"@{name}" for name in params)
        filters.append(NamedFilter("label_valid", f"{label.column} IN ({choices})", params))
    if isinstance(label, RegressionLabel) and label.log1p:
        filters.append(NamedFilter("label_valid", f"{label.column} > -1"))
    return filters


def _row_filter(definition: DatasetDefinition, row_filter) -> NamedFilter:
    """A definition filter as SQL; missing values (NULL, NaN) pass bound filters."""
    if isinstance(row_filter, RequirePresent):
        return NamedFilter(row_filter.name, _all_present(definition, row_filter.columns))
    param = f"{row_filter.name}_bound"
    if isinstance(row_filter, AtLeast):
        comparison, bound = ">=", float(row_filter.minimum)
    elif isinstance(row_filter, AtMost):
        comparison, bound = "<=", float(row_filter.maximum)
    else:
        raise TypeError(f"unknown row filter {row_filter!r}")
    column = row_filter.column
    predicate = f"{_missing(definition, column)} OR {column} {comparison} @{param}"
    return NamedFilter(row_filter.name, predicate, {param: bound})


def named_filters(config: SplitConfig) -> list[NamedFilter]:
    """The filters of ``config`` in the order they apply; each predicate is NULL-safe."""
    definition = config.definition
    filters: list[NamedFilter] = []
    if config.start or config.end:
        ts = definition.timestamp_column
        bounds = [f"{ts} >= @start"] if config.start else []
        bounds += [f"{ts} < @end"] if config.end else []
        params = {n: as_utc(getattr(config, n)) for n in ("start", "end") if getattr(config, n)}
        filters.append(NamedFilter("time_window", " AND ".join(bounds), params))
    # The dataset's own filters come first: a cancelled flight is "not_cancelled", not a row
    # whose label happens to be missing.
    filters += [_row_filter(definition, f) for f in config.row_filters]
    if config.require_label:
        filters += _label_filters(definition)
    if config.require_non_nullable:
        required = tuple(c.name for c in definition.columns if not c.nullable)
        if required:
            filters.append(NamedFilter("required_present", _all_present(definition, required)))
    if config.resolved_duplicates is DuplicatePolicy.DROP:
        filters.append(NamedFilter("duplicate", "_copy_number = 1"))
    if config.sample_fraction < 1:
        sample_hash = "FARM_FINGERPRINT(CONCAT(_key, '|', @salt, '|sample'))"
        bucket = f"MOD(ABS({sample_hash}), {SAMPLE_BUCKETS})"
        predicate = f"{bucket} < @sample_fraction * {SAMPLE_BUCKETS}"
        params = {"salt": config.resolved_salt, "sample_fraction": float(config.sample_fraction)}
        filters.append(NamedFilter("sample", predicate, params))
    return [dataclasses.replace(f, predicate=f"COALESCE({f.predicate}, FALSE)") for f in filters]


def _all_present(definition: DatasetDefinition, columns: tuple[str, ...]) -> str:
    return " AND ".join(present(definition, c) for c in columns)


# ---- queries ---------------------------------------------------------------------------------


def _source_cte(
    config: SplitConfig,
    with_copy_number: bool = False,
    with_derived: bool = True,
    derived_stored: bool = False,
) -> str:
    """The ``source`` CTE: the raw columns, the derived ones (``with_derived``, after the CTEs
    that compute them; ``derived_stored``: read as they are from a table that holds them, such
    as split files), the row key, the row text (exact duplicates share it) and, when duplicates
    are dropped, each row's copy number among its duplicates."""
    definition = config.definition
    row_text = row_text_expression(definition)
    identity = f",\n    {row_text} AS _row_text"
    if with_copy_number:
        window = f"PARTITION BY {row_text} ORDER BY {row_text}"
        identity += f",\n    ROW_NUMBER() OVER ({window}) AS _copy_number"
    derived = with_derived and definition.has_derived_columns and not derived_stored
    columns = definition.row_columns if derived or derived_stored else definition.columns
    tables = derived_tables(config)
    ctes = derived_ctes(definition, tables) if derived else []
    source = render(
        "source",
        columns=",\n    ".join(c.name for c in columns),
        key_expression=key_expression(definition, config.resolved_key_columns),
        row_identity=identity,
        rows=derived_rows(definition, tables) if derived else tables.main.bigquery_sql(),
    ).rstrip("\n")
    return ",\n".join([*ctes, source])


def derived_tables(config: SplitConfig) -> Tables:
    """The run's main table and the definition's side tables, as the derived columns read them."""
    return Tables(config.table_ref(), config.project)


def _params_of(filters: list[NamedFilter]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for row_filter in filters:
        params.update(row_filter.params)
    return params


def _drops_duplicates(config: SplitConfig) -> bool:
    return config.resolved_duplicates is DuplicatePolicy.DROP


def filter_counts_query(config: SplitConfig) -> Query:
    """Input rows, exact duplicate rows, and the rows each named filter removes (a row is
    charged to the first filter it fails)."""
    filters = named_filters(config)
    removed = []
    for index, current in enumerate(filters):
        passed = [f"{f.predicate}" for f in filters[:index]]
        condition = " AND ".join([*passed, f"NOT {current.predicate}"])
        removed.append(f",\n  COUNTIF({condition}) AS removed_{current.name}")
    sql = render(
        "filter_counts",
        source_cte=_source_cte(
            config, with_copy_number=_drops_duplicates(config), with_derived=False
        ),
        removed_counts="".join(removed),
        event_id_counts=event_id_count_columns(config.definition, derived_tables(config)),
    )
    return Query("filter_counts", sql, _params_of(filters))


def split_query(config: SplitConfig) -> Query:
    """Rows of the kept data with their split, in the definition's column layout plus ``_split``."""
    definition = config.definition
    filters = named_filters(config)
    stratify_by = config.resolved_stratify_by
    if stratify_by is None:
        assignment = render("assign_hash")
    else:
        stratum = "_label" if stratify_by == definition.label.name else stratify_by
        assignment = render("assign_stratified", stratum=stratum)
    columns = output_columns(definition)
    if config.oversampling:
        output = render("output_oversampled", output_columns=columns)
    else:
        output = render("output_plain", output_columns=columns)
    label_sql, label_params = label_expression(definition)
    sql = render(
        "split",
        source_cte=_source_cte(config, with_copy_number=_drops_duplicates(config)),
        label_expression=label_sql,
        label_value=label_value_expression(definition),
        filters="\n    AND ".join(f.predicate for f in filters) or "TRUE",
        assignment=assignment.rstrip("\n"),
        output=output.rstrip("\n"),
    )
    train_upper, eval_upper = config.split_boundaries
    params = {
        **_params_of(filters),
        **label_params,
        "salt": config.resolved_salt,
        "hash_buckets": HASH_BUCKETS,
        "train_upper": train_upper,
        "eval_upper": eval_upper,
    }
    if config.oversampling:
        params["oversample_target"] = float(config.resolved_oversample_target)
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


def score_input_query(config: SplitConfig, derived_stored: bool = False) -> Query:
    """Every row ``config``'s filters keep, with its row key: what batch scoring reads.

    The key is the split's (``config.resolved_key_columns``, the definition's split key by
    default), so predictions join back to the rows and to their split assignment. Scoring
    configs switch the training filters off (:meth:`pipeline.score.ScoreConfig.split_config`): a
    row without a label is still scored. ``derived_stored``: the table already holds the
    derived columns (split files): they are read, not computed again from its rows alone.
    """
    filters = named_filters(config)
    sql = render(
        "score_input",
        source_cte=_source_cte(config, derived_stored=derived_stored),
        output_columns=output_columns(config.definition, with_label=False),
        filters="\n  AND ".join(f.predicate for f in filters) or "TRUE",
    )
    return Query("score_input", sql, _params_of(filters))
