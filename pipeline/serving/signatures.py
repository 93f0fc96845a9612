"""What each signature of an export takes and gives, and TF Serving's rules for its APIs.

Everything here is read from the SavedModel's ``SignatureDef``s, so the server works the same for
any export: which API a signature answers follows from its method name and its input and output
names, as in TensorFlow Serving (``classifier.cc``, ``regressor.cc``, ``predict_util.cc``):

* ``:predict`` runs any signature (with the method-name check on: one whose method is predict,
  classify or regress);
* ``:classify`` needs one input ``inputs`` and outputs ``classes`` and/or ``scores``, and with the
  method-name check on, method ``tensorflow/serving/classify``;
* ``:regress`` needs one input ``inputs`` and one output ``outputs``, and with the check on,
  method ``tensorflow/serving/regress``.

TF Serving's ``--enable_signature_method_name_check`` is off by default, and so is
``pipeline.serving``'s ``--enable-signature-method-name-check``. The checks themselves, and their
messages (TF Serving's), are :mod:`pipeline.serving.signature_rules`', shared with gRPC; here
they raise REST's 400.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from pipeline.serving import signature_rules as rules
from pipeline.serving.errors import BadRequest

API_INPUT = rules.INPUTS  # the serialized examples of :classify and :regress


@dataclasses.dataclass(frozen=True)
class TensorDescription:
    """One input or output of a signature: its DataType name and shape (-1: any size)."""

    dtype: str  # e.g. "DT_FLOAT"
    shape: tuple[int, ...] | None  # None: unknown rank


@dataclasses.dataclass(frozen=True)
class SignatureDescription:
    """A ``SignatureDef`` reduced to what request handling needs."""

    name: str
    method_name: str
    inputs: Mapping[str, TensorDescription]
    outputs: Mapping[str, TensorDescription]
    definition: meta_graph_pb2.SignatureDef

    @property
    def examples_input(self) -> str | None:
        """The input of a signature fed serialized ``tf.Example``s (one 1-D string input)."""
        if len(self.inputs) != 1:
            return None
        ((name, tensor),) = self.inputs.items()
        return name if tensor.dtype == "DT_STRING" and tensor.shape == (-1,) else None


def describe(name: str, definition: meta_graph_pb2.SignatureDef) -> SignatureDescription:
    return SignatureDescription(
        name=name,
        method_name=definition.method_name,
        inputs={k: _tensor(v) for k, v in sorted(definition.inputs.items())},
        outputs={k: _tensor(v) for k, v in sorted(definition.outputs.items())},
        definition=definition,
    )


def _tensor(info: meta_graph_pb2.TensorInfo) -> TensorDescription:
    from tensorflow.core.framework import types_pb2

    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
    return TensorDescription(types_pb2.DataType.Name(info.dtype), dims)


# ---- TF Serving's checks (pipeline.serving.signature_rules), as REST's 400s ------------------


class ModelOutputError(BadRequest):
    """The signature returned tensors its API cannot answer with (TF Serving: 400 too)."""


def check_predict(signature: SignatureDescription, method_check: bool) -> None:
    if not signature.inputs:
        raise BadRequest(f"Failed to get input map for signature: {signature.name}")
    rules.check_prediction_method(signature.definition, method_check, BadRequest)


def check_classify(signature: SignatureDescription, method_check: bool) -> None:
    rules.check_classification(signature.definition, method_check, BadRequest)


def check_regress(signature: SignatureDescription, method_check: bool) -> None:
    rules.check_regression(signature.definition, method_check, BadRequest)


def classification_results(outputs: Mapping[str, np.ndarray], examples: int) -> list[list]:
    """``[[label, score], ...]`` per example from ``classes`` / ``scores``, checked.

    Without ``classes`` every label is ``""``; without ``scores`` every score is 0, as in TF
    Serving's ClassificationResult.
    """
    labels, scores, width = rules.classification_columns(outputs, examples, ModelOutputError)
    texts = (
        [[_text(label) for label in row] for row in labels]
        if labels is not None
        else [[""] * width] * examples
    )
    values = outputs[rules.SCORES] if scores is not None else [[0.0] * width] * examples
    return [  # float32 scores stay float32, so their JSON is as short as TF Serving's
        [[label, score] for label, score in zip(row_labels, row_scores, strict=True)]
        for row_labels, row_scores in zip(texts, values, strict=True)
    ]


def regression_results(outputs: Mapping[str, np.ndarray], examples: int) -> np.ndarray:
    """One value per example from ``outputs``, checked."""
    return rules.regression_values(outputs, examples, ModelOutputError)


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
