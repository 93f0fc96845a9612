"""The curves and tables behind the model report's plots, by label kind, with scikit-learn.

* binary: ROC and precision-recall curves (scikit-learn's ``roc_curve`` and
  ``precision_recall_curve``, collinear points dropped: the area is the same), the reliability
  diagram of the positive-class probability with each bin's row count, and the confusion matrix
  at the decision threshold the export's ``classes`` output uses;
* multi-class: the confusion matrix of the argmax, precision / recall / F1 / support per class,
  and the reliability diagram of the top class's probability (how often the argmax is right);
* regression: per bin of the prediction (deciles) the mean prediction, mean actual and mean
  residual (actual - prediction), a residual histogram, and a fixed sample of rows for the
  predicted-vs-actual and residual scatter plots.

Everything is JSON-ready (floats, ints, lists). Curves are capped at :data:`MAX_CURVE_POINTS`
points, a subset of scikit-learn's (first and last kept), so a chart stays small on big splits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.definition import DatasetDefinition, LabelKind

DECISION_THRESHOLD = 0.5  # pipeline.export's, without importing TensorFlow
CALIBRATION_BINS = 10
RESIDUAL_BINS = 10
HISTOGRAM_BINS = 20
MAX_CURVE_POINTS = 1000
SCATTER_ROWS = 1500
SCATTER_SEED = 0


def curves(dataset: DatasetDefinition, labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Every curve and table of the label kind for one model's predictions."""
    kind = dataset.label_kind
    if len(labels) == 0:
        return {}
    if kind is LabelKind.BINARY:
        return binary_curves(labels, predictions)
    if kind is LabelKind.MULTICLASS:
        return multiclass_curves(labels, predictions, dataset.label.num_classes)
    return regression_curves(labels, predictions)


def binary_curves(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    from sklearn import metrics

    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.asarray(probabilities, np.float64).reshape(-1)
    out: dict[str, Any] = {
        "calibration": calibration(y, p),
        "confusion_matrix": metrics.confusion_matrix(
            y, (p >= DECISION_THRESHOLD).astype(np.int64), labels=[0, 1]
        ).tolist(),
        "threshold": DECISION_THRESHOLD,
        "positive_share": float(y.mean()),
    }
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = metrics.roc_curve(y, p, drop_intermediate=True)
        precision, recall, _ = metrics.precision_recall_curve(y, p, drop_intermediate=True)
        out["roc"] = _thinned(list(zip(fpr.tolist(), tpr.tolist(), strict=True)))
        # scikit-learn orders the PR points by falling recall; draw them by rising recall.
        pr = list(zip(recall.tolist(), precision.tolist(), strict=True))[::-1]
        out["precision_recall"] = _thinned(pr)
        out["average_precision"] = float(metrics.average_precision_score(y, p))
    return out


def multiclass_curves(labels: np.ndarray, probabilities: np.ndarray, k: int) -> dict[str, Any]:
    from sklearn import metrics

    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.asarray(probabilities, np.float64).reshape(len(y), k)
    predicted = p.argmax(axis=1)
    classes = list(range(k))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=classes, zero_division=0
    )
    return {
        "confusion_matrix": metrics.confusion_matrix(y, predicted, labels=classes).tolist(),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.astype(int).tolist(),
        },
        # Top-label calibration: is the argmax right as often as its probability says?
        "calibration": calibration((predicted == y).astype(np.int64), p.max(axis=1)),
    }


def calibration(outcomes: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Reliability diagram over :data:`CALIBRATION_BINS` equal-width bins of [0, 1].

    The bins are scikit-learn's ``calibration_curve(strategy="uniform")`` bins (a probability
    on an inner edge belongs to the lower bin); each bin has its row count, mean probability and
    observed share of outcomes (``None`` for an empty bin).
    """
    from sklearn.calibration import calibration_curve

    y = np.asarray(outcomes).reshape(-1).astype(np.int64)
    p = np.clip(np.asarray(probabilities, np.float64).reshape(-1), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=CALIBRATION_BINS)
    observed, predicted = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="uniform")
    mean_predicted: list[float | None] = [None] * CALIBRATION_BINS
    share: list[float | None] = [None] * CALIBRATION_BINS
    for index, bin_id in enumerate(np.flatnonzero(counts)):
        mean_predicted[bin_id] = float(predicted[index])
        share[bin_id] = float(observed[index])
    return {
        "edges": edges.tolist(),
        "counts": counts.astype(int).tolist(),
        "mean_predicted": mean_predicted,
        "observed_share": share,
    }


def regression_curves(labels: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    y = np.asarray(labels, np.float64).reshape(-1)
    yhat = np.asarray(predictions, np.float64).reshape(-1)
    residuals = y - yhat
    edges = np.unique(np.quantile(yhat, np.linspace(0, 1, RESIDUAL_BINS + 1)))
    bins = np.clip(np.searchsorted(edges[1:-1], yhat, side="left"), 0, max(len(edges) - 2, 0))
    binned = []
    for b in range(max(len(edges) - 1, 1)):
        rows = bins == b
        if rows.any():
            binned.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[min(b + 1, len(edges) - 1)]),
                    "count": int(rows.sum()),
                    "mean_prediction": float(yhat[rows].mean()),
                    "mean_actual": float(y[rows].mean()),
                    "mean_residual": float(residuals[rows].mean()),
                }
            )
    counts, hist_edges = np.histogram(residuals, bins=HISTOGRAM_BINS)
    return {
        "binned": binned,
        "residual_histogram": {"edges": hist_edges.tolist(), "counts": counts.tolist()},
        "scatter_rows": scatter_rows(len(y)),
    }


def scatter_rows(rows: int) -> list[int]:
    """A fixed sample of at most :data:`SCATTER_ROWS` row indices (all rows when fewer)."""
    if rows <= SCATTER_ROWS:
        return list(range(rows))
    chosen = np.random.default_rng(SCATTER_SEED).choice(rows, SCATTER_ROWS, replace=False)
    return sorted(int(i) for i in chosen)


def _thinned(points: list[tuple[float, float]]) -> list[list[float]]:
    """At most :data:`MAX_CURVE_POINTS` of the points, evenly spaced, first and last kept."""
    if len(points) > MAX_CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(points) - 1, MAX_CURVE_POINTS).round().astype(int))
        points = [points[i] for i in keep]
    return [[_finite(x), _finite(y)] for x, y in points]


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0
