"""Named raw tensors (the ``serving_raw`` signature) as ``tf.Example``s for the request log.

The serving-log check reads raw ``tf.Example``s, so a request that fed the raw serving columns
as tensors is logged as the examples the model effectively received: one per row, each column's
value under its name with the type ``tf.Example`` parsing gives it, and a value marked missing
(:data:`pipeline.export.MISSING_VALUES`: NaN, ``MISSING_INT64``, ``b""``) left out of the
example altogether, which is how TFDV counts a missing value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from pipeline.definition import DatasetDefinition
from pipeline.export import MISSING_VALUES

_LISTS = {"INT64": "int64_list", "FLOAT64": "float_list", "STRING": "bytes_list"}


def column_kinds(dataset: DatasetDefinition) -> dict[str, str]:
    """Serving column -> its split-file type (``INT64``, ``FLOAT64``, ``STRING``)."""
    return {c.name: c.type.split_file_type for c in dataset.serving_columns}


def takes_raw_columns(signature: meta_graph_pb2.SignatureDef, kinds: Mapping[str, str]) -> bool:
    """Whether a signature's inputs are raw serving columns, one value per row each."""
    return bool(signature.inputs) and all(
        name in kinds and len(info.tensor_shape.dim) == 1 for name, info in signature.inputs.items()
    )


def _present(values: np.ndarray, kind: str) -> np.ndarray:
    if kind == "FLOAT64":
        return ~np.isnan(values)
    return values != MISSING_VALUES[kind] if kind == "INT64" else values != b""


def raw_tensor_examples(columns: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> list[bytes]:
    """One serialized example per row of ``columns`` (1-D arrays of one length)."""
    rows = len(next(iter(columns.values()))) if columns else 0
    examples = [example_pb2.Example() for _ in range(rows)]
    for name, values in columns.items():
        kind = kinds[name]
        present = _present(values, kind).tolist()
        for example, value, keep in zip(examples, values.tolist(), present, strict=True):
            if keep:
                getattr(example.features.feature[name], _LISTS[kind]).value.append(value)
    return [example.SerializeToString() for example in examples]
