"""Independent NumPy counterparts of the transform blocks' statistics, shared by the tests."""

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
