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
``pipeline.serving``'s ``--enable-signature-method-name-check``. Error messages are TF Serving's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2

from pipeline.serving.errors import BadRequest

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
API_INPUT = "inputs"  # the serialized examples of :classify and :regress
CLASSES, SCORES, OUTPUTS = "classes", "scores", "outputs"


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

    def debug_string(self) -> str:
        """The SignatureDef in text format, as TF Serving quotes it in errors."""
        return text_format.MessageToString(self.definition)


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


# ---- TF Serving's checks, before the model runs ----------------------------------------------


def check_predict(signature: SignatureDescription, method_check: bool) -> None:
    if not signature.inputs:
        raise BadRequest(f"Failed to get input map for signature: {signature.name}")
    allowed = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)
    if method_check and signature.method_name not in allowed:
        raise BadRequest(
            f"Expected prediction signature method_name to be one of {{{', '.join(allowed)}}}. "
            f"Was: {signature.method_name}"
        )


def check_classify(signature: SignatureDescription, method_check: bool) -> None:
    """TF Serving's ``PreProcessClassification``: the signature must be a classifier."""
    if method_check and signature.method_name != CLASSIFY_METHOD:
        raise BadRequest(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise BadRequest("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise BadRequest(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if API_INPUT not in signature.inputs:
        raise BadRequest(
            f"No classification inputs found in SignatureDef: {signature.debug_string()}"
        )
    if CLASSES not in signature.outputs and SCORES not in signature.outputs:
        raise BadRequest(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSES}" or "{SCORES}". Signature was: {signature.debug_string()}'
        )


def check_regress(signature: SignatureDescription, method_check: bool) -> None:
    """TF Serving's ``PreProcessRegression``: the signature must be a regressor."""
    if method_check and signature.method_name != REGRESS_METHOD:
        raise BadRequest(
            f"Expected regression signature method_name to be {REGRESS_METHOD}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise BadRequest("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise BadRequest("Expected one output Tensor.")
    if API_INPUT not in signature.inputs:
        raise BadRequest(f"No regression inputs found in SignatureDef: {signature.debug_string()}")
    if OUTPUTS not in signature.outputs:
        raise BadRequest(f"No regression outputs found in SignatureDef: {signature.debug_string()}")


# ---- TF Serving's checks of what the model returned -----------------------------------------


def classification_results(outputs: Mapping[str, np.ndarray], examples: int) -> list[list]:
    """``[[label, score], ...]`` per example from ``classes`` / ``scores`` (``PostProcess...``).

    Without ``classes`` every label is ``""``; without ``scores`` every score is 0, as in TF
    Serving's ClassificationResult.
    """
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for name, tensor, dtype in ((CLASSES, classes, np.object_), (SCORES, scores, np.float32)):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            shape = ",".join(str(d) for d in tensor.shape)
            raise ModelOutputError(
                f"Expected Tensor shape: [batch_size num_classes] but got [{shape}]"
            )
        if tensor.dtype != dtype:
            kind = "DT_STRING" if name == CLASSES else "DT_FLOAT"
            raise ModelOutputError(f"Expected {name} Tensor of {kind}. Got: {tensor.dtype}")
        if tensor.shape[0] != examples:
            raise ModelOutputError(
                f"Expected {name} output batch size of {examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise ModelOutputError(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    count = (classes if classes is not None else scores).shape[1]
    labels = (
        [[_text(label) for label in row] for row in classes.tolist()]
        if classes is not None
        else [[""] * count] * examples
    )
    values = scores if scores is not None else [[0.0] * count] * examples  # float32 stays short
    return [
        [[label, score] for label, score in zip(row_labels, row_scores, strict=True)]
        for row_labels, row_scores in zip(labels, values, strict=True)
    ]


def regression_results(outputs: Mapping[str, np.ndarray], examples: int) -> np.ndarray:
    """One value per example from ``outputs`` (``PostProcessRegressionResult``)."""
    tensor = outputs[OUTPUTS]
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        shape = ",".join(str(d) for d in tensor.shape)
        raise ModelOutputError(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got [{shape}]"
        )
    if tensor.shape[0] != examples:
        raise ModelOutputError(
            f"Input batch size did not match output batch size: {examples} vs. {tensor.shape[0]}"
        )
    if tensor.dtype != np.float32:
        raise ModelOutputError(f"Expected output Tensor of DT_FLOAT.  Got: {tensor.dtype}")
    return tensor.reshape(-1)


class ModelOutputError(BadRequest):
    """The signature returned tensors its API cannot answer with (TF Serving: 400 too)."""


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
