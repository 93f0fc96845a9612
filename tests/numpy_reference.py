"""Independent NumPy counterparts of what the pipeline computes, shared by the tests: the
transform blocks' statistics, and the evaluation's metrics and curves (none of these call
scikit-learn, which the pipeline uses)."""

from __future__ import annotations

import numpy as np


def present(values) -> np.ndarray:
    """float64 array of the non-missing values of a raw column (None and NaN left out)."""
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[~np.isnan(array)]


def assert_is_quantile(values: np.ndarray, got: float, q: float, epsilon: float) -> None:
    """``got`` is a ``q``-quantile of ``values`` up to a rank error of ``epsilon``.

    That is what TFT's quantile sketch promises: at most a fraction ``q + epsilon`` of the values
    lies below ``got`` and at least ``q - epsilon`` lies at or below it.
    """
    values = np.asarray(values, dtype=np.float64)
    slack = epsilon + 1.0 / len(values)
    below = np.mean(values < got)
    at_or_below = np.mean(values <= got)
    assert below <= q + slack and at_or_below >= q - slack, (
        f"{got} is not a {q}-quantile: {below:.4f} below, {at_or_below:.4f} at or below "
        f"(numpy: {np.quantile(values, q)})"
    )


def fit_zscore(raw: np.ndarray, scaled: np.ndarray) -> tuple[float, float]:
    """(mean, std) with ``scaled == (raw - mean) / std``, recovered by least squares."""
    slope, intercept = np.polyfit(np.asarray(raw, np.float64), np.asarray(scaled, np.float64), 1)
    std = 1.0 / slope
    return -intercept * std, std


# ---- evaluation metrics and curves --------------------------------------------------------------


def auc(labels, scores) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic: the chance that a random positive
    scores above a random negative (ties count one half)."""
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
    positives, negatives = s[y], s[~y]
    if not len(positives) or not len(negatives):
        return float("nan")
    order = np.sort(negatives)
    below = np.searchsorted(order, positives, side="left")
    ties = np.searchsorted(order, positives, side="right") - below
    return float((below + ties / 2).sum() / (len(positives) * len(negatives)))


def roc_points(labels, scores) -> np.ndarray:
    """Every (false positive rate, true positive rate) the thresholds give, from (0, 0) on:
    predicting positive when the score is at least each distinct score."""
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
    thresholds = np.unique(s)[::-1]
    tpr = [(s[y] >= t).mean() for t in thresholds]
    fpr = [(s[~y] >= t).mean() for t in thresholds]
    return np.array([[0.0, 0.0], *zip(fpr, tpr, strict=True)])


def trapezoid_area(points) -> float:
    points = np.asarray(points, np.float64)
    x, y = points[:, 0], points[:, 1]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def confusion(labels, predicted, classes: int) -> np.ndarray:
    """counts[actual, predicted]."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return counts


def macro_f1(labels, predicted, classes: int) -> float:
    counts = confusion(labels, predicted, classes)
    scores = []
    for k in range(classes):
        tp = counts[k, k]
        denominator = counts[k, :].sum() + counts[:, k].sum()
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def rmse(labels, predictions) -> float:
    difference = np.asarray(labels, np.float64) - np.asarray(predictions, np.float64)
    return float(np.sqrt(np.mean(difference**2)))


def reliability_bins(outcomes, probabilities, bins: int = 10):
    """Per equal-width bin of [0, 1] (right-closed, the first also holding 0): row count, mean
    probability and observed share of outcomes (None when empty)."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(outcomes, np.float64)
    inner_edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    index = (p[:, None] > inner_edges[None, :]).sum(axis=1)
    counts, means, shares = [], [], []
    for b in range(bins):
        rows = index == b
        counts.append(int(rows.sum()))
        means.append(float(p[rows].mean()) if rows.any() else None)
        shares.append(float(y[rows].mean()) if rows.any() else None)
    return counts, means, shares
