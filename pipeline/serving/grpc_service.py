"""TensorFlow Serving's gRPC PredictionService and ModelService over the served versions.

The servicers read the same :class:`ModelRegistry` as the REST API (so the same version pickup
and blessing) and write to the same :class:`RequestLog`. What they check, and the status and
message of each refusal, follow TensorFlow Serving (``prediction_service_impl.cc``,
``predict_util.cc``, ``classifier.cc``, ``regressor.cc``, ``multi_inference.cc``,
``get_model_metadata_impl.cc``, ``get_model_status_impl.cc``, ``server_core.cc``); where TF
Serving's message does not name the request field, the field follows in parentheses.

Client mistakes are INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION or UNIMPLEMENTED; a call
whose deadline passed before the model ran is DEADLINE_EXCEEDED and is not run; INTERNAL is left
for faults of the server or the export, and those are logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import struct_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from pipeline.definition import DatasetDefinition
from pipeline.export import EXAMPLES_INPUT
from pipeline.serving.errors import NotFound
from pipeline.serving.models import (
    LoadedModel,
    ModelRegistry,
    _short_tf_message,
    unparsable_input,
)
from pipeline.serving.raw_tensor_log import column_kinds, raw_tensor_examples, takes_raw_columns
from pipeline.serving.request_log import RequestLog
from pipeline.serving.rpc_status import RpcError, invalid_argument, not_found, unimplemented
from pipeline.serving.signature_rules import (
    CLASSIFY,
    DEFAULT_SIGNATURE,
    INPUTS,
    SignatureDef,
    SignatureRules,
    check_input_names,
    classification_result,
    output_aliases,
    regression_result,
)
from pipeline.serving.tensor_protos import declared_dims, from_ndarray, to_ndarray

log = logging.getLogger("pipeline.serving")

SIGNATURE_DEF_FIELD = "signature_def"  # the one metadata field TF Serving knows
BLESSING_FIELD = "blessing"  # this server's addition: the push's blessing, as a Struct
DEFAULT_MAX_BATCH_SIZE = 100_000
# TensorFlow errors a request can cause; any other TensorFlow error is a fault of the export.
_CLIENT_TF_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
Response = TypeVar("Response")


@dataclasses.dataclass(frozen=True)
class ApiOptions:
    """What a request may ask for, and how signatures are matched to methods."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    rules: SignatureRules = dataclasses.field(default_factory=SignatureRules)
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


class ServedModels:
    """What both services share: the model name, the registry, the request log, the options."""

    def __init__(
        self,
        model_name: str,
        dataset: DatasetDefinition,
        registry: ModelRegistry,
        request_log: RequestLog | None = None,
        options: ApiOptions | None = None,
    ) -> None:
        self.model_name = model_name
        self.registry = registry
        self.request_log = request_log
        self.options = options or ApiOptions()
        self.raw_columns = column_kinds(dataset)

    def resolve(self, spec: model_pb2.ModelSpec) -> LoadedModel:
        """The loaded version ``spec`` names (TF Serving's ServableRequestFromModelSpec)."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified. (model_spec.name)")
        choice = spec.WhichOneof("version_choice")
        version = None
        if choice == "version":
            version = spec.version.value
        elif choice == "version_label":
            if spec.version_label not in self.options.version_labels:
                known = ", ".join(sorted(self.options.version_labels)) or "none"
                raise invalid_argument(
                    f"Unrecognized servable version label: {spec.version_label} "
                    f"(model_spec.version_label; labels: {known})"
                )
            version = self.options.version_labels[spec.version_label]
        wanted = f"Latest({spec.name})" if version is None else f"Specific({spec.name}, {version})"
        if spec.name != self.model_name:
            raise not_found(
                f"Servable not found for request: {wanted} (model_spec.name: this server "
                f"serves {self.model_name!r})"
            )
        try:
            return self.registry.get(version)
        except NotFound as error:
            raise not_found(f"Servable not found for request: {wanted} ({error})") from None

    def run(
        self, model: LoadedModel, signature_name: str, inputs: Mapping[str, Any], where: str
    ) -> dict[str, np.ndarray]:
        """Run a signature; a TensorFlow error the input caused becomes its status."""
        tensors = {name: tf.constant(value) for name, value in inputs.items()}
        try:
            outputs = model.saved_model.signatures[signature_name](**tensors)
            return {name: value.numpy() for name, value in outputs.items()}
        except tf.errors.OpError as error:
            code = _GRPC_CODES.get(error.error_code, grpc.StatusCode.INTERNAL)
            if code not in _CLIENT_TF_ERRORS:
                raise
            raise RpcError(code, f"{where}: {_short_tf_message(error)}") from None
        except UnicodeDecodeError:
            # TensorFlow could not even decode its own error message, which quotes the input:
            # bytes that are no UTF-8, i.e. a string that is no serialized tf.Example.
            raise invalid_argument(unparsable_input(inputs, where)) from None

    def log_examples(self, examples: list[bytes]) -> None:
        if self.request_log is not None and self.request_log.sample():
            self.request_log.record(examples)

    def log_raw_columns(self, columns: Mapping[str, np.ndarray]) -> None:
        """Encode raw columns as examples only for a sampled request (the encoding costs)."""
        if self.request_log is None or not self.request_log.sample():
            return
        try:
            examples = raw_tensor_examples(columns, self.raw_columns)
        except Exception:  # logging must never break serving
            log.exception("could not encode a raw-tensor request for the request log")
            return
        self.request_log.record(examples)

    def check_batch(self, size: int, where: str) -> None:
        if size == 0:
            raise invalid_argument(f"{where}: the batch is empty")
        if size > self.options.max_batch_size:
            raise invalid_argument(
                f"{where}: a batch of {size} is larger than the maximum of "
                f"{self.options.max_batch_size} (--grpc-max-batch-size)"
            )


def definitions(model: LoadedModel) -> Mapping[str, SignatureDef]:
    """Every SignatureDef of a loaded version, as the export declares it."""
    return model.signature_protos


def answer(context: grpc.ServicerContext, call: Callable[[], Response]) -> Response:
    """``call()``'s response, or the call aborted with the status of its error."""
    try:
        check_deadline(context)
        return call()
    except RpcError as error:
        context.abort(error.code, error.message)
    except Exception as error:  # a fault of the server or the export: report it, keep serving
        log.exception("gRPC request failed")
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")
    raise AssertionError("context.abort returns only by raising")


