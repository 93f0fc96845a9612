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


def transform_feature(feature, types: Mapping, inputs: RawInputs) -> tf.Tensor:
    """The transformed tensor of one feature (a ``pipeline.definition.Feature``)."""
    defaults = feature.input_defaults(types)
    columns = [
        RawColumn(name, inputs[name], str(types[name].value), default)
        for name, default in zip(feature.inputs, defaults, strict=True)
    ]
    with tf.name_scope(feature.name):
        return feature.kind.apply(feature.name, columns)


def make_preprocessing_fn(dataset) -> Callable[[RawInputs], dict]:
    """Build the ``preprocessing_fn`` TFT analyzes on train and applies everywhere.

    ``dataset`` is a ``pipeline.definition.DatasetDefinition``. The label arrives computed (the
    warehouse writes it into the split files) and passes through as int64 class ids or float32
    targets; the serving graph parses requests without it, so TFT prunes it away there.
    """
    types = dataset.column_types
    label = dataset.label_column

    def preprocessing_fn(inputs: RawInputs) -> dict[str, tf.Tensor]:
        outputs = {f.output_name: transform_feature(f, types, inputs) for f in dataset.features}
        if label.name in inputs:
            value = blocks.fill_in_missing(inputs[label.name], 0)
            dtype = tf.float32 if label.type.value == "FLOAT64" else tf.int64
            outputs[label.name] = tf.cast(value, dtype)
        return outputs

    return preprocessing_fn
