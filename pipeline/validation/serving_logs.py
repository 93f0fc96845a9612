"""Serving logs close the loop: validate the requests the server really received.

The server samples raw requests into ``<log_dir>/requests-*.tfrecord`` (uncompressed TFRecords of
raw ``tf.Example``s without the label; see :mod:`pipeline.serving.request_log`). Their statistics
are checked against the schema in the SERVING environment and compared with the training
statistics for skew, with the same checks :func:`validate_splits` runs over a run's splits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from pipeline import storage
from pipeline.serving.request_log import FILE_PATTERN
from pipeline.validation.anomalies import DEFAULT_SEVERITY, SeverityConfig, ValidationReport
from pipeline.validation.splits import SERVING, SKEW, TRAIN, validate_splits
from pipeline.validation.stats import compute_statistics_from_examples

Stats = statistics_pb2.DatasetFeatureStatisticsList


def log_file_pattern(log_dir: Path | str) -> str:
    """Glob of the complete request log files in ``log_dir`` (a path or gs:// URI); a clear
    error if there are none."""
    if not storage.isdir(log_dir):
        raise FileNotFoundError(f"serving log directory {str(log_dir)!r} does not exist")
    pattern = storage.join(log_dir, FILE_PATTERN)
    if not storage.glob(pattern):
        raise FileNotFoundError(
            f"serving log directory {str(log_dir)!r} holds no request logs ({FILE_PATTERN})"
        )
    return pattern


def serving_log_statistics(
    log_dir: Path | str, output_path: Path | str | None = None, beam_args: list[str] | None = None
) -> Stats:
    """TFDV statistics of the request logs in ``log_dir`` (kept at ``output_path`` if given)."""
    pattern = log_file_pattern(log_dir)
    if output_path is not None:
        return compute_statistics_from_examples(pattern, output_path, beam_args)
    with tempfile.TemporaryDirectory() as tmp:
        return compute_statistics_from_examples(pattern, Path(tmp) / "serving.pb", beam_args)


def serving_reports(
    train_stats: Stats,
    serving_stats: Stats,
    schema: schema_pb2.Schema,
    severity: SeverityConfig = DEFAULT_SEVERITY,
) -> dict[str, ValidationReport]:
    """``serving`` (schema, SERVING) and ``train vs serving`` (skew) reports.

    Training's own schema findings belong to the run that produced ``train_stats``, so they are
    not repeated here.
    """
    reports = validate_splits({TRAIN: train_stats, SERVING: serving_stats}, schema, severity)
    return {SERVING: reports[SERVING], SKEW: reports[SKEW]}


def combine(reports: Mapping[str, ValidationReport], environment: str) -> ValidationReport:
    """One report holding every finding and measurement of ``reports``."""
    return ValidationReport(
        environment,
        tuple(a for r in reports.values() for a in r.anomalies),
        tuple(m for r in reports.values() for m in r.measurements),
    )


def check_serving_logs(
    log_dir: Path | str,
    train_stats: Stats,
    schema: schema_pb2.Schema,
    *,
    output_stats: Path | None = None,
    severity: SeverityConfig = DEFAULT_SEVERITY,
    beam_args: list[str] | None = None,
) -> ValidationReport:
    """Validate the request logs in ``log_dir``: SERVING schema checks plus train/serving skew.

    Raises ``FileNotFoundError`` if ``log_dir`` is missing or holds no request log. The result
    does not raise on anomalies; pass it to :func:`pipeline.validation.check` to gate on it.
    """
    serving_stats = serving_log_statistics(log_dir, output_stats, beam_args)
    return combine(serving_reports(train_stats, serving_stats, schema, severity), "SERVING")
