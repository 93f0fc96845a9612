"""``preprocessing_fn`` assembled from the dataset definition.

Nothing here names a taxi column: each feature's transform and parameters come from the
:class:`~pipeline.dataset.DatasetDefinition`, so the same code serves any dataset definition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tensorflow as tf

from pipeline.dataset import (
    DEFAULT_MULTI_HOT_DELIMITER,
    DEFAULT_POLYNOMIAL_DEGREE,
    NUMERIC_TRANSFORMS,
    DatasetDefinition,
    Feature,
    ThresholdLabel,
    Transform,
)
from transforms import blocks

RawInputs = Mapping[str, tf.Tensor | tf.SparseTensor]


def _dense_input(feature: Feature, inputs: RawInputs, column: str) -> tf.Tensor:
    return blocks.fill_in_missing(inputs[column], feature.default)


def _cleaned_input(feature: Feature, inputs: RawInputs, column: str) -> blocks.CleanedColumn:
    """A numeric input after the feature's cleaning params (impute, clip, log)."""
    params = feature.params
    return blocks.clean_numeric(
        inputs[column],
        default=feature.default,
        impute=params.get("impute", "constant"),
        clip=params.get("clip"),
        log=bool(params.get("log", False)) or feature.transform is Transform.LOG_ZSCORE,
        name=f"{column}_clean",
    )


def transform_feature(feature: Feature, inputs: RawInputs) -> tf.Tensor:
    """The transformed tensor of one feature."""
    with tf.name_scope(feature.name):
        if feature.transform in NUMERIC_TRANSFORMS:
            return _numeric_feature(feature, inputs)
        return _other_feature(feature, inputs)


def _numeric_feature(feature: Feature, inputs: RawInputs) -> tf.Tensor:
    params, name = feature.params, feature.name
    columns = [_cleaned_input(feature, inputs, column) for column in feature.inputs]
    if feature.transform is Transform.POLYNOMIAL:
        z = [blocks.zscore(c.values, c.reference, name=f"z{i}") for i, c in enumerate(columns)]
        return blocks.polynomial(z, int(params.get("degree", DEFAULT_POLYNOMIAL_DEGREE)))
    if feature.transform is Transform.PCA:
        return blocks.pca(
            [c.values for c in columns],
            int(params["output_dim"]),
            standardize_inputs=bool(params.get("standardize", True)),
            references=[c.reference for c in columns],
        )
    (x,) = columns
    if feature.transform is Transform.NUMERIC:
        return x.values
    if feature.transform in (Transform.ZSCORE, Transform.LOG_ZSCORE):
        return blocks.zscore(x.values, x.reference, name=name)
    if feature.transform is Transform.SCALE_0_1:
        return blocks.scale_0_1(x.values, x.reference, x.bounds, name=name)
    if feature.transform is Transform.QUANTILE_BUCKET:
        return blocks.quantile_bucket(x.values, params["num_buckets"], x.reference, name=name)
    raise ValueError(f"feature {feature.name!r}: no implementation for {feature.transform}")


def _other_feature(feature: Feature, inputs: RawInputs) -> tf.Tensor:
    params = feature.params
    if feature.transform is Transform.CROSS:
        values = [_dense_input(feature, inputs, column) for column in feature.inputs]
        return blocks.hashed_cross(values, params["hash_buckets"])
    if feature.transform is Transform.GEO_CELL:
        return _geo_cell(feature, inputs)
    (column,) = feature.inputs
    x = _dense_input(feature, inputs, column)
    if feature.transform is Transform.VOCABULARY:
        return _vocabulary(feature, x)
    if feature.transform is Transform.ONE_HOT:
        depth = int(params["top_k"]) + int(params["num_oov_buckets"])
        return blocks.one_hot(_vocabulary(feature, x), depth)
    if feature.transform is Transform.MULTI_HOT:
        tokens = blocks.split_tokens(x, params.get("delimiter", DEFAULT_MULTI_HOT_DELIMITER))
        depth = int(params["top_k"]) + int(params["num_oov_buckets"])
        return blocks.multi_hot(_vocabulary(feature, tokens), depth)
    if feature.transform is Transform.HASH:
        return blocks.hash_bucket(x, int(params["hash_buckets"]))
    if feature.transform is Transform.IDENTITY:
        return blocks.identity(x, params["num_buckets"])
    if feature.transform is Transform.CYCLICAL_TIME:
        return blocks.cyclical_time(x)
    raise ValueError(f"feature {feature.name!r}: no implementation for {feature.transform}")


def _vocabulary(feature: Feature, x):
    params = feature.params
    return blocks.vocabulary(
        x,
        params.get("top_k"),
        int(params["num_oov_buckets"]),
        vocab_filename=vocabulary_name(feature),
        frequency_threshold=params.get("frequency_threshold"),
    )


def _geo_cell(feature: Feature, inputs: RawInputs) -> tf.Tensor:
    """Grid cell of (latitude, longitude); rows missing either coordinate share one extra id."""
    params = feature.params
    lat_column, lon_column = feature.inputs
    lat_raw, lon_raw = inputs[lat_column], inputs[lon_column]
    present = tf.logical_and(blocks.is_present(lat_raw), blocks.is_present(lon_raw))
    lat = blocks.fill_in_missing(tf.cast(lat_raw, tf.float32), 0.0)
    lon = blocks.fill_in_missing(tf.cast(lon_raw, tf.float32), 0.0)
    if "lat_boundaries" in params:
        lat_boundaries = tf.constant([list(params["lat_boundaries"])], tf.float32)
        lon_boundaries = tf.constant([list(params["lon_boundaries"])], tf.float32)
    else:
        lat_boundaries = blocks.quantile_boundaries(
            blocks.present_values(lat_raw), int(params["lat_buckets"]), name="lat_quantiles"
        )
        lon_boundaries = blocks.quantile_boundaries(
            blocks.present_values(lon_raw), int(params["lon_buckets"]), name="lon_quantiles"
        )
    num_cells = feature.num_categories
    return blocks.geo_cell(lat, lon, present, lat_boundaries, lon_boundaries, num_cells)


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