def check_deadline(context: grpc.ServicerContext) -> None:
    """Refuse to start work nobody waits for any more (the model never runs for it)."""
    if not context.is_active():
        raise RpcError(grpc.StatusCode.CANCELLED, "the call was cancelled before the model ran")
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise RpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the model ran"
        )


def _model_spec(
    spec: model_pb2.ModelSpec, model: LoadedModel, signature_name: str | None
) -> model_pb2.ModelSpec:
    """The response's model_spec, as TF Serving's MakeModelSpec fills it."""
    answer_spec = model_pb2.ModelSpec(name=spec.name)
    if signature_name is not None:
        answer_spec.signature_name = signature_name or DEFAULT_SIGNATURE
    answer_spec.version.value = model.version
    return answer_spec


def _require_model_spec(request: Any) -> None:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec (model_spec)")


def serialized_examples(request_input: Any, where: str, served: ServedModels) -> list[bytes]:
    """An ``Input``'s examples as the model's string tensor; context first, as TF Serving."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        # Concatenated messages parse as one merged message: an example's own features win.
        context = with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument(f"Input is empty. ({where} has no examples)")
    served.check_batch(len(examples), where)
    return examples


# ---- PredictionService -------------------------------------------------------------------


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference and GetModelMetadata."""

    def __init__(self, served: ServedModels) -> None:
        self.served = served

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        return answer(context, lambda: self._predict(request, context))

    def Classify(self, request, context) -> classification_pb2.ClassificationResponse:
        return answer(context, lambda: self._classify(request, context))

    def Regress(self, request, context) -> regression_pb2.RegressionResponse:
        return answer(context, lambda: self._regress(request, context))

    def MultiInference(self, request, context) -> inference_pb2.MultiInferenceResponse:
        return answer(context, lambda: self._multi_inference(request, context))

    def GetModelMetadata(self, request, context) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return answer(context, lambda: self._metadata(request))

    # ---- Predict ---------------------------------------------------------------------------

    def _predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        served = self.served
        _require_model_spec(request)
        model = served.resolve(request.model_spec)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = served.options.rules.predict_signature(definitions(model), name)
        inputs = self._predict_inputs(signature, request.inputs)
        aliases = output_aliases(signature, request.output_filter)
        check_deadline(context)
        where = f"inputs.{next(iter(inputs))}" if len(inputs) == 1 else "inputs"
        outputs = served.run(model, name, inputs, where)
        response = predict_pb2.PredictResponse(
            model_spec=_model_spec(request.model_spec, model, name)
        )
        for alias in aliases:
            response.outputs[alias].CopyFrom(from_ndarray(outputs[alias]))
        self._log_predict(signature, inputs)
        return response

    def _predict_inputs(self, signature: SignatureDef, sent: Mapping) -> dict[str, np.ndarray]:
        """The request's tensors, checked against the signature; defaults fill the rest."""
        check_input_names(signature, sent)
        limit = self.served.options.max_batch_size
        inputs = {}
        for alias, info in sorted(signature.inputs.items()):
            proto = sent[alias] if alias in sent else signature.defaults[alias]
            inputs[alias] = to_ndarray(proto, info, f"inputs.{alias}", limit)
        batched = {
            alias: value.shape[0]
            for alias, value in inputs.items()
            if (declared_dims(signature.inputs[alias]) or [0])[0] == -1
        }
        if len(set(batched.values())) > 1:
            raise invalid_argument(f"inputs: batch sizes differ: {batched}")
        if batched:
            alias = next(iter(batched))
            self.served.check_batch(
                batched[alias], "inputs" if len(batched) > 1 else f"inputs.{alias}"
            )
        return inputs

    def _log_predict(self, signature: SignatureDef, inputs: Mapping[str, np.ndarray]) -> None:
        """Log what the model received: serialized examples as they are, raw columns encoded."""
        names = set(inputs)
        if len(names) == 1 and names <= {EXAMPLES_INPUT, INPUTS}:
            (values,) = inputs.values()
            if values.dtype == object and values.ndim == 1:
                self.served.log_examples(values.tolist())
        elif takes_raw_columns(signature, self.served.raw_columns):
            self.served.log_raw_columns(inputs)

    # ---- Classify, Regress, MultiInference -------------------------------------------------

    def _examples_call(self, request, context, check: Callable) -> tuple:
        """Resolve, check the signature with ``check``, run it on the request's examples."""
        served = self.served
        _require_model_spec(request)
        model = served.resolve(request.model_spec)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        check(definitions(model), name)
        examples = serialized_examples(request.input, "input", served)
        check_deadline(context)
        outputs = served.run(model, name, {INPUTS: np.array(examples, dtype=object)}, "input")
        served.log_examples(examples)
        return model, outputs, len(examples)

    def _classify(self, request, context) -> classification_pb2.ClassificationResponse:
        rules = self.served.options.rules
        model, outputs, count = self._examples_call(
            request, context, rules.classification_signature
        )
        return classification_pb2.ClassificationResponse(
            model_spec=_model_spec(request.model_spec, model, request.model_spec.signature_name),
            result=classification_result(outputs, count),
        )

    def _regress(self, request, context) -> regression_pb2.RegressionResponse:
        rules = self.served.options.rules
        model, outputs, count = self._examples_call(request, context, rules.regression_signature)
        return regression_pb2.RegressionResponse(
            model_spec=_model_spec(request.model_spec, model, request.model_spec.signature_name),
            result=regression_result(outputs, count),
        )

    def _multi_inference(self, request, context) -> inference_pb2.MultiInferenceResponse:
        served = self.served
        # TF Serving takes the model and version from the first task.
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        model = served.resolve(spec)
        tasks = served.options.rules.inference_tasks(definitions(model), request.tasks)
        examples = serialized_examples(request.input, "input", served)
        check_deadline(context)
        tensor = {INPUTS: np.array(examples, dtype=object)}
        response = inference_pb2.MultiInferenceResponse()
        for task, (name, method) in zip(request.tasks, tasks, strict=True):
            outputs = served.run(model, name, tensor, "input")
            result = response.results.add()
            result.model_spec.CopyFrom(_model_spec(task.model_spec, model, name))
            if method == CLASSIFY:
                result.classification_result.CopyFrom(classification_result(outputs, len(examples)))
            else:
                result.regression_result.CopyFrom(regression_result(outputs, len(examples)))
        served.log_examples(examples)
        return response

    # ---- GetModelMetadata ------------------------------------------------------------------

    def _metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        _require_model_spec(request)
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in fields:
            if field not in (SIGNATURE_DEF_FIELD, BLESSING_FIELD):
                raise invalid_argument(f"Metadata field {field} is not supported (metadata_field)")
        model = self.served.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = model.version
        if SIGNATURE_DEF_FIELD in fields:
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for name, signature in definitions(model).items():
                signatures.signature_def[name].CopyFrom(signature)
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
        if BLESSING_FIELD in fields:
            blessing = struct_pb2.Struct()
            blessing.update(model.blessing or {})
            response.metadata[BLESSING_FIELD].Pack(blessing)
        return response


