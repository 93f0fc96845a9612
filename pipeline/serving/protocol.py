"""TensorFlow Serving's REST JSON: request bodies in, response bodies out.

* ``:predict``: the row format ``{"instances": [...]}`` or the columnar ``{"inputs": ...}``,
  answered with ``{"predictions": ...}`` or ``{"outputs": ...}``; a single output drops its
  name. Signatures fed serialized examples take ``{"b64": ...}`` instances (or raw features by
  name, see :mod:`pipeline.serving.examples`); signatures with named tensor inputs
  (``serving_raw``) take one value per input (see :mod:`pipeline.serving.raw_tensors`).
* ``:classify`` / ``:regress``: ``{"examples": [...], "context": {...}}``, answered with
  ``{"results": ...}`` (the key TF Serving's code and its documented example use; its API page's
  format section says ``result``).

JSON numbers follow TF Serving's parser: the bare tokens ``NaN``, ``Infinity``, ``-Infinity``
(and RapidJSON's ``Inf``, ``-Inf``, ``-NaN``) are accepted, and non-finite floats in responses
are written as those tokens, not as ``null``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from pipeline.serving.errors import BadRequest

DEFAULT_SIGNATURE = "serving_default"
_PREDICT_KEYS = frozenset({"signature_name", "instances", "inputs"})
_EXAMPLES_KEYS = frozenset({"signature_name", "examples", "context"})
BYTES_SUFFIX = "_bytes"  # TF Serving: a DT_STRING tensor named *_bytes holds binary data


# ---- requests --------------------------------------------------------------------------------

# A JSON string (kept as it is) or one of RapidJSON's non-finite number tokens.
_SPECIAL_NUMBERS = re.compile(r'"(?:[^"\\]|\\.)*"|(-?)(NaN|Infinity|Inf)(?![A-Za-z0-9_])')


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    if not body.strip():
        raise BadRequest("JSON Parse error: The document is empty")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        payload = _parse_leniently(body, error)
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    return payload


def _parse_leniently(body: bytes, strict_error: Exception) -> Any:
    """What orjson refuses but TF Serving's parser reads: non-finite number tokens, numbers
    beyond float64 (read as infinite, then refused by the field they fill), lone surrogate
    escapes (refused by the field too)."""
    try:
        text = body.decode("utf-8")
        text = _SPECIAL_NUMBERS.sub(_normalized_token, text)
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest(f"request body is not valid JSON: {strict_error}") from None


def _normalized_token(match: re.Match) -> str:
    if match.group(2) is None:
        return match.group(0)
    if match.group(2) == "NaN":
        return "NaN"
    return "-Infinity" if match.group(1) else "Infinity"


def signature_name(payload: Mapping[str, Any]) -> str:
    name = payload.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise BadRequest("'signature_name' key must be a string value.")
    return name or DEFAULT_SIGNATURE


def check_keys(payload: Mapping[str, Any], api: str) -> None:
    allowed = _PREDICT_KEYS if api == "predict" else _EXAMPLES_KEYS
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise BadRequest(f"unknown request field(s) {unknown}; expected {sorted(allowed)}")


def predict_body(payload: Mapping[str, Any]) -> tuple[Any, bool]:
    """``(instances or inputs, columnar)`` of a ``:predict`` body."""
    check_keys(payload, "predict")
    if "instances" in payload and "inputs" in payload:
        raise BadRequest("expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise BadRequest("Expecting 'instances' to be an list/array")
        if not instances:
            raise BadRequest("No values in 'instances' array")
        return instances, False
    if "inputs" in payload:
        inputs = payload["inputs"]
        if inputs in ([], {}):
            raise BadRequest("inputs: expected a non-empty list or object")
        return inputs, True
    raise BadRequest("Missing 'inputs' or 'instances' key")


def examples_body(payload: Mapping[str, Any], api: str) -> list[dict[str, Any]]:
    """The examples of a ``:classify`` / ``:regress`` body, each merged with ``context``.

    As in TF Serving (which prepends the serialized context to each serialized example), a
    feature in both takes the example's value.
    """
    check_keys(payload, api)
    if "examples" not in payload:
        raise BadRequest(f"When method is {api}, key 'examples' is expected and was not found")
    examples = payload["examples"]
    if not isinstance(examples, list):
        raise BadRequest("Expecting 'examples' value to be an list/array")
    if not examples:
        raise BadRequest("'examples' value is an empty array")
    context = payload.get("context", {})
    if not isinstance(context, dict):
        raise BadRequest("context: Example must be JSON object")
    for index, example in enumerate(examples):
        if not isinstance(example, dict):
            raise BadRequest(f"examples[{index}]: Example must be JSON object")
        if context and set(example) == {"b64"}:
            raise BadRequest(f"examples[{index}]: context combines only with raw features")
    return [{**context, **example} for example in examples] if context else examples


# ---- responses -------------------------------------------------------------------------------


def predict_response(outputs: Mapping[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    """``{"predictions": [...]}`` per instance, or ``{"outputs": ...}`` per output tensor."""
    values = {name: output_json(name, tensor) for name, tensor in outputs.items()}
    if columnar:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {}
    for name, tensor in outputs.items():
        if tensor.ndim == 0:
            raise BadRequest(f"Tensor name: {name} has no shape information ")
        sizes[name] = tensor.shape[0]
    if len(set(sizes.values())) > 1:
        raise BadRequest(f"outputs have inconsistent batch sizes: {sizes}")
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    names = list(values)
    rows = zip(*(values[name] for name in names), strict=True)
    return {"predictions": [dict(zip(names, row, strict=True)) for row in rows]}


def output_json(name: str, tensor: np.ndarray) -> Any:
    """A tensor as JSON-ready values: strings as text, or ``{"b64": ...}`` for ``*_bytes``."""
    if tensor.dtype != np.object_:
        return tensor
    if name.endswith(BYTES_SUFFIX):
        convert = lambda b: {"b64": base64.b64encode(b).decode()}  # noqa: E731
    else:
        convert = lambda b: b.decode("utf-8", errors="replace")  # noqa: E731
    return np.vectorize(convert, otypes=[object])(tensor).tolist() if tensor.size else []


def dumps(payload: Any, non_finite: bool = False) -> bytes:
    """JSON bytes; float32 stays short (as TF Serving writes it).

    With ``non_finite`` (some float output is NaN or infinite: :func:`has_non_finite`) such
    values are written as TF Serving writes them, ``NaN`` / ``Infinity`` / ``-Infinity``, where
    orjson would write ``null``.
    """
    if non_finite:
        return json.dumps(_plain(payload), allow_nan=True, separators=(",", ":")).encode()
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def has_non_finite(tensors: Mapping[str, np.ndarray]) -> bool:
    return any(t.dtype.kind == "f" and not np.isfinite(t).all() for t in tensors.values())


def _plain(value: Any) -> Any:
    """Python values for the json module; float32 through its shortest text, not float64's."""
    if isinstance(value, np.ndarray):
        return _plain(list(value)) if value.ndim else _plain(value.item())
    if isinstance(value, np.float32):
        return float(str(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
