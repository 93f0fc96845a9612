"""The exported model as batch scoring uses it: which version, what it outputs, how it is called.

Beam's own TensorFlow model handler (``apache_beam.ml.inference.tensorflow_inference``) cannot
serve here: it imports ``tensorflow_hub`` (not part of the pinned stack), loads models with
``tf.keras.models.load_model`` (the Keras model, not the export's ``serving_default`` signature
with the transform graph in front), and feeds it per-row tensors that it stacks. So scoring keeps
Beam's ``RunInference`` transform (batching, model sharing across threads, metrics) with
:class:`ExportModelHandler`, a handler of Arrow batches: each element is a RecordBatch of raw
rows, encoded to serialized ``tf.Example``s by tfx_bsl's C++ encoder and scored by one call of
``serving_default``; the outputs come back as Arrow columns of the same batch.

The prediction table's columns follow the signature, whatever the label kind: one column per
output, named after it; a ``[batch]`` output is a scalar column, a ``[batch, k]`` output a list
column (binary exports today: ``classes`` and ``probabilities``; multi-class: ``classes`` and
``probabilities`` of length k; regression: ``predictions``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler

from pipeline import storage
from pipeline.serving.layout import SAVED_MODEL_FILE, complete_versions, version_of

SERVING_SIGNATURE = "serving_default"  # pipeline.export's, without importing TensorFlow here
EXAMPLES_INPUT = "examples"
ROW_KEY = "row_key"
MODEL_VERSION = "model_version"
_ARROW_TYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """The export scoring loads, and the version recorded with every prediction."""

    export_dir: str
    version: int


def resolve_model(model: str, version: int | None = None) -> ModelRef:
    """An export directory, or a model base (TF Serving layout: its newest complete version).

    An export directory's version is its name (exports and pushes are named by version) unless
    ``version`` says otherwise; in a model base ``version`` picks that version.
    """
    model = str(model).rstrip("/")
    if storage.isfile(storage.join(model, SAVED_MODEL_FILE)):
        found = version if version is not None else version_of(storage.basename(model))
        if found is None:
            raise ValueError(
                f"{model} is an export whose directory name is not a version: pass its version"
            )
        return ModelRef(model, found)
    versions = complete_versions(model)
    if not versions:
        raise FileNotFoundError(f"{model} holds neither a SavedModel nor a complete version")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise FileNotFoundError(f"{model} has no complete version {version} (has {versions})")
    return ModelRef(storage.join(model, str(chosen)), chosen)


def output_fields(export_dir: str) -> list[pa.Field]:
    """One Arrow field per output of ``serving_default``, in name order.

    Read from ``saved_model.pb`` (the signature's declared dtypes and shapes): loading the model
    here would cost seconds the job pays again in every worker.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(
        storage.read_bytes(storage.join(export_dir, SAVED_MODEL_FILE))
    )
    signature = proto.meta_graphs[0].signature_def[SERVING_SIGNATURE]
    fields = []
    for name, info in sorted(signature.outputs.items()):
        dtype = tf.dtypes.as_dtype(info.dtype).name
        value_type = _ARROW_TYPES.get(dtype)
        rank = None if info.tensor_shape.unknown_rank else len(info.tensor_shape.dim)
        if value_type is None or rank not in (1, 2):
            raise ValueError(
                f"{export_dir}: output {name!r} ({dtype}, rank {rank}) cannot be a column: "
                "scoring writes [batch] and [batch, k] numbers or strings"
            )
        fields.append(pa.field(name, value_type if rank == 1 else pa.list_(value_type)))
    return fields


def _output_array(values: np.ndarray, field: pa.Field) -> pa.Array:
    """A signature output as the Arrow column ``field`` describes (vectorized, no row loop)."""
    value_type = field.type if values.ndim == 1 else field.type.value_type
    flat = values.reshape(-1)
    if pa.types.is_string(value_type):
        array = pa.array(flat, type=pa.binary()).cast(pa.string())
    else:
        array = pa.array(flat, type=value_type)
    if values.ndim == 1:
        return array
    width = values.shape[1]
    offsets = pa.array(np.arange(0, (len(values) + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, array)


class ExportModelHandler(ModelHandler[pa.RecordBatch, pa.RecordBatch, Any]):
    """``RunInference`` handler: a batch of raw rows in, the same batch's predictions out.

    ``serving_schema`` is the list-batch schema of the serving columns
    (:func:`pipeline.arrow_io.list_batch_schema`); ``schema`` the prediction table's: the key
    columns (copied from the input rows), ``model_version`` and the outputs.
    """

    def __init__(self, model: ModelRef, serving_schema: pa.Schema, schema: pa.Schema) -> None:
        super().__init__()
        self._model = model
        self._serving_schema = serving_schema
        self._schema = schema
        self._encoder = None

    def load_model(self) -> Any:
        import tensorflow as tf

        return tf.saved_model.load(self._model.export_dir)

    def run_inference(
        self, batch: pa.RecordBatch, model: Any, inference_args: dict | None = None
    ) -> Iterable[pa.RecordBatch]:
        import tensorflow as tf

        from pipeline.arrow_io import to_list_batch

        if self._encoder is None:
            from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

            self._encoder = RecordBatchToExamplesEncoder()
        examples = self._encoder.encode(to_list_batch(batch, self._serving_schema))
        signature = model.signatures[SERVING_SIGNATURE]
        outputs = signature(**{EXAMPLES_INPUT: tf.constant(examples, dtype=tf.string)})
        return [self._predictions(batch, {k: v.numpy() for k, v in outputs.items()})]

    def _predictions(self, rows: pa.RecordBatch, outputs: dict[str, np.ndarray]) -> pa.RecordBatch:
        arrays = []
        for field in self._schema:
            if field.name == MODEL_VERSION:
                arrays.append(pa.array(np.full(rows.num_rows, self._model.version, np.int64)))
            elif field.name in outputs:
                arrays.append(_output_array(outputs[field.name], field))
            else:
                arrays.append(rows.column(rows.schema.get_field_index(field.name)))
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)

    def should_skip_batching(self) -> bool:
        return True  # every element already is a batch of rows

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return batch.nbytes

    def get_metrics_namespace(self) -> str:
        return "batch_scoring"