# ---- ModelService ------------------------------------------------------------------------


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus from the registry; the model set is the model base, not reloadable."""

    def __init__(self, served: ServedModels) -> None:
        self.served = served

    def GetModelStatus(self, request, context) -> get_model_status_pb2.GetModelStatusResponse:
        return answer(context, lambda: self._status(request))

    def HandleReloadConfigRequest(self, request, context):
        return answer(context, self._reload)

    def _reload(self):
        raise unimplemented(
            "HandleReloadConfigRequest is not supported: this server serves one model base; "
            "push a new version there instead"
        )

    def _status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        _require_model_spec(request)
        spec = request.model_spec
        statuses = self.served.registry.statuses() if spec.name == self.served.model_name else []
        if spec.HasField("version"):
            statuses = [s for s in statuses if s["version"] == str(spec.version.value)]
            if not statuses:
                raise not_found(
                    f"Could not find version {spec.version.value} of model {spec.name} "
                    "(model_spec.version)"
                )
        elif not statuses:
            raise not_found(f"Could not find any versions of model {spec.name} (model_spec.name)")
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = int(status["version"])
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status["state"])
            entry.status.error_code = error_codes_pb2.Code.Value(status["status"]["error_code"])
            entry.status.error_message = status["status"]["error_message"]
        return response
