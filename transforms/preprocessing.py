"""``preprocessing_fn`` assembled from the dataset definition.

Nothing here names a column: each feature's kind (``transforms.kinds``) implements it, and the
definition says which raw columns feed which feature, so the same code serves any dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tensorflow as tf

from transforms import blocks
from transforms.kinds import RawColumn

RawInputs = Mapping[str, tf.Tensor | tf.SparseTensor]


def raw_columns(feature, types: Mapping, inputs: RawInputs) -> list[RawColumn]:
    """The raw inputs of one feature (a ``pipeline.definition.Feature``), as its kind takes them."""
    defaults = feature.input_defaults(types)
    return [
        RawColumn(name, inputs[name], str(types[name].value), default)
        for name, default in zip(feature.inputs, defaults, strict=True)
    ]


def transform_feature(feature, types: Mapping, inputs: RawInputs) -> tf.Tensor:
    """The transformed tensor of one feature (a ``pipeline.definition.Feature``)."""
    with tf.name_scope(feature.name):
        return feature.kind.apply(feature.name, raw_columns(feature, types, inputs))


def plan_vocabularies(features, types: Mapping, inputs: RawInputs, make_analyzer) -> None:
    """One analyzer for the vocabularies of all ``features`` (``blocks.plan_vocabularies``)."""
    requests = []
    for feature in features:
        with tf.name_scope(f"{feature.name}_tokens"):
            request = feature.kind.vocabulary_request(
                feature.name, raw_columns(feature, types, inputs)
            )
        if request is not None:
            requests.append(request)
    blocks.plan_vocabularies(requests, make_analyzer)


def make_preprocessing_fn(
    dataset, make_vocabulary_analyzer: Callable | None = None
) -> Callable[[RawInputs], dict]:
    """Build the ``preprocessing_fn`` TFT analyzes on train and applies everywhere.

    ``dataset`` is a ``pipeline.definition.DatasetDefinition``. The label arrives computed (the
    warehouse writes it into the split files) and passes through as int64 class ids or float32
    targets; the serving graph parses requests without it, so TFT prunes it away there.

    With ``make_vocabulary_analyzer`` (``pipeline.vocabularies.make_analyzer``), every
    vocabulary is counted in one analyzer instead of one ``tft.vocabulary`` each: the same
    files, a fraction of the Beam stages.
    """
    types = dataset.column_types
    label = dataset.label_column

    def preprocessing_fn(inputs: RawInputs) -> dict[str, tf.Tensor]:
        if make_vocabulary_analyzer is not None:
            plan_vocabularies(dataset.features, types, inputs, make_vocabulary_analyzer)
        outputs = {f.output_name: transform_feature(f, types, inputs) for f in dataset.features}
        if label.name in inputs:
            value = blocks.fill_in_missing(inputs[label.name], 0)
            dtype = tf.float32 if label.type.value == "FLOAT64" else tf.int64
            outputs[label.name] = tf.cast(value, dtype)
        return outputs

    return preprocessing_fn
