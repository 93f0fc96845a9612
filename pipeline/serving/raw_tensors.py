"""JSON -> named input tensors, for signatures that take tensors rather than serialized examples.

TF Serving's row format ``{"instances": [{input: value, ...}, ...]}`` needs every named input in
every instance, nothing else; the columnar format ``{"inputs": {input: [value, ...], ...}}``
needs every input too. Values are checked against each input's dtype: ``DT_FLOAT`` takes JSON
numbers, and ``NaN`` (a client's missing-value marker for ``serving_raw``), but not ``Infinity``
or numbers that overflow float32; ``DT_INT64`` takes integers within INT64 (``5.0`` too);
``DT_STRING`` takes strings and ``{"b64": ...}``. This server decodes 1-D (``[batch]``) inputs,
the only kind the export's signatures have; any other input shape is refused by name.

:func:`tensors_to_examples` turns such tensors back into ``tf.Example``s for the request log,
with the ``serving_raw`` markers read as missing (absent features).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.serving.errors import BadRequest
from pipeline.serving.examples import (
    ExampleEncoder,
    check_int64,
    decode_b64,
    float32_bytes,
    json_type,
    utf8,
)
from pipeline.serving.signatures import TensorDescription

_NUMPY = {"DT_FLOAT": np.float32, "DT_INT64": np.int64}
_EXPECTED = {
    "DT_FLOAT": "a number (DT_FLOAT)",
    "DT_INT64": "an integer (DT_INT64)",
    "DT_STRING": 'a string or {"b64": ...} (DT_STRING)',
}


def row_tensors(
    instances: list, inputs: Mapping[str, TensorDescription], where: str = "instances"
) -> dict[str, np.ndarray]:
    """``{"instances": [...]}`` with one object of named values per instance."""
    _check_decodable(inputs)
    names = set(inputs)
    columns: dict[str, list] = {name: [] for name in inputs}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or set(instance) == {"b64"}:
            raise BadRequest(
                f"{where}[{index}]: expected an object with one value per named input "
                f"({', '.join(inputs)}), got {json_type(instance)}"
            )
        if instance.keys() != names:
            missing = sorted(names - instance.keys())
            extra = sorted(instance.keys() - names)
            raise BadRequest(
                f"{where}[{index}]: keys must be equal to the signature's inputs; "
                f"missing {missing}, unknown {extra}"
            )
        for name in inputs:
            columns[name].append(instance[name])
    return {
        name: _tensor(values, inputs[name].dtype, lambda i, n=name: f"{where}[{i}].{n}")
        for name, values in columns.items()
    }


def columnar_tensors(
    values: Any, inputs: Mapping[str, TensorDescription], where: str = "inputs"
) -> dict[str, np.ndarray]:
    """``{"inputs": {input: [value, ...], ...}}``: every named input, lists of one length."""
    _check_decodable(inputs)
    if not isinstance(values, dict) or set(values) == {"b64"}:
        raise BadRequest(
            f"{where}: expected an object of named inputs ({', '.join(inputs)}) as multiple "
            "input tensors are required"
        )
    for name in inputs:
        if name not in values:
            raise BadRequest(f"Missing named input: {name} in 'inputs' object.")
    unknown = sorted(set(values) - set(inputs))
    if unknown:
        raise BadRequest(f"{where}: unknown input(s) {unknown}; inputs: {', '.join(inputs)}")
    tensors = {}
    for name, tensor in inputs.items():
        column = values[name]
        if not isinstance(column, list):
            raise BadRequest(f"{where}.{name}: expected a list with one value per row")
        tensors[name] = _tensor(column, tensor.dtype, lambda i, n=name: f"{where}.{n}[{i}]")
    sizes = {name: len(t) for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise BadRequest(f"{where}: inputs differ in length: {sizes}")
    return tensors


def _check_decodable(inputs: Mapping[str, TensorDescription]) -> None:
    for name, tensor in inputs.items():
        if tensor.shape != (-1,) or tensor.dtype not in _EXPECTED:
            raise BadRequest(
                f"input {name!r} ({tensor.dtype}, shape {list(tensor.shape or [])}): this "
                "server decodes only 1-D DT_FLOAT, DT_INT64 and DT_STRING inputs"
            )


def _tensor(values: list, dtype: str, where) -> np.ndarray:
    if dtype == "DT_STRING":
        return np.array([_string(v, where(i)) for i, v in enumerate(values)], dtype=object)
    seen = set(map(type, values))
    if dtype == "DT_INT64" and float in seen:
        values = [_integral(v, where(i)) for i, v in enumerate(values)]
        seen = set(map(type, values))
    allowed = {int} if dtype == "DT_INT64" else {int, float}
    if not seen <= allowed:
        index, bad = next((i, v) for i, v in enumerate(values) if type(v) not in allowed)
        raise BadRequest(f"{where(index)}: expected {_EXPECTED[dtype]}, got {json_type(bad)}")
    if dtype == "DT_INT64":
        check_int64(values, where)
        return np.array(values, dtype=np.int64)
    for i, v in enumerate(values):
        if v == v:  # NaN is serving_raw's missing marker; anything else non-finite
            float32_bytes(v, where(i))  # (Infinity, 1e300) is refused
    return np.array(values, dtype=np.float32)


def _string(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return utf8(value, where)
    if isinstance(value, dict):
        return decode_b64(value, where)
    raise BadRequest(f"{where}: expected {_EXPECTED['DT_STRING']}, got {json_type(value)}")


def _integral(value: Any, where: str) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is float:
        raise BadRequest(f"{where}: expected {_EXPECTED['DT_INT64']}, got {value!r}")
    return value


def tensors_to_examples(
    tensors: Mapping[str, np.ndarray],
    encoder: ExampleEncoder,
    missing: Mapping[str, Any],
) -> list[bytes] | None:
    """The rows of raw-column tensors as ``tf.Example``s, markers as absent features.

    ``missing`` maps a split-file type to its marker (``pipeline.export.MISSING_VALUES``). Returns
    None when the tensors are not the raw serving columns (another kind of signature).
    """
    if set(tensors) != set(encoder.types):
        return None
    rows = len(next(iter(tensors.values()))) if tensors else 0
    columns: dict[str, Sequence] = {}
    for name, kind in encoder.types.items():
        values = tensors[name]
        if kind == "FLOAT64":
            columns[name] = [None if math.isnan(v) else v for v in values.tolist()]
        else:
            marker = missing[kind]
            marker = marker.encode() if isinstance(marker, str) else marker
            columns[name] = [None if v == marker else v for v in values.tolist()]
    return encoder.encode_rows(
        [{name: columns[name][i] for name in columns} for i in range(rows)], "instances"
    )
