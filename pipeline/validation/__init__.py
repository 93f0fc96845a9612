"""Validation stage: TFDV statistics on Beam, schema checks, training/serving skew and drift.

Public API (also re-exported by :mod:`pipeline.validation`)::

    stats = compute_statistics("splits/train/part-*.parquet", Path("stats/train.pb"))
    report = validate_statistics(stats, load_schema(get_dataset(name)), "TRAINING",
                                 previous_stats=..., serving_stats=...)
    check(report)  # raises ValidationFailed on blocking anomalies
    check(check_serving_logs("logs/", stats, schema))  # served requests
"""

from pipeline.validation.anomalies import (
    DEFAULT_SEVERITY,
    Anomaly,
    Check,
    Measurement,
    Severity,
    SeverityConfig,
    SeverityRule,
    ValidationFailed,
    ValidationReport,
    check,
    validate_statistics,
)
from pipeline.validation.schema import (
    SchemaChange,
    diff_schemas,
    infer_candidate_schema,
    load_schema,
    schema_path,
)
from pipeline.validation.serving_logs import check_serving_logs
from pipeline.validation.splits import validate_splits
from pipeline.validation.stats import (
    compute_split_statistics,
    compute_statistics,
    compute_statistics_from_examples,
    load_statistics,
)

__all__ = [
    "DEFAULT_SEVERITY",
    "Anomaly",
    "Check",
    "Measurement",
    "SchemaChange",
    "Severity",
    "SeverityConfig",
    "SeverityRule",
    "ValidationFailed",
    "ValidationReport",
    "check",
    "check_serving_logs",
    "compute_split_statistics",
    "compute_statistics",
    "compute_statistics_from_examples",
    "diff_schemas",
    "infer_candidate_schema",
    "load_schema",
    "load_statistics",
    "schema_path",
    "validate_splits",
    "validate_statistics",
]
