"""The serving logic without HTTP: model status, metadata, predict and classify on JSON bodies.

:mod:`pipeline.serving.app` only routes requests here, so the latency benchmark can time the
same code in-process and over HTTP.
"""

from __future__ import annotations

from typing import Any

from pipeline.definition import DatasetDefinition
from pipeline.serving.errors import BadRequest, NotFound
from pipeline.serving.examples import ExampleEncoder
from pipeline.serving.models import LoadedModel, ModelRegistry
from pipeline.serving.protocol import (
    DEFAULT_SIGNATURE,
    classify_response,
    parse_classify,
    parse_json,
    parse_predict,
    predict_response,
    signature_name,
)
from pipeline.serving.request_log import RequestLog

# How the export parses each raw column (float features are float32 in tf.Example).
_DTYPES = {"INT64": "DT_INT64", "FLOAT64": "DT_FLOAT", "STRING": "DT_STRING"}


class ServingService:
    """Answers TF Serving REST calls for one model name from a :class:`ModelRegistry`."""

    def __init__(
        self,
        model_name: str,
        dataset: DatasetDefinition,
        registry: ModelRegistry,
        request_log: RequestLog | None = None,
        enricher: Any = None,
    ) -> None:
        self.model_name = model_name
        self.registry = registry
        self.encoder = ExampleEncoder(dataset)
        if enricher is not None:  # fills window and join features (pipeline.online.enrich)
            self.encoder = enricher.wrap(self.encoder)
        self.request_log = request_log
        self._raw_features = [
            {
                "name": column.name,
                "type": column.type.split_file_type,
                "dtype": _DTYPES[column.type.split_file_type],
                "optional": True,
            }
            for column in dataset.serving_columns
        ]

    def model(self, name: str, version: str | None) -> LoadedModel:
        """The loaded model a URL names; 404 for another model name or an unloaded version."""
        if name != self.model_name:
            raise NotFound(f"model {name!r} not found; this server serves {self.model_name!r}")
        return self.registry.get(_version_number(version))

    def status(self, name: str, version: str | None = None) -> dict[str, Any]:
        if name != self.model_name:
            raise NotFound(f"model {name!r} not found; this server serves {self.model_name!r}")
        statuses = self.registry.statuses()
        if version is not None:
            wanted = str(_version_number(version))
            statuses = [s for s in statuses if s["version"] == wanted]
            if not statuses:
                raise NotFound(f"version {version} of model {name!r} not found")
        elif not statuses:
            raise NotFound(f"model {name!r} has no version loaded yet")
        return {"model_version_status": statuses}

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """TF Serving's GetModelMetadata JSON plus the raw features a JSON request may carry."""
        model = self.model(name, version)
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
            "metadata": {
                "signature_def": {"signature_def": dict(model.signature_defs)},
                "raw_features": self._raw_features,
                "blessing": model.blessing,
            },
        }

    def predict(self, name: str, version: str | None, body: bytes) -> dict[str, Any]:
        model = self.model(name, version)
        payload = parse_json(body)
        input_name = model.input_name(signature_name(payload))
        request = parse_predict(payload, self.encoder, input_name)
        outputs = model.run(request.signature_name, request.examples)
        self._log(request.examples)
        return predict_response(outputs, request.columnar)

    def classify(self, name: str, version: str | None, body: bytes) -> dict[str, Any]:
        model = self.model(name, version)
        payload = parse_json(body)
        request = parse_classify(payload, self.encoder, model.input_name(DEFAULT_SIGNATURE))
        if request.signature_name != DEFAULT_SIGNATURE:
            raise BadRequest(f"signature_name: classify supports only {DEFAULT_SIGNATURE!r}")
        outputs = model.run(request.signature_name, request.examples)
        self._log(request.examples)
        return classify_response(outputs)

    def _log(self, examples: list[bytes]) -> None:
        if self.request_log is not None:
            self.request_log.maybe_record(examples)


def _version_number(version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isascii() or not version.isdigit():
        raise NotFound(f"version {version!r} not found: versions are numbers")
    return int(version)
