"""TensorFlow Serving's rules for which signature a Predict, Classify or Regress call may use.

One set of rules for both protocols: the gRPC servicers use :class:`SignatureRules` (TF
Serving's status codes), the REST service (:mod:`pipeline.serving.signatures`) the same check
functions with its 400 error.

The rules and their messages follow TF Serving's ``predict_util.cc``, ``classifier.cc``,
``regressor.cc`` and ``multi_inference.cc`` and are applied to the SignatureDefs as the export
declares them (``signature_def.method_name``, input and output keys), so they hold for any
export, with or without classify or regress signatures:

* **Predict** takes any signature, feeding named tensors.
* **Classify** needs one input ``inputs`` (serialized ``tf.Example``s) and the output ``classes``
  (``[batch, k]`` strings), ``scores`` (``[batch, k]`` floats) or both.
* **Regress** needs one input ``inputs`` and one output ``outputs`` (``[batch]`` or
  ``[batch, 1]`` floats).

TF Serving checks the method name only with ``--enable_signature_method_name_check`` (off by
default, because TensorFlow 2 writes every signature as ``tensorflow/serving/predict``); without
it the structure above decides. :class:`SignatureRules` has the same switch. Where TF Serving
answers a signature problem with ``INTERNAL`` (Predict on a signature of another method), this
server says ``FAILED_PRECONDITION``: it is the export's state, not a server fault.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from pipeline.serving.rpc_status import failed_precondition, invalid_argument, unimplemented
from pipeline.serving.tensor_protos import dtype_name, shape_text

SignatureDef = meta_graph_pb2.SignatureDef
DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
PREDICT = tf.saved_model.PREDICT_METHOD_NAME
CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME
REGRESS = tf.saved_model.REGRESS_METHOD_NAME
INPUTS = tf.saved_model.CLASSIFY_INPUTS  # == REGRESS_INPUTS
CLASSES = tf.saved_model.CLASSIFY_OUTPUT_CLASSES
SCORES = tf.saved_model.CLASSIFY_OUTPUT_SCORES
OUTPUTS = tf.saved_model.REGRESS_OUTPUTS


def _debug(signature: SignatureDef) -> str:
    """The SignatureDef as TF Serving quotes it in errors (``DebugString()``)."""
    return text_format.MessageToString(signature)


def _tf_dtype_name(array: np.ndarray) -> str:
    return dtype_name(tf.as_dtype(array.dtype).as_datatype_enum)


# ---- the checks, for either protocol ---------------------------------------------------------
# Each takes ``error``, the protocol's exception for a message (REST: a 400 BadRequest; gRPC:
# INVALID_ARGUMENT), so REST and gRPC apply the same rules with the same words.

Error = Callable[[str], Exception]


def check_prediction_method(signature: SignatureDef, method_name_check: bool, error: Error) -> None:
    if method_name_check and signature.method_name not in (PREDICT, CLASSIFY, REGRESS):
        raise error(
            f"Expected prediction signature method_name to be one of {{{PREDICT}, {CLASSIFY}, "
            f"{REGRESS}}}. Was: {signature.method_name}"
        )


def check_classification(signature: SignatureDef, method_name_check: bool, error: Error) -> None:
    """TF Serving's ``PreProcessClassification``: the signature must be a classifier."""
    if method_name_check and signature.method_name != CLASSIFY:
        raise error(
            f"Expected classification signature method_name to be {CLASSIFY}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise error("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise error(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if INPUTS not in signature.inputs:
        raise error(f"No classification inputs found in SignatureDef: {_debug(signature)}")
    _check_examples_input(signature, "classification", error)
    if CLASSES not in signature.outputs and SCORES not in signature.outputs:
        raise error(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSES}" or "{SCORES}". Signature was: {_debug(signature)}'
        )


def check_regression(signature: SignatureDef, method_name_check: bool, error: Error) -> None:
    """TF Serving's ``PreProcessRegression``: the signature must be a regressor."""
    if method_name_check and signature.method_name != REGRESS:
        raise error(
            f"Expected regression signature method_name to be {REGRESS}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise error("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise error("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise error(f"No regression inputs found in SignatureDef: {_debug(signature)}")
    _check_examples_input(signature, "regression", error)
    if OUTPUTS not in signature.outputs:
        raise error(f"No regression outputs found in SignatureDef: {_debug(signature)}")


def _check_examples_input(signature: SignatureDef, kind: str, error: Error) -> None:
    """Classify and Regress feed serialized examples; another dtype cannot be fed at all."""
    dtype = signature.inputs[INPUTS].dtype
    if dtype != tf.string.as_datatype_enum:
        raise error(
            f'Expected {kind} signature input "{INPUTS}" of DT_STRING (serialized '
            f"tf.Examples). Was: {dtype_name(dtype)}"
        )


def classification_columns(
    outputs: Mapping[str, np.ndarray], num_examples: int, error: Error
) -> tuple[list | None, list | None, int]:
    """TF Serving's ``PostProcessClassificationResult`` checks of ``classes`` and ``scores``.

    Returns (labels per example or None, scores per example or None, classes per example).
    """
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for name, tensor, dtype in ((CLASSES, classes, "DT_STRING"), (SCORES, scores, "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise error(
                "Expected Tensor shape: [batch_size num_classes] but got "
                f"{shape_text(list(tensor.shape))} ({name})"
            )
        if _tf_dtype_name(tensor) != dtype:
            raise error(f"Expected {name} Tensor of {dtype}. Got: {_tf_dtype_name(tensor)}")
        if tensor.shape[0] != num_examples:
            raise error(
                f"Expected {name} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise error(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]
    labels = classes.tolist() if classes is not None else None
    return labels, (scores.tolist() if scores is not None else None), width


def regression_values(
    outputs: Mapping[str, np.ndarray], num_examples: int, error: Error
) -> np.ndarray:
    """TF Serving's ``PostProcessRegressionResult``: ``outputs`` as one float per example."""
    tensor = outputs[OUTPUTS]
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise error(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{shape_text(list(tensor.shape))}"
        )
    if tensor.shape[0] != num_examples:
        raise error(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {tensor.shape[0]}"
        )
    if _tf_dtype_name(tensor) != "DT_FLOAT":
        raise error(f"Expected output Tensor of DT_FLOAT.  Got: {_tf_dtype_name(tensor)}")
    return tensor.reshape(-1)


# ---- gRPC: the checks with TF Serving's status codes ---------------------------------------


@dataclasses.dataclass(frozen=True)
class SignatureRules:
    """The checks, with or without TF Serving's signature method name check."""

    method_name_check: bool = False

    def predict_signature(self, defs: Mapping[str, SignatureDef], name: str) -> SignatureDef:
        if name not in defs or name.startswith("__"):  # __saved_model_init_op: not callable
            raise failed_precondition(f'Serving signature key "{name}" not found.')
        signature = defs[name]
        check_prediction_method(signature, self.method_name_check, failed_precondition)
        return signature

    def classification_signature(self, defs: Mapping[str, SignatureDef], name: str) -> SignatureDef:
        if name not in defs:
            raise invalid_argument(f"No signature was found with the name: {name}")
        signature = defs[name]
        self.check_classification(signature)
        return signature

    def check_classification(self, signature: SignatureDef) -> None:
        check_classification(signature, self.method_name_check, invalid_argument)

    def regression_signature(self, defs: Mapping[str, SignatureDef], name: str) -> SignatureDef:
        if name not in defs:
            raise invalid_argument(f"No signature was found with the name: {name}")
        signature = defs[name]
        self.check_regression(signature)
        return signature

    def check_regression(self, signature: SignatureDef) -> None:
        check_regression(signature, self.method_name_check, invalid_argument)

    # ---- MultiInference --------------------------------------------------------------------

    def inference_tasks(
        self, defs: Mapping[str, SignatureDef], tasks: Iterable
    ) -> list[tuple[str, str]]:
        """``(signature name, method)`` per task of a MultiInferenceRequest, checked."""
        model_name, checked = "", []
        for index, task in enumerate(tasks):
            where = f"tasks[{index}]"
            if not task.model_spec.name:
                raise invalid_argument(f"Found ModelSpec with an empty model name. ({where})")
            if model_name and task.model_spec.name != model_name:
                raise invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name. "
                    f"({where}.model_spec.name is {task.model_spec.name!r}, not {model_name!r})"
                )
            model_name = task.model_spec.name
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in (seen for seen, _ in checked):
                raise invalid_argument(f"Duplicate evaluation of signature: {name} ({where})")
            if name not in defs:
                raise invalid_argument(
                    f"Requested signature not found in model graph: {name} ({where})"
                )
            if task.method_name == CLASSIFY:
                self.check_classification(defs[name])
            elif task.method_name == REGRESS:
                self.check_regression(defs[name])
            else:
                raise unimplemented(
                    f"Unsupported signature method_name: {task.method_name} ({where}.method_name)"
                )
            checked.append((name, task.method_name))
        return checked


# ---- Predict's inputs and outputs ---------------------------------------------------------


def check_input_names(signature: SignatureDef, sent: Iterable[str]) -> None:
    """Exactly the signature's inputs (less those it has defaults for); TF Serving's text."""
    request_inputs, signature_inputs = set(sent), set(signature.inputs)
    too_many = len(request_inputs) > len(signature_inputs)
    too_few = len(request_inputs) < len(signature_inputs) and not signature.defaults
    extra = sorted(request_inputs - signature_inputs)
    missing = sorted(signature_inputs - request_inputs - set(signature.defaults))
    if too_many or too_few or extra or missing:
        raise invalid_argument(
            f"input size does not match signature: {len(request_inputs)}!="
            f"{len(signature_inputs)} len({{{','.join(sorted(request_inputs))}}}) != "
            f"len({{{','.join(sorted(signature_inputs))}}}). Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}."
        )


def output_aliases(signature: SignatureDef, output_filter: Iterable[str]) -> list[str]:
    """The outputs to return: ``output_filter`` in its order, or all of the signature's."""
    aliases: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}. (output_filter)"
            )
        if alias in aliases:
            raise invalid_argument(f"duplicate output tensor alias: {alias} (output_filter)")
        aliases.append(alias)
    return aliases or sorted(signature.outputs)


# ---- Classify's and Regress's results ------------------------------------------------------


def classification_result(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> classification_pb2.ClassificationResult:
    """``classes`` and/or ``scores`` as one list of (label, score) per example, checked."""
    labels, values, width = classification_columns(outputs, num_examples, invalid_argument)
    result = classification_pb2.ClassificationResult()
    for row in range(num_examples):
        classifications = result.classifications.add()
        for column in range(width):
            entry = classifications.classes.add()
            if labels is not None:
                entry.label = labels[row][column]
            if values is not None:
                entry.score = values[row][column]
    return result


def regression_result(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> regression_pb2.RegressionResult:
    """``outputs`` (``[batch]`` or ``[batch, 1]`` floats) as one value per example, checked."""
    result = regression_pb2.RegressionResult()
    for value in regression_values(outputs, num_examples, invalid_argument).tolist():
        result.regressions.add().value = value
    return result
