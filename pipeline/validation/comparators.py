"""Jensen-Shannon divergence of numeric features over the baseline's quantile bins.

The schema declares a ``jensen_shannon_divergence`` skew/drift comparator for numeric features.
TFDV 1.16 evaluates it by re-bucketing both histograms to the union of their boundaries,
assuming values spread uniformly inside each bucket. On the default sample (long tails: a 1,710 mile
trip, a $700 fare; point masses at 0) that estimate is dominated by noise: two random halves of the
same sample score 0.09-0.8 with either histogram source, more than a 2x shift of the fare scores.

Here the baseline's quantile boundaries define the bins (each holds ~10% of the baseline), the
candidate's mass per bin is read off its own quantile histogram, and the divergence (log base 2,
in [0, 1]) is taken between the two mass vectors. Outliers only move the outer bins. Measured on
the default sample: random splits <= 0.01 (>= 500 rows) and <= 0.021 (200 rows); fare x1.2 -> 0.03,
fare x2 -> 0.24.
"""

from __future__ import annotations

import numpy as np
from tensorflow_metadata.proto.v0 import statistics_pb2


def quantile_histogram(
    feature: statistics_pb2.FeatureNameStatistics | None,
) -> statistics_pb2.Histogram | None:
    """The QUANTILES histogram of a numeric feature's statistics, if it holds any value."""
    if feature is None or not feature.HasField("num_stats"):
        return None
    for histogram in feature.num_stats.histograms:
        if histogram.type != statistics_pb2.Histogram.QUANTILES:
            continue
        if sum(bucket.sample_count for bucket in histogram.buckets) > 0:
            return histogram
    return None


def quantile_bin_jsd(
    baseline: statistics_pb2.Histogram, candidate: statistics_pb2.Histogram
) -> float:
    """Jensen-Shannon divergence of ``candidate`` vs ``baseline`` over baseline's quantile bins."""
    inner_edges = quantile_edges(baseline)
    return _jensen_shannon(bin_masses(baseline, inner_edges), bin_masses(candidate, inner_edges))


def quantile_edges(baseline: statistics_pb2.Histogram) -> np.ndarray:
    """The distinct inner boundaries of a quantile histogram: the bins the comparison uses."""
    return np.unique([bucket.high_value for bucket in baseline.buckets][:-1])


def bin_masses(histogram: statistics_pb2.Histogram, edges: np.ndarray) -> np.ndarray:
    """Probability mass in (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    cdf = np.array([_cdf(histogram, edge) for edge in edges])
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def _cdf(histogram: statistics_pb2.Histogram, x: float) -> float:
    """Fraction of values <= x, with values spread uniformly inside each bucket."""
    low = np.array([b.low_value for b in histogram.buckets])
    high = np.array([b.high_value for b in histogram.buckets])
    count = np.array([b.sample_count for b in histogram.buckets])
    width = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(width > 0, np.clip((x - low) / width, 0.0, 1.0), (low <= x) * 1.0)
    total = count.sum()
    return float((inside * count).sum() / total) if total else 0.0


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    p = np.clip(p, 0.0, None)
    q = np.clip(q, 0.0, None)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return float((_kl(p, m) + _kl(q, m)) / 2)


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log2(p[nonzero] / m[nonzero])))
