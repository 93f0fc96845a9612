"""Raw feature specs and TFXIO adapters derived from the dataset definition.

Training data (Parquet through Arrow) and serving requests (``tf.Example``) reach
``preprocessing_fn`` in the same form: every raw column is a VarLen feature, i.e. a
``SparseTensor`` of shape ``[batch, 1]`` that is empty where the value is missing.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

from pipeline.arrow_io import list_batch_schema
from pipeline.definition import ColumnType, DatasetDefinition


def tf_dtype(column_type: ColumnType) -> tf.dtypes.DType:
    return tf.as_dtype(column_type.facts.tf_dtype)


def raw_feature_spec(dataset: DatasetDefinition, serving: bool = False) -> dict:
    """``tf.io`` feature spec of the split files' columns (raw columns and the label);
    ``serving=True``: only the raw columns a serving request carries."""
    columns = dataset.serving_columns if serving else dataset.split_file_columns
    return {c.name: tf.io.VarLenFeature(tf_dtype(c.type)) for c in columns}


def raw_schema(dataset: DatasetDefinition, serving: bool = False) -> schema_pb2.Schema:
    return schema_utils.schema_from_feature_spec(raw_feature_spec(dataset, serving))


def tensor_adapter_config(
    dataset: DatasetDefinition, serving: bool = False
) -> tensor_adapter.TensorAdapterConfig:
    """How TFT turns the Arrow list batches of :mod:`pipeline.arrow_io` into tensors."""
    schema = raw_schema(dataset, serving)
    columns = tuple(f.name for f in schema.feature)
    return tensor_adapter.TensorAdapterConfig(
        list_batch_schema(dataset, columns),
        tensor_representation_util.InferTensorRepresentationsFromSchema(schema),
    )
