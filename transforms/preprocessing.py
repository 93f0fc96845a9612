"""``preprocessing_fn`` assembled from the dataset definition.

Nothing here names a taxi column: each feature's transform and parameters come from the
:class:`~pipeline.dataset.DatasetDefinition`, so the same code serves any dataset definition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tensorflow as tf

from pipeline.dataset import DatasetDefinition, Feature, ThresholdLabel, Transform
from transforms import blocks

RawInputs = Mapping[str, tf.Tensor | tf.SparseTensor]


def _dense_input(feature: Feature, inputs: RawInputs, column: str) -> tf.Tensor:
    return blocks.fill_in_missing(inputs[column], feature.default)


def transform_feature(feature: Feature, inputs: RawInputs) -> tf.Tensor:
    """The transformed tensor of one feature."""
    params = feature.params
    name = feature.name
    if feature.transform is Transform.CROSS:
        values = [_dense_input(feature, inputs, column) for column in feature.inputs]
        return blocks.hashed_cross(values, params["hash_buckets"])
    (column,) = feature.inputs
    x = _dense_input(feature, inputs, column)
    if feature.transform is Transform.ZSCORE:
        return blocks.zscore(x, name=name)
    if feature.transform is Transform.LOG_ZSCORE:
        return blocks.log_zscore(x, name=name)
    if feature.transform is Transform.SCALE_0_1:
        return blocks.scale_0_1(x, name=name)
    if feature.transform is Transform.QUANTILE_BUCKET:
        return blocks.quantile_bucket(x, params["num_buckets"], name=name)
    if feature.transform is Transform.VOCABULARY:
        return blocks.vocabulary(
            x, params["top_k"], params["num_oov_buckets"], vocab_filename=vocabulary_name(feature)
        )
    if feature.transform is Transform.IDENTITY:
        return blocks.identity(x, params["num_buckets"])
    if feature.transform is Transform.CYCLICAL_TIME:
        return blocks.cyclical_time(x)
    raise ValueError(f"feature {feature.name!r}: no implementation for {feature.transform}")


def vocabulary_name(feature: Feature) -> str:
    """File name of a feature's vocabulary inside the transform output."""
    return f"{feature.name}_vocab"


def compute_label(label: ThresholdLabel, inputs: RawInputs) -> tf.Tensor:
    """0/1 int64 label, e.g. ``tips > 0.2 * fare``."""
    numerator = tf.cast(blocks.fill_in_missing(inputs[label.numerator], 0.0), tf.float32)
    denominator = tf.cast(blocks.fill_in_missing(inputs[label.denominator], 0.0), tf.float32)
    return tf.cast(numerator > label.threshold * denominator, tf.int64)


def make_preprocessing_fn(dataset: DatasetDefinition) -> Callable[[RawInputs], dict]:
    """Build the ``preprocessing_fn`` TFT analyzes on train and applies everywhere.

    The label is emitted only when its source columns are present, so the serving graph (which
    parses requests without the label-only columns) prunes it away.
    """

    def preprocessing_fn(inputs: RawInputs) -> dict[str, tf.Tensor]:
        outputs = {f.output_name: transform_feature(f, inputs) for f in dataset.features}
        if all(column in inputs for column in dataset.label.source_columns):
            outputs[dataset.label.name] = compute_label(dataset.label, inputs)
        return outputs

    return preprocessing_fn
