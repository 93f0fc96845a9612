"""Evaluation metrics and trivial baselines, by label kind, on NumPy arrays.

One implementation for every place a model is judged (eval and test metrics, the baselines
beside them, blessing, slices), computed from the model's predictions with scikit-learn's
kept implementations rather than Keras' streaming approximations (Keras' AUC buckets
thresholds; ``roc_auc_score`` is exact).

Predictions are what the model outputs: the positive-class probability ``[n]`` (binary), class
probabilities ``[n, k]`` (multi-class), or the target ``[n]`` (regression, on the label's scale).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from pipeline.definition import LabelKind

# Probabilities are clipped like Keras' cross-entropy does, so a confident mistake costs a
# large but finite loss.
EPSILON = 1e-7


def _rounded(values: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) if math.isfinite(v) else float(v) for k, v in values.items()}


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.clip(np.asarray(probabilities, np.float64).reshape(-1), EPSILON, 1 - EPSILON)
    predicted = (p >= 0.5).astype(np.int64)
    both_classes = len(np.unique(y)) == 2
    return _rounded(
        {
            "auc": metrics.roc_auc_score(y, p) if both_classes else math.nan,
            "accuracy": metrics.accuracy_score(y, predicted),
            "precision": metrics.precision_score(y, predicted, zero_division=0),
            "recall": metrics.recall_score(y, predicted, zero_division=0),
            "log_loss": metrics.log_loss(y, p, labels=[0, 1]),
            "examples": len(y),
        }
    )


def multiclass_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    classes = list(range(p.shape[1]))
    predicted = p.argmax(axis=1)
    return _rounded(
        {
            "accuracy": metrics.accuracy_score(y, predicted),
            "macro_f1": metrics.f1_score(y, predicted, labels=classes, average="macro"),
            "log_loss": metrics.log_loss(y, p, labels=classes),
            "examples": len(y),
        }
    )


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    y = np.asarray(labels, np.float64).reshape(-1)
    yhat = np.asarray(predictions, np.float64).reshape(-1)
    return _rounded(
        {
            "rmse": math.sqrt(metrics.mean_squared_error(y, yhat)),
            "mae": metrics.mean_absolute_error(y, yhat),
            "r2": metrics.r2_score(y, yhat) if len(y) > 1 else math.nan,
            "examples": len(y),
        }
    )


def evaluate(kind: LabelKind, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The metrics of a label kind (see :class:`pipeline.definition.Head`)."""
    if len(np.asarray(labels).reshape(-1)) == 0:
        return {"examples": 0}
    if kind is LabelKind.BINARY:
        return binary_metrics(labels, predictions)
    if kind is LabelKind.MULTICLASS:
        return multiclass_metrics(labels, predictions)
    return regression_metrics(labels, predictions)


def label_summary(kind: LabelKind, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """What a trivial baseline learns from the training labels: class shares, or the mean."""
    y = np.asarray(labels).reshape(-1)
    if kind is LabelKind.REGRESSION:
        return {"mean": float(y.mean()) if y.size else 0.0, "examples": int(y.size)}
    counts = np.bincount(y.astype(np.int64), minlength=max(num_classes, 2))
    shares = counts / max(counts.sum(), 1)
    return {"class_shares": [round(float(s), 6) for s in shares], "examples": int(y.size)}


def baseline_predictions(kind: LabelKind, summary: Mapping, size: int) -> np.ndarray:
    """The trivial baseline's predictions for ``size`` rows: the training class shares as
    probabilities (its class is the majority), or the training mean."""
    if kind is LabelKind.REGRESSION:
        return np.full(size, summary["mean"], np.float64)
    shares = np.asarray(summary["class_shares"], np.float64)
    if kind is LabelKind.BINARY:
        return np.full(size, shares[1], np.float64)
    return np.tile(shares, (size, 1))
