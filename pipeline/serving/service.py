"""The serving logic without HTTP: status, metadata, predict, classify and regress on JSON bodies.

:mod:`pipeline.serving.app` only routes requests here, so the latency benchmark and the fuzz test
can run the same code in-process and over HTTP. Handlers take the request body and return the
response body; every refusal is a :class:`~pipeline.serving.errors.ServingError` with TF
Serving's status (and, where TF Serving has one, its message).

Everything about raw columns comes from the dataset definition the service is given; everything
about signatures from the export (see :mod:`pipeline.serving.signatures`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipeline.definition import DatasetDefinition
from pipeline.serving.errors import BadRequest, NotFound
from pipeline.serving.examples import ExampleEncoder, decode_b64, instance_examples
from pipeline.serving.models import LoadedModel, ModelRegistry, Signature
from pipeline.serving.protocol import (
    dumps,
    examples_body,
    has_non_finite,
    parse_json,
    predict_body,
    predict_response,
    signature_name,
)
from pipeline.serving.raw_tensors import columnar_tensors, row_tensors, tensors_to_examples
from pipeline.serving.request_log import RequestLog
from pipeline.serving.signatures import (
    API_INPUT,
    SignatureDescription,
    check_classify,
    check_predict,
    check_regress,
    classification_results,
    regression_results,
)

# How the export parses each raw column (float features are float32 in tf.Example).
_DTYPES = {"INT64": "DT_INT64", "FLOAT64": "DT_FLOAT", "STRING": "DT_STRING"}
_INT64_MAX = 2**63 - 1


class ServingService:
    """Answers TF Serving REST calls for one model name from a :class:`ModelRegistry`.

    ``labels`` maps version labels (``/labels/<label>``) to version numbers. With
    ``method_name_check`` a signature must also carry the method name of the API it is called
    through, like TF Serving's ``--enable_signature_method_name_check``. ``missing_markers``
    (``pipeline.export.MISSING_VALUES``) says how ``serving_raw`` requests mark a missing value,
    so that their request log records it as absent.
    """

    def __init__(
        self,
        model_name: str,
        dataset: DatasetDefinition,
        registry: ModelRegistry,
        request_log: RequestLog | None = None,
        *,
        labels: Mapping[str, int] | None = None,
        method_name_check: bool = False,
        missing_markers: Mapping[str, Any] | None = None,
        enricher: Any = None,
    ) -> None:
        self.model_name = model_name
        self.registry = registry
        self.encoder = ExampleEncoder(dataset)
        if enricher is not None:  # fills window and join features (pipeline.online.enrich)
            self.encoder = enricher.wrap(self.encoder)
        self.request_log = request_log
        self.labels = dict(labels or {})
        self.method_name_check = method_name_check
        self.missing_markers = missing_markers or _default_markers()
        self._raw_features = [
            {
                "name": column.name,
                "type": column.type.split_file_type,
                "dtype": _DTYPES[column.type.split_file_type],
                "optional": True,
            }
            for column in dataset.serving_columns
        ]

    # ---- which model ---------------------------------------------------------------------------

    def model(self, name: str, version: str | None, label: str | None = None) -> LoadedModel:
        """The loaded model a URL names; 404 for another model name or an unloaded version."""
        number = self._version(version, label)
        if name != self.model_name:
            raise NotFound(f"Servable not found for request: {_request(name, number)}")
        try:
            return self.registry.get(number)
        except NotFound as error:
            raise NotFound(
                f"Servable not found for request: {_request(name, number)} ({error})"
            ) from None

    def _version(self, version: str | None, label: str | None) -> int | None:
        if label is not None:
            if label not in self.labels:
                raise BadRequest(f"Unrecognized servable version label: {label}")
            return self.labels[label]
        if version is None:
            return None
        if not version.isascii() or not version.isdigit() or int(version) > _INT64_MAX:
            raise BadRequest(f"Failed to convert version: {version} to numeric.")
        return int(version)

    # ---- status and metadata -------------------------------------------------------------------

    def status(self, name: str, version: str | None = None, label: str | None = None) -> bytes:
        number = self._version(version, label)
        statuses = self.registry.statuses() if name == self.model_name else []
        if number is not None:
            statuses = [s for s in statuses if s["version"] == str(number)]
            if not statuses:
                raise NotFound(f"Could not find version {number} of model {name}")
        elif not statuses:
            raise NotFound(f"Could not find any versions of model {name}")
        return dumps({"model_version_status": statuses})

    def metadata(self, name: str, version: str | None = None, label: str | None = None) -> bytes:
        """TF Serving's GetModelMetadata JSON (every signature) plus the raw features a JSON
        request may carry and the version's blessing."""
        model = self.model(name, version, label)
        return dumps(
            {
                "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
                "metadata": {
                    "signature_def": {"signature_def": dict(model.signature_defs)},
                    "raw_features": self._raw_features,
                    "blessing": model.blessing,
                },
            }
        )

    # ---- predict -------------------------------------------------------------------------------

    def predict(
        self, name: str, version: str | None, body: bytes, label: str | None = None
    ) -> bytes:
        model = self.model(name, version, label)
        payload = parse_json(body)
        wanted = signature_name(payload)
        description = model.descriptions.get(wanted)
        if description is None:
            raise BadRequest(f'Serving signature name: "{wanted}" not found in signature def')
        check_predict(description, self.method_name_check)
        signature = _callable(model, description)
        data, columnar = predict_body(payload)
        examples_input = description.examples_input
        if examples_input is not None:
            examples = self._predict_examples(data, columnar, examples_input)
            outputs = signature.run({examples_input: examples})
            self._log(lambda: examples)
        else:
            if columnar:
                tensors = columnar_tensors(data, description.inputs)
            else:
                tensors = row_tensors(data, description.inputs)
            outputs = signature.run(tensors)
            self._log(lambda: tensors_to_examples(tensors, self.encoder, self.missing_markers))
        return dumps(predict_response(outputs, columnar), has_non_finite(outputs))

    def _predict_examples(self, data: Any, columnar: bool, input_name: str) -> list[bytes]:
        """Serialized examples of a predict body for a signature fed examples.

        Columnar: a list of instances, ``{input_name: [b64...]}`` or ``{feature: [values]}``.
        """
        encoder = self.encoder
        if not columnar:
            return instance_examples(encoder, data, "instances", input_name)
        if isinstance(data, list):
            return instance_examples(encoder, data, "inputs", input_name)
        if not isinstance(data, dict) or "b64" in data:
            raise BadRequest("inputs: expected a non-empty list or object")
        if input_name not in data:
            examples = encoder.encode_columns(data, "inputs")
            if not examples:
                raise BadRequest("inputs: feature lists are empty")
            return examples
        if set(data) != {input_name}:
            raise BadRequest(f"inputs: {input_name!r} cannot be mixed with raw features")
        values = data[input_name]
        if not isinstance(values, list) or not values:
            raise BadRequest(f"inputs.{input_name}: expected a non-empty list of b64 objects")
        return instance_examples(encoder, values, f"inputs.{input_name}", input_name)

    # ---- classify and regress ------------------------------------------------------------------

    def classify(
        self, name: str, version: str | None, body: bytes, label: str | None = None
    ) -> bytes:
        outputs, examples = self._run_api(name, version, label, body, "classify", check_classify)
        results = classification_results(outputs, examples)
        return dumps({"results": results}, has_non_finite(outputs))

    def regress(
        self, name: str, version: str | None, body: bytes, label: str | None = None
    ) -> bytes:
        outputs, examples = self._run_api(name, version, label, body, "regress", check_regress)
        values = regression_results(outputs, examples)
        return dumps({"results": values}, has_non_finite(outputs))

    def _run_api(
        self,
        name: str,
        version: str | None,
        label: str | None,
        body: bytes,
        api: str,
        check: Callable[[SignatureDescription, bool], None],
    ) -> tuple[dict[str, np.ndarray], int]:
        model = self.model(name, version, label)
        payload = parse_json(body)
        wanted = signature_name(payload)
        description = model.descriptions.get(wanted)
        if description is None:
            raise BadRequest(f"No signature was found with the name: {wanted}")
        check(description, self.method_name_check)
        signature = _callable(model, description)
        examples = self._api_examples(examples_body(payload, api))
        outputs = signature.run({API_INPUT: examples})
        self._log(lambda: examples)
        return outputs, len(examples)

    def _api_examples(self, examples: list[dict[str, Any]]) -> list[bytes]:
        """Raw-feature examples encoded; ``{"b64": ...}`` ones (serialized) checked."""
        serialized: list[bytes | None] = [None] * len(examples)
        raw, positions = [], []
        for index, example in enumerate(examples):
            if _is_serialized(example):
                where = f"examples[{index}]"
                data = decode_b64(example, where)
                self.encoder.check_example(data, where)
                serialized[index] = data
            else:
                raw.append(example)
                positions.append(index)
        if raw:
            encoded = self.encoder.encode_rows(raw, "examples", positions)
            for position, example in zip(positions, encoded, strict=True):
                serialized[position] = example
        return serialized  # type: ignore[return-value]

    def _log(self, examples: Callable[[], list[bytes] | None]) -> None:
        """Record the request's examples if it is sampled (built only then)."""
        if self.request_log is not None and self.request_log.sample():
            built = examples()
            if built:
                self.request_log.record(built)


def _callable(model: LoadedModel, description: SignatureDescription) -> Signature:
    signature = model.signatures.get(description.name)
    if signature is None:  # e.g. __saved_model_init_op: listed in metadata, not callable
        raise BadRequest(f"Failed to get input map for signature: {description.name}")
    return signature


def _is_serialized(example: Any) -> bool:
    return isinstance(example, dict) and set(example) == {"b64"}


def _request(name: str, version: int | None) -> str:
    """TF Serving's ``ServableRequest::DebugString``."""
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


def _default_markers() -> Mapping[str, Any]:
    from pipeline.export import MISSING_VALUES

    return MISSING_VALUES
