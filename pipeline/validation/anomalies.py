"""Validation of statistics against the committed schema, with a severity per anomaly.

Three checks run against one schema: *schema* (types, presence, domains of the data itself),
*skew* (training vs serving statistics) and *drift* (current vs previous statistics). Each
finding gets a severity from a :class:`SeverityConfig`; only BLOCKING findings stop a run.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from pipeline.validation.comparators import quantile_bin_jsd, quantile_histogram
from pipeline.validation.stats import feature_stats
from pipeline.verdicts import Verdict

DATASET = "(dataset)"  # the ``feature`` of dataset-level findings
_COMPARATOR_PREFIX = "COMPARATOR_"
_JSD_KIND = "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"
# NaN in a float feature: the transform reads it as missing, but a source that means "missing"
# should say NULL. A warning in an optional feature, blocking in a required one (see below).
NAN_KIND = "NAN_VALUES"
NAN_REQUIRED_KIND = "NAN_VALUES_IN_REQUIRED_FEATURE"


class Severity(str, enum.Enum):  # noqa: UP042 (StrEnum needs 3.11; 3.10 is supported)
    BLOCKING = "BLOCKING"
    WARNING = "WARNING"


class Check(str, enum.Enum):  # noqa: UP042
    SCHEMA = "schema"
    SKEW = "skew"
    DRIFT = "drift"


@dataclasses.dataclass(frozen=True)
class SeverityRule:
    """Severity for findings matching all of ``feature``, ``kind`` and ``check`` (glob patterns).

    ``kind`` is a TFDV anomaly reason type such as ``ENUM_TYPE_UNEXPECTED_STRING_VALUES``.
    """

    severity: Severity
    feature: str = "*"
    kind: str = "*"
    check: str = "*"

    def matches(self, feature: str, kind: str, check: Check) -> bool:
        return (
            fnmatch.fnmatchcase(feature, self.feature)
            and fnmatch.fnmatchcase(kind, self.kind)
            and fnmatch.fnmatchcase(check.value, self.check)
        )


@dataclasses.dataclass(frozen=True)
class SeverityConfig:
    """Ordered rules, first match wins; findings no rule matches get ``default``."""

    rules: tuple[SeverityRule, ...] = ()
    default: Severity = Severity.BLOCKING

    def severity_of(self, feature: str, kind: str, check: Check) -> Severity:
        for rule in self.rules:
            if rule.matches(feature, kind, check):
                return rule.severity
        return self.default

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeverityConfig:
        """``{"default": "BLOCKING", "rules": [{"check": "drift", "severity": "WARNING"}]}``."""
        unknown = set(data) - {"default", "rules"}
        if unknown:
            raise ValueError(f"unknown severity config keys: {sorted(unknown)}")
        rules = tuple(
            SeverityRule(**{**rule, "severity": Severity(rule["severity"])})
            for rule in data.get("rules", ())
        )
        return cls(rules, Severity(data.get("default", Severity.BLOCKING.value)))

    @classmethod
    def from_json(cls, path: Path) -> SeverityConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# Drift between consecutive data windows has ordinary causes (season, holidays), so a person
# reviews it; everything else, training/serving skew included, stops the run.
DEFAULT_SEVERITY = SeverityConfig(
    rules=(
        SeverityRule(Severity.WARNING, check=Check.DRIFT.value),
        SeverityRule(Severity.WARNING, kind=NAN_KIND),
    )
)


@dataclasses.dataclass(frozen=True)
class Anomaly:
    feature: str
    kind: str
    check: Check
    short_description: str
    description: str
    severity: Severity

    def __str__(self) -> str:
        return f"{self.feature} [{self.kind}, {self.check.value}]: {self.description}"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A skew or drift distance, whether or not it crossed its threshold."""

    feature: str
    check: Check
    comparator: str  # L_INFTY | JENSEN_SHANNON_DIVERGENCE
    value: float
    threshold: float

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    environment: str
    anomalies: tuple[Anomaly, ...]
    measurements: tuple[Measurement, ...] = ()

    @property
    def blocking(self) -> tuple[Anomaly, ...]:
        return tuple(a for a in self.anomalies if a.severity is Severity.BLOCKING)

    @property
    def warnings(self) -> tuple[Anomaly, ...]:
        return tuple(a for a in self.anomalies if a.severity is Severity.WARNING)

    @property
    def passed(self) -> bool:
        return not self.blocking

    def find(self, feature: str, kind: str | None = None) -> tuple[Anomaly, ...]:
        """Anomalies of ``feature`` (optionally of one ``kind``)."""
        return tuple(a for a in self.anomalies if a.feature == feature and kind in (None, a.kind))

    def to_manifest(self) -> dict[str, Any]:
        """JSON-serializable summary for the run manifest."""
        return {
            "environment": self.environment,
            "passed": self.passed,
            "blocking": len(self.blocking),
            "warnings": len(self.warnings),
            "anomalies": [_plain(dataclasses.asdict(a)) for a in self.anomalies],
            "measurements": [
                {**_plain(dataclasses.asdict(m)), "exceeded": m.exceeded} for m in self.measurements
            ],
        }

    def describe(self, anomalies: Iterable[Anomaly] | None = None) -> str:
        """One line per anomaly: severity, feature, kind, check and TFDV's numbers."""
        chosen = list(self.anomalies if anomalies is None else anomalies)
        if not chosen:
            return f"no anomalies ({self.environment})"
        lines = [f"{len(chosen)} anomalies ({self.environment}):"]
        lines += [f"  {a.severity.value:8} {a}" for a in chosen]
        return "\n".join(lines)


