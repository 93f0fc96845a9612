"""The validation report's charts: what each one compares, derived from TFDV statistics.

* Numeric features: the share of each split's values per **common bin**. The bins are the
  baseline split's (train's) quantile boundaries, so each holds about a tenth of the baseline,
  and every split's mass per bin is read off its own quantile histogram (values spread uniformly
  inside a bucket). These are the very masses the Jensen-Shannon comparator measures
  (:mod:`pipeline.validation.comparators`), so the chart shows what the distance summarizes; and
  a long tail (a 700 dollar fare) only widens the outer bin instead of squashing the rest of the
  chart, which equal-width bins over the pooled range would do.
* String features: the share of each split's values taken by the most frequent values (the
  baseline's first, then any value frequent in another split, such as a new payment type), and
  the rest as one bar. Frequencies come from the rank histogram, which lists more values than
  ``top_values``; a value it does not list is 0 when it lists every distinct value of the split,
  and unknown otherwise.
* Every feature: the share of each split's examples without a value.
* Skew and drift: each measured distance against its threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline import charts
from pipeline.validation.anomalies import Measurement, ValidationReport
from pipeline.validation.comparators import bin_masses, quantile_edges, quantile_histogram

Feature = statistics_pb2.FeatureNameStatistics
OTHER = "(all other values)"
TOP_VALUES = 8
_COMPARATOR_NAMES = {"L_INFTY": "L∞", "JENSEN_SHANNON_DIVERGENCE": "JSD"}


@dataclasses.dataclass(frozen=True)
class Binned:
    """Shares of each split's values per common bin ``(edges[i], edges[i + 1]]``."""

    baseline: str
    edges: list[float]
    shares: dict[str, list[float] | None]  # None: the split has no numeric values here
    labels: list[str] | None = None  # the integers each bin holds, for small integer ranges


@dataclasses.dataclass(frozen=True)
class TopValues:
    """Shares of each split's values per value; the last category is :data:`OTHER` unless the
    values shown are all there are."""

    categories: list[str]
    shares: dict[str, list[float | None] | None]  # None: the split has no string values here


def numeric_bins(per_split: Mapping[str, Feature | None]) -> Binned | None:
    """Common bins over the baseline's quantiles (train's, else the first split's)."""
    histograms = {split: quantile_histogram(f) for split, f in per_split.items()}
    present = [split for split, h in histograms.items() if h is not None]
    if not present:
        return None
    baseline = "train" if "train" in present else present[0]
    inner = quantile_edges(histograms[baseline])
    low = min(per_split[s].num_stats.min for s in present)
    high = max(per_split[s].num_stats.max for s in present)
    edges = [float(low), *map(float, inner), float(high)]
    shares = {
        split: None if h is None else [float(m) for m in bin_masses(h, inner)]
        for split, h in histograms.items()
    }
    binned = _trim_empty_outer_bins(Binned(baseline, edges, shares))
    if per_split[baseline].type == Feature.INT:
        binned = dataclasses.replace(binned, labels=_integer_labels(binned.edges))
    return binned


def _integer_labels(edges: list[float]) -> list[str] | None:
    """What each bin of an integer feature holds: "7" for [7, 7] or (6, 7], "9-15" for (8, 15].

    Only for integral edges of a small range and short numbers (not census tract ids);
    elsewhere the edges label the axis.
    """
    if any(e != int(e) for e in edges) or edges[-1] - edges[0] > 1000 or abs(edges[-1]) >= 1e5:
        return None
    bounds = [int(e) for e in edges]
    labels = []
    for index in range(len(bounds) - 1):
        first = bounds[0] if index == 0 else bounds[index] + 1
        last = bounds[index + 1]
        labels.append(str(last) if first >= last else f"{first}\u2013{last}")
    return labels


def _trim_empty_outer_bins(binned: Binned) -> Binned:
    """Drop first/last bins no split has mass in (e.g. above an integer feature's largest value)."""
    known = [s for s in binned.shares.values() if s is not None]
    bins = range(len(binned.edges) - 1)
    used = [i for i in bins if any(s[i] > 0 for s in known)] or [0]
    first, last = used[0], used[-1]
    return Binned(
        binned.baseline,
        binned.edges[first : last + 2],
        {k: None if s is None else s[first : last + 1] for k, s in binned.shares.items()},
    )


