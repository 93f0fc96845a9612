"""The standard set of checks over one run's splits, as the orchestrator and the report use it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from pipeline.validation.anomalies import (
    DEFAULT_SEVERITY,
    Check,
    SeverityConfig,
    ValidationReport,
    validate_statistics,
)

TRAIN, SERVING = "train", "serving"
SKEW = "train vs serving"

Stats = statistics_pb2.DatasetFeatureStatisticsList


def validate_splits(
    stats: Mapping[str, Stats],
    schema: schema_pb2.Schema,
    severity: SeverityConfig = DEFAULT_SEVERITY,
) -> dict[str, ValidationReport]:
    """One report per check over a run's split statistics (keys of ``stats`` are split names).

    * ``train`` and every other split except ``serving`` against the schema (TRAINING); the
      others also for drift from ``train``;
    * ``serving`` against the schema (SERVING);
    * ``train vs serving``: skew findings only (train's own schema findings are under ``train``).
    """
    train = stats.get(TRAIN)
    reports: dict[str, ValidationReport] = {}
    for name, split in stats.items():
        if name == SERVING:
            reports[name] = validate_statistics(split, schema, "SERVING", severity=severity)
        else:
            previous = train if name != TRAIN else None
            reports[name] = validate_statistics(
                split, schema, "TRAINING", previous_stats=previous, severity=severity
            )
    if train is not None and SERVING in stats:
        skew = validate_statistics(
            train, schema, "TRAINING", serving_stats=stats[SERVING], severity=severity
        )
        reports[SKEW] = dataclasses.replace(
            skew, anomalies=tuple(a for a in skew.anomalies if a.check is Check.SKEW)
        )
    return reports