class ValidationFailed(Verdict):
    """Blocking anomalies were found; ``report`` has all findings."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.describe(report.blocking))


def check(report: ValidationReport) -> None:
    """Raise :class:`ValidationFailed` if ``report`` holds any blocking anomaly."""
    if report.blocking:
        raise ValidationFailed(report)


def validate_statistics(
    stats: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    environment: str,
    previous_stats: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    serving_stats: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    *,
    severity: SeverityConfig = DEFAULT_SEVERITY,
) -> ValidationReport:
    """Validate ``stats`` against ``schema`` in ``environment``; drift and skew when given.

    Each check is a separate TFDV call so that every comparator finding is attributed to skew or
    drift (TFDV names both with the same reason type). Jensen-Shannon comparators are evaluated
    by :mod:`pipeline.validation.comparators` instead of TFDV (see there why).
    """
    tfdv_schema, jsd_thresholds = _split_jsd_comparators(schema)
    result = _tfdv_validate(stats, tfdv_schema, environment, Check.SCHEMA)
    found = _tfdv_findings(result, Check.SCHEMA) + _nan_findings(stats, schema, environment)
    measurements: list[Measurement] = []
    for check_kind, other, baseline, candidate in (
        (Check.DRIFT, previous_stats, previous_stats, stats),
        (Check.SKEW, serving_stats, stats, serving_stats),
    ):
        if other is None:
            continue
        result = _tfdv_validate(stats, tfdv_schema, environment, check_kind, other)
        found += _tfdv_findings(result, check_kind)
        measurements += _tfdv_measurements(result, check_kind)
        jsd = _jsd_measurements(baseline, candidate, jsd_thresholds[check_kind], check_kind)
        measurements += jsd
        found += [_jsd_finding(m) for m in jsd if m.exceeded]
    anomalies = tuple(Anomaly(*f, severity=severity.severity_of(f[0], f[1], f[2])) for f in found)
    return ValidationReport(environment, anomalies, tuple(measurements))


# ---- TFDV calls ----------------------------------------------------------------------------

_Finding = tuple[str, str, Check, str, str]  # feature, kind, check, short, long


def _tfdv_validate(
    stats: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    environment: str,
    check_kind: Check,
    other: statistics_pb2.DatasetFeatureStatisticsList | None = None,
) -> anomalies_pb2.Anomalies:
    return tfdv.validate_statistics(
        stats,
        schema,
        environment=environment,
        previous_statistics=other if check_kind is Check.DRIFT else None,
        serving_statistics=other if check_kind is Check.SKEW else None,
    )


def _tfdv_findings(result: anomalies_pb2.Anomalies, check_kind: Check) -> list[_Finding]:
    """Reasons TFDV reports; only comparator reasons from skew/drift calls (no repeats)."""
    infos = [(name, info) for name, info in sorted(result.anomaly_info.items())]
    if result.HasField("dataset_anomaly_info"):
        infos.append((DATASET, result.dataset_anomaly_info))
    findings: list[_Finding] = []
    for name, info in infos:
        for reason in info.reason:
            kind = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
            if kind.startswith(_COMPARATOR_PREFIX) == (check_kind is not Check.SCHEMA):
                findings.append(
                    (name, kind, check_kind, reason.short_description, reason.description)
                )
    if result.data_missing and check_kind is Check.SCHEMA:
        findings.append((DATASET, "DATA_MISSING", check_kind, "No data", "The split is empty."))
    return findings


def _tfdv_measurements(result: anomalies_pb2.Anomalies, check_kind: Check) -> list[Measurement]:
    measurements = []
    for info in result.drift_skew_info:
        values = info.drift_measurements if check_kind is Check.DRIFT else info.skew_measurements
        for value in values:
            measurements.append(
                Measurement(
                    ".".join(info.path.step),
                    check_kind,
                    anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(value.type),
                    value.value,
                    value.threshold,
                )
            )
    return measurements


def _nan_findings(
    stats: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    environment: str,
) -> list[_Finding]:
    """Float features holding NaN (TFDV counts NaN as a present value and reports nothing)."""
    required = {
        f.name for f in schema.feature if f.presence.min_fraction >= 1.0
        and environment not in f.not_in_environment
    }  # fmt: skip
    findings: list[_Finding] = []
    for name, feature in sorted(feature_stats(stats).items()):
        if not feature.HasField("num_stats") or not feature.num_stats.histograms:
            continue
        nan = int(feature.num_stats.histograms[0].num_nan)
        if not nan:
            continue
        values = feature.num_stats.common_stats.num_non_missing
        kind = NAN_REQUIRED_KIND if name in required else NAN_KIND
        findings.append(
            (
                name,
                kind,
                Check.SCHEMA,
                "NaN values",
                f"{nan} of {values} values are NaN. The pipeline reads NaN as missing; the source "
                "should write NULL"
                + (", and this feature is required." if name in required else "."),
            )
        )
    return findings


# ---- Jensen-Shannon comparators ------------------------------------------------------------


def _split_jsd_comparators(
    schema: schema_pb2.Schema,
) -> tuple[schema_pb2.Schema, dict[Check, dict[str, float]]]:
    """A copy of ``schema`` without JSD comparators, and their thresholds by check and feature."""
    stripped = schema_pb2.Schema()
    stripped.CopyFrom(schema)
    thresholds: dict[Check, dict[str, float]] = {Check.SKEW: {}, Check.DRIFT: {}}
    for feature in stripped.feature:
        for field, check_kind in (
            ("skew_comparator", Check.SKEW),
            ("drift_comparator", Check.DRIFT),
        ):
            comparator = getattr(feature, field)
            if not comparator.HasField("jensen_shannon_divergence"):
                continue
            thresholds[check_kind][feature.name] = comparator.jensen_shannon_divergence.threshold
            comparator.ClearField("jensen_shannon_divergence")
            if not comparator.ListFields():
                feature.ClearField(field)
    return stripped, thresholds


def _jsd_measurements(
    baseline: statistics_pb2.DatasetFeatureStatisticsList,
    candidate: statistics_pb2.DatasetFeatureStatisticsList,
    thresholds: Mapping[str, float],
    check_kind: Check,
) -> list[Measurement]:
    base_features, new_features = feature_stats(baseline), feature_stats(candidate)
    measurements = []
    for name, threshold in sorted(thresholds.items()):
        base = quantile_histogram(base_features.get(name))
        new = quantile_histogram(new_features.get(name))
        if base is None or new is None:
            continue  # missing or non-numeric: the schema check reports it
        value = quantile_bin_jsd(base, new)
        measurements.append(
            Measurement(name, check_kind, "JENSEN_SHANNON_DIVERGENCE", value, threshold)
        )
    return measurements


def _jsd_finding(measurement: Measurement) -> _Finding:
    pair = "training and serving" if measurement.check is Check.SKEW else "previous and current"
    short = f"High Jensen-Shannon divergence between {pair}"
    long = (
        f"The Jensen-Shannon divergence between {pair} over the baseline's quantile bins is "
        f"{measurement.value:.4g}, above the threshold {measurement.threshold:g}."
    )
    return (measurement.feature, _JSD_KIND, measurement.check, short, long)


def _plain(value: Any) -> Any:
    """Enums -> their values, recursively, so ``json.dumps`` accepts the result."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