def top_values(
    per_split: Mapping[str, Feature | None], limit: int = TOP_VALUES
) -> TopValues | None:
    """The most frequent values over all splits, baseline order first, and the rest as one."""
    strings = {
        split: f.string_stats if f is not None and f.HasField("string_stats") else None
        for split, f in per_split.items()
    }
    present = [split for split, s in strings.items() if s is not None]
    if not present:
        return None
    baseline = "train" if "train" in present else present[0]
    ordered = [present[present.index(baseline)], *[s for s in present if s != baseline]]
    categories: list[str] = []
    for split in ordered:
        for value in strings[split].top_values[:limit]:
            if value.value not in categories and (split == baseline or len(categories) < limit + 4):
                categories.append(value.value)
    shares: dict[str, list[float | None] | None] = {}
    for split, string_stats in strings.items():
        if string_stats is None:
            shares[split] = None
            continue
        counts = _value_counts(string_stats)
        total = string_stats.common_stats.tot_num_values
        complete = len(counts) >= string_stats.unique
        row = [
            (counts.get(c, 0.0) / total if (c in counts or complete) else None) if total else None
            for c in categories
        ]
        known = sum(v for v in row if v is not None)
        row.append(max(0.0, 1.0 - known) if total else None)
        shares[split] = row
    if all(row is None or (row[-1] or 0.0) < 1e-9 for row in shares.values()):
        # Every value of every split is shown: no "other" bar.
        return TopValues(categories, {k: None if r is None else r[:-1] for k, r in shares.items()})
    return TopValues([*categories, OTHER], shares)


def _value_counts(string_stats: statistics_pb2.StringStatistics) -> dict[str, float]:
    counts = {b.label: float(b.sample_count) for b in string_stats.rank_histogram.buckets}
    for value in string_stats.top_values:
        counts.setdefault(value.value, float(value.frequency))
    return counts


def missing_share(feature: Feature | None) -> float | None:
    """Share of the split's examples without a value (None: the feature is absent)."""
    if feature is None:
        return None
    kind = feature.WhichOneof("stats")
    if kind is None:
        return None
    common = getattr(feature, kind).common_stats
    total = common.num_missing + common.num_non_missing
    return common.num_missing / total if total else None


# ---- rendering -----------------------------------------------------------------------------


def distribution_chart(
    name: str, per_split: Mapping[str, Feature | None], colors: Mapping[str, str], scale: str
) -> str:
    """The feature's distribution per split (numeric bins or top values); "" if it has none."""
    splits = list(per_split)
    binned = numeric_bins(per_split)
    if binned is not None:
        series = [
            charts.Series(s, binned.shares[s], colors[s])
            for s in splits
            if binned.shares[s] is not None
        ]
        return charts.histogram(
            binned.edges,
            series,
            title=f"{name}: share of values per {binned.baseline} quantile bin",
            description=(
                f"Bins are the {binned.baseline} split's quantile boundaries (about a tenth of "
                f"{binned.baseline}'s values each); bars are each split's share of its values "
                "per bin."
            ),
            value_label="share of the split's values",
            bin_label=f"{name} ({'values per bin' if binned.labels else 'bin edges'})",
            bin_labels=binned.labels,
            scale=scale,
            width=560,
        )
    top = top_values(per_split)
    if top is None:
        return ""
    series = [
        charts.Series(s, top.shares[s], colors[s]) for s in splits if top.shares[s] is not None
    ]
    return charts.bar_chart(
        top.categories,
        series,
        title=f"{name}: share of values per value",
        description="Each split's share of its values taken by its most frequent values.",
        value_label="share of the split's values",
        horizontal=True,
        scale=scale,
        value_format=charts.format_percent,
        value_range=None if scale == "log" else (0.0, 1.0),
        width=560,
    )


def missing_chart(name: str, per_split: Mapping[str, Feature | None], colors: Mapping[str, str]):
    """Share of examples without a value, per split, on a fixed 0-100% axis."""
    series = [charts.Series(s, [missing_share(f)], colors[s]) for s, f in per_split.items()]
    return charts.bar_chart(
        ["missing"],
        series,
        title=f"{name}: examples without a value",
        description="Share of each split's examples in which the feature has no value.",
        horizontal=True,
        value_format=charts.format_percent,
        value_range=(0.0, 1.0),
        value_labels=True,
        width=560,
    )


def distance_chart(label: str, report: ValidationReport, color: str, scale: str) -> str:
    """Each skew/drift distance of ``report`` against its threshold; exceeded ones in red."""
    measurements: Sequence[Measurement] = report.measurements
    categories = [_measurement_name(m) for m in measurements]
    thresholds = dict(zip(categories, (m.threshold for m in measurements), strict=True))
    check = measurements[0].check.value if measurements else "distance"
    return charts.bar_chart(
        categories,
        [charts.Series(label, [m.value for m in measurements], color)],
        title=f"{label}: {check} distances against thresholds",
        description=(
            "One bar per feature and comparator; the dashed mark is its threshold, and a bar "
            "above it is drawn in red."
        ),
        value_label="distance",
        horizontal=True,
        scale=scale,
        references=[m.threshold for m in measurements],
        highlight=lambda _s, category, value: value > thresholds[category],
        value_labels=True,
        width=560,
    )


def _measurement_name(measurement: Measurement) -> str:
    comparator = _COMPARATOR_NAMES.get(measurement.comparator, measurement.comparator)
    return f"{measurement.feature} · {comparator}"


def candidate_split(label: str) -> str:
    """The split a report's distances describe: ``eval`` for eval's drift, serving for skew."""
    return label.rsplit(" vs ", 1)[-1]
