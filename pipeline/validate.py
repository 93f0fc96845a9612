"""Entry point of the validation stage: ``python -m pipeline.validate`` and its Python API.

The implementation lives in :mod:`pipeline.validation`; this module keeps the stage's name short
for the orchestrator (``from pipeline.validate import compute_statistics, ...``).
"""

import sys

from pipeline.validation import (
    DEFAULT_SEVERITY,
    Anomaly,
    Check,
    Measurement,
    SchemaChange,
    Severity,
    SeverityConfig,
    SeverityRule,
    ValidationFailed,
    ValidationReport,
    check,
    check_serving_logs,
    compute_statistics,
    compute_statistics_from_examples,
    diff_schemas,
    infer_candidate_schema,
    load_schema,
    load_statistics,
    schema_path,
    validate_splits,
    validate_statistics,
)
from pipeline.validation.cli import main

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
    "compute_statistics",
    "compute_statistics_from_examples",
    "diff_schemas",
    "infer_candidate_schema",
    "load_schema",
    "load_statistics",
    "main",
    "schema_path",
    "validate_splits",
    "validate_statistics",
]

if __name__ == "__main__":
    sys.exit(main())
