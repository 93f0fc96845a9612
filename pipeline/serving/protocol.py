"""TensorFlow Serving's REST JSON: request bodies -> serialized examples, outputs -> responses.

Predict takes the row format ``{"instances": [...]}`` or the columnar one ``{"inputs": ...}``;
classify takes ``{"examples": [...], "context": {...}}``. Both accept an optional
``"signature_name"``. Instances are raw features by name or serialized examples as
``{"b64": ...}``; see :mod:`pipeline.serving.examples`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from pipeline.serving.errors import BadRequest
from pipeline.serving.examples import ExampleEncoder, decode_b64, instance_examples

DEFAULT_SIGNATURE = "serving_default"
PROBABILITIES = "probabilities"
CLASS_LABELS = ("0", "1")
_PREDICT_KEYS = frozenset({"signature_name", "instances", "inputs"})
_CLASSIFY_KEYS = frozenset({"signature_name", "examples", "context"})


@dataclasses.dataclass(frozen=True)
class ParsedRequest:
    """What to run: serialized examples, the signature, and how to shape the response."""

    examples: list[bytes]
    signature_name: str
    columnar: bool = False


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    if not body.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    return payload


def signature_name(payload: Mapping[str, Any]) -> str:
    name = payload.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise BadRequest("signature_name: expected a string")
    return name or DEFAULT_SIGNATURE


def _check_keys(payload: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise BadRequest(f"unknown request field(s) {unknown}; expected {sorted(allowed)}")


def parse_predict(payload: dict[str, Any], encoder: ExampleEncoder, input_name: str):
    """A ``:predict`` body as examples; ``input_name`` is the signature's examples input."""
    _check_keys(payload, _PREDICT_KEYS)
    if ("instances" in payload) == ("inputs" in payload):
        raise BadRequest('expected exactly one of "instances" (row) or "inputs" (columnar)')
    signature = signature_name(payload)
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise BadRequest("instances: expected a non-empty list")
        return ParsedRequest(
            instance_examples(encoder, instances, "instances", input_name), signature
        )
    return ParsedRequest(
        _columnar_examples(payload["inputs"], encoder, input_name), signature, True
    )


def _columnar_examples(inputs: Any, encoder: ExampleEncoder, input_name: str) -> list[bytes]:
    """``inputs`` as a list of instances, ``{input_name: [b64...]}`` or ``{feature: [values]}``."""
    if isinstance(inputs, list):
        if not inputs:
            raise BadRequest("inputs: expected a non-empty list")
        return instance_examples(encoder, inputs, "inputs", input_name)
    if not isinstance(inputs, dict) or not inputs:
        raise BadRequest("inputs: expected a non-empty list or object")
    if input_name in inputs:
        if set(inputs) != {input_name}:
            raise BadRequest(f"inputs: {input_name!r} cannot be mixed with raw features")
        values = inputs[input_name]
        if not isinstance(values, list) or not values:
            raise BadRequest(f"inputs.{input_name}: expected a non-empty list of b64 objects")
        where = f"inputs.{input_name}"
        return [decode_b64(v, f"{where}[{i}]") for i, v in enumerate(values)]
    examples = encoder.encode_columns(inputs, "inputs")
    if not examples:
        raise BadRequest("inputs: feature lists are empty")
    return examples


def parse_classify(payload: dict[str, Any], encoder: ExampleEncoder, input_name: str):
    """A ``:classify`` body: ``examples`` of raw features (or b64) plus optional ``context``."""
    _check_keys(payload, _CLASSIFY_KEYS)
    examples = payload.get("examples")
    if not isinstance(examples, list) or not examples:
        raise BadRequest("examples: expected a non-empty list")
    context = payload.get("context") or {}
    if not isinstance(context, dict):
        raise BadRequest("context: expected a JSON object of raw features")
    if context:
        encoder.encode_rows([context], "context")  # names and types checked once, here
        merged = []
        for index, example in enumerate(examples):
            if not isinstance(example, dict) or "b64" in example:
                raise BadRequest(f"examples[{index}]: context combines only with raw features")
            merged.append({**context, **example})
        examples = merged
    return ParsedRequest(
        instance_examples(encoder, examples, "examples", input_name), signature_name(payload)
    )


def predict_response(outputs: Mapping[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    """``{"predictions": [...]}`` per instance, or ``{"outputs": ...}`` per output tensor.

    As in TF Serving, a signature with a single output drops the output name.
    """
    if columnar:
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values()))}
        return {"outputs": dict(outputs)}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    names = list(outputs)
    rows = zip(*(outputs[name] for name in names), strict=True)
    return {"predictions": [dict(zip(names, row, strict=True)) for row in rows]}


def classify_response(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{"results": [[["0", p0], ["1", p1]], ...]}`` from the positive-class probability."""
    if PROBABILITIES not in outputs:
        raise BadRequest(f"signature has no {PROBABILITIES!r} output to classify with")
    positive = np.asarray(outputs[PROBABILITIES], dtype=np.float32).reshape(-1)
    negative = np.float32(1.0) - positive
    return {
        "results": [
            [[CLASS_LABELS[0], q], [CLASS_LABELS[1], p]]
            for q, p in zip(negative, positive, strict=True)
        ]
    }


def dumps(payload: Any) -> bytes:
    """JSON bytes; NumPy arrays and scalars keep their precision (float32 stays short)."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
