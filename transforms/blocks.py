"""Preprocessing building blocks, each a small TensorFlow function.

Instance-level blocks (imputation, log, cyclical time, hashed crosses) only look at the row at
hand. Full-pass blocks call a ``tft`` analyzer: during *analyze* TFT computes the statistic over
the whole training split, and afterwards the statistic is a constant in the transform graph, the
same constant for train, eval, test and serving.

All inputs are batches: a ``tf.SparseTensor`` of shape ``[batch, 1]`` for a nullable raw column
(that is how both TFXIO and ``tf.io.parse_example`` hand over a VarLen feature) or a dense
``[batch]`` tensor.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_transform as tft

SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400
# 1970-01-01 was a Thursday; with Sunday = 0 that is day 4.
EPOCH_DAY_OF_WEEK = 4


def fill_in_missing(x: tf.Tensor | tf.SparseTensor, default) -> tf.Tensor:
    """Dense ``[batch]`` tensor with ``default`` where the raw value is missing."""
    if not isinstance(x, tf.SparseTensor):
        return tf.reshape(x, [-1])
    default = tf.constant(default, dtype=x.dtype)
    dense = tf.sparse.to_dense(
        tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
    )
    return tf.squeeze(dense, axis=1)


def zscore(x: tf.Tensor, name: str | None = None) -> tf.Tensor:
    """(x - mean) / std with mean and variance from the training split."""
    return tft.scale_to_z_score(tf.cast(x, tf.float32), name=name)


def log_zscore(x: tf.Tensor, name: str | None = None) -> tf.Tensor:
    """z-score of log1p(max(x, 0)): for skewed non-negative amounts (fares, durations)."""
    return zscore(tf.math.log1p(tf.maximum(tf.cast(x, tf.float32), 0.0)), name=name)


def scale_0_1(x: tf.Tensor, name: str | None = None) -> tf.Tensor:
    """(x - min) / (max - min) with min and max from the training split."""
    return tft.scale_to_0_1(tf.cast(x, tf.float32), name=name)


def quantile_bucket(x: tf.Tensor, num_buckets: int, name: str | None = None) -> tf.Tensor:
    """Bucket id in ``[0, num_buckets)`` from approximate quantiles of the training split."""
    return tft.bucketize(tf.cast(x, tf.float32), num_buckets=num_buckets, name=name)


def vocabulary(x: tf.Tensor, top_k: int, num_oov_buckets: int, vocab_filename: str) -> tf.Tensor:
    """Id of ``x`` in the training vocabulary (most frequent first), unseen values -> OOV ids.

    Ids ``[0, vocab_size)`` are known values; ``[vocab_size, vocab_size + num_oov_buckets)`` are
    hashed out-of-vocabulary buckets.
    """
    return tft.compute_and_apply_vocabulary(
        x, top_k=top_k, num_oov_buckets=num_oov_buckets, vocab_filename=vocab_filename
    )


def identity(x: tf.Tensor, num_buckets: int) -> tf.Tensor:
    """Integer already used as a category id, clipped into ``[0, num_buckets)``."""
    return tf.clip_by_value(tf.cast(x, tf.int64), 0, num_buckets - 1)


def cyclical_time(timestamp_seconds: tf.Tensor) -> tf.Tensor:
    """``[batch, 4]``: sin/cos of the hour of day and of the day of week of a Unix time (UTC).

    Hour 23 and hour 0 are neighbours on the circle, which a plain integer hides from the model.
    """
    seconds = tf.cast(timestamp_seconds, tf.int64)
    seconds_of_day = tf.math.floormod(seconds, SECONDS_PER_DAY)
    hour = tf.cast(seconds_of_day, tf.float32) / SECONDS_PER_HOUR
    day = tf.math.floormod(tf.math.floordiv(seconds, SECONDS_PER_DAY) + EPOCH_DAY_OF_WEEK, 7)
    day = tf.cast(day, tf.float32) + hour / 24.0
    hour_angle = hour * (2.0 * math.pi / 24.0)
    day_angle = day * (2.0 * math.pi / 7.0)
    return tf.stack(
        [tf.sin(hour_angle), tf.cos(hour_angle), tf.sin(day_angle), tf.cos(day_angle)], axis=1
    )


def hashed_cross(values: list[tf.Tensor], hash_buckets: int) -> tf.Tensor:
    """Id in ``[0, hash_buckets)`` of the combination of several categorical values.

    Uses TensorFlow's FarmHash fingerprint, which is stable across processes and versions, so a
    serving request hashes to the bucket training saw.
    """
    as_strings = [v if v.dtype == tf.string else tf.strings.as_string(v) for v in values]
    joined = tf.strings.join(as_strings, separator="_x_")
    return tf.strings.to_hash_bucket_fast(joined, hash_buckets)
