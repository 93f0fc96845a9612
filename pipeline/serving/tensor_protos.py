"""``TensorProto`` <-> NumPy for the gRPC API, checked against a signature's declared inputs.

A request tensor is checked before anything is allocated for it: its dtype must be the one the
signature declares, its shape must fit the declared one, and it may not ask for more elements
than it carries (a ``TensorProto`` may give one value and a shape of ``[10**12]``, which
TensorFlow would fill by repeating the value) beyond ``max_elements``. Every failure is an
``INVALID_ARGUMENT`` naming the tensor, as ``inputs.<alias>``.

Responses use the typed value fields (``float_val``, ``int64_val``, ``string_val`` ...), as
TensorFlow Serving does by default, so clients reading ``outputs[...].float_val`` directly work.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from pipeline.serving.rpc_status import invalid_argument

# NumPy kind -> the TensorProto field TF Serving fills for it (TensorFlow's AsProtoField).
_VALUE_FIELDS = {
    tf.float32: "float_val",
    tf.float64: "double_val",
    tf.int32: "int_val",
    tf.int16: "int_val",
    tf.int8: "int_val",
    tf.uint8: "int_val",
    tf.uint16: "int_val",
    tf.int64: "int64_val",
    tf.uint32: "uint32_val",
    tf.uint64: "uint64_val",
    tf.bool: "bool_val",
    tf.string: "string_val",
}


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` for 1, and the bare number for values no DataType names."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return str(dtype)


def shape_text(dims: list[int]) -> str:
    """A shape as TensorFlow prints it (``[2,3]``), ``-1`` for a dimension of any size."""
    return "[" + ",".join(str(d) for d in dims) + "]"


def declared_dims(info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    """The dimensions a signature declares for a tensor (``-1``: any); None if rank unknown."""
    if info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in info.tensor_shape.dim]


def _present_values(proto: tensor_pb2.TensorProto) -> int:
    """How many values the proto really carries, before TensorFlow's fill-by-repeating."""
    if proto.tensor_content:
        itemsize = tf.as_dtype(proto.dtype).size or 1
        return len(proto.tensor_content) // itemsize
    field = _VALUE_FIELDS.get(tf.as_dtype(proto.dtype))
    return len(getattr(proto, field)) if field else 0


def to_ndarray(
    proto: tensor_pb2.TensorProto,
    info: meta_graph_pb2.TensorInfo,
    where: str,
    max_elements: int,
) -> np.ndarray:
    """The request tensor ``where`` as an array, or INVALID_ARGUMENT saying what is wrong."""
    if proto.dtype != info.dtype:
        raise invalid_argument(
            f"{where}: expected dtype {dtype_name(info.dtype)}, got {dtype_name(proto.dtype)}"
        )
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"{where}: tensor parsing error: the shape has an unknown rank")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise invalid_argument(f"{where}: tensor parsing error: negative dimension in {dims}")
    expected = declared_dims(info)
    if expected is not None and (
        len(dims) != len(expected)
        or any(e not in (-1, d) for e, d in zip(expected, dims, strict=True))
    ):
        raise invalid_argument(
            f"{where}: expected shape {shape_text(expected)}, got {shape_text(dims)}"
        )
    elements = math.prod(dims)
    if elements > max(max_elements, _present_values(proto)):
        raise invalid_argument(
            f"{where}: shape {shape_text(dims)} asks for {elements} elements; a request tensor "
            f"may hold at most {max_elements}"
        )
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError) as error:
        raise invalid_argument(f"{where}: tensor parsing error: {error}") from None


def from_ndarray(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A response tensor in the typed value fields, as TF Serving's default serialization."""
    array = np.asarray(array)
    dtype = tf.as_dtype(array.dtype)
    field = _VALUE_FIELDS.get(dtype)
    if field is None:  # e.g. float16: TensorFlow's own encoding
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    getattr(proto, field).extend(array.ravel().tolist())
    return proto
