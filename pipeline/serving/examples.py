"""Raw features as JSON -> serialized ``tf.Example``s, typed by the dataset definition.

The export only accepts serialized examples, so JSON requests are encoded here. Values are
type-checked per column (one pass over a column's Python types), then serialized either with the
encoder :mod:`pipeline.predict` and the parity check use (tfx_bsl over Arrow list columns) for
large batches, or by filling the protos directly for small ones, where Arrow's per-column setup
would dominate a single request's latency. Both produce the same examples (tested), so a JSON
request reaches the transform graph exactly as a Parquet row does.

Every raw feature is optional: a missing key, ``null`` or ``[]`` is an empty feature. A value is a
scalar or a one-element list; strings may also be ``{"b64": ...}`` (TF Serving's binary form).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from tensorflow.core.example import example_pb2
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from pipeline.definition import DatasetDefinition
from pipeline.serving.errors import BadRequest

_ARROW_TYPES = {"INT64": pa.int64(), "FLOAT64": pa.float32(), "STRING": pa.large_binary()}
_EXPECTED = {
    "INT64": "an integer (INT64)",
    "FLOAT64": "a number (FLOAT64)",
    "STRING": 'a string or {"b64": ...} (STRING)',
}
_NONE = type(None)
_ALLOWED = {"INT64": {int, _NONE}, "FLOAT64": {int, float, _NONE}, "STRING": {str, bytes, _NONE}}
_PROTO_LISTS = {"INT64": "int64_list", "FLOAT64": "float_list", "STRING": "bytes_list"}
# Up to this many rows, filling protos in Python beats Arrow's fixed per-column cost
# (bench/serving_latency.py: ~25 us per row vs ~0.5 ms + ~10 us per row for 17 columns).
SMALL_BATCH = 32
_Where = Callable[[str, int], str]  # (feature, row) -> the field's name in error messages
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def decode_b64(value: Any, where: str) -> bytes:
    """Bytes of a ``{"b64": "..."}`` object; a 400 naming ``where`` for anything else."""
    if not isinstance(value, dict) or set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise BadRequest(f'{where}: expected {{"b64": "<base64 string>"}}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(f"{where}.b64: invalid base64 ({error})") from None


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    return names.get(type(value), "array" if isinstance(value, list) else type(value).__name__)


class ExampleEncoder:
    """Encodes JSON rows or columns of raw serving features as serialized ``tf.Example``s."""

    def __init__(self, dataset: DatasetDefinition) -> None:
        self.types = {c.name: c.type.split_file_type for c in dataset.serving_columns}
        self._label_only = frozenset(dataset.unknown_at_serving)

    def encode_rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        where: str,
        positions: Sequence[int] | None = None,
    ) -> list[bytes]:
        """One example per JSON object.

        ``where`` (e.g. ``instances``) and each row's position in the request name the bad field
        in error messages; ``positions`` defaults to ``0..len(rows)-1``.
        """
        positions = range(len(rows)) if positions is None else positions
        for position, row in zip(positions, rows, strict=True):
            self._check_names(row, f"{where}[{position}]")
        columns = {name: [row.get(name) for row in rows] for name in self.types}
        return self._encode(columns, len(rows), lambda name, i: f"{where}[{positions[i]}].{name}")

    def encode_columns(self, columns: Mapping[str, Any], where: str) -> list[bytes]:
        """Columnar form: ``{feature: [value per example]}``, every list of the same length."""
        self._check_names(columns, where)
        if not columns:
            raise BadRequest(f"{where}: no features given")
        lengths = set()
        for name, values in columns.items():
            if not isinstance(values, list):
                raise BadRequest(f"{where}.{name}: expected a list with one value per example")
            lengths.add(len(values))
        if len(lengths) != 1:
            sizes = {name: len(values) for name, values in columns.items()}
            raise BadRequest(f"{where}: feature lists differ in length: {sizes}")
        size = lengths.pop()
        full = {name: columns.get(name) or [None] * size for name in self.types}
        return self._encode(full, size, lambda name, i: f"{where}.{name}[{i}]")

    def _check_names(self, row: Mapping[str, Any], where: str) -> None:
        if not isinstance(row, Mapping):
            raise BadRequest(f"{where}: expected a JSON object of raw features by name")
        for name in row:
            if name in self.types:
                continue
            if name in self._label_only:
                raise BadRequest(
                    f"{where}: {name!r} is not known at serving time, not a serving feature"
                )
            raise BadRequest(
                f"{where}: unknown feature {name!r}; serving features: {', '.join(self.types)}"
            )

    def _encode(self, columns: Mapping[str, list], size: int, where: _Where) -> list[bytes]:
        if size == 0:
            return []
        typed = {
            name: _typed_values(values, self.types[name], name, where)
            for name, values in columns.items()
        }
        if size <= SMALL_BATCH:
            return _proto_examples(typed, self.types, size)
        return _arrow_examples(typed, self.types)


def _typed_values(values: list, kind: str, name: str, where: _Where) -> list:
    """``values`` checked against the column type, unwrapped to scalars or None.

    Works on the set of Python types in the column, so a well-typed column costs one pass.
    """
    seen = set(map(type, values))
    if list in seen:
        values = [_unwrap(v, where(name, i)) for i, v in enumerate(values)]
        seen = set(map(type, values))
    if kind == "STRING" and dict in seen:
        values = [
            decode_b64(v, where(name, i)) if type(v) is dict else v for i, v in enumerate(values)
        ]
        seen = set(map(type, values))
    if kind == "INT64" and float in seen:
        values = [_integral(v, where(name, i)) for i, v in enumerate(values)]
        seen = set(map(type, values))
    allowed = _ALLOWED[kind]
    if not seen <= allowed:
        index, bad = next((i, v) for i, v in enumerate(values) if type(v) not in allowed)
        raise BadRequest(f"{where(name, index)}: expected {_EXPECTED[kind]}, got {_json_type(bad)}")
    if kind == "INT64" and int in seen:
        present = [v for v in values if v is not None]
        if min(present) < _INT64_MIN or max(present) > _INT64_MAX:
            index = next(
                i
                for i, v in enumerate(values)
                if v is not None and not _INT64_MIN <= v <= _INT64_MAX
            )
            raise BadRequest(f"{where(name, index)}: integer out of INT64 range")
    return values


def _unwrap(value: Any, where: str) -> Any:
    """``[x]`` -> x, ``[]`` -> None; a raw feature holds at most one value per example."""
    if type(value) is not list:
        return value
    if len(value) > 1:
        raise BadRequest(f"{where}: expected one value, got a list of {len(value)}")
    return value[0] if value else None


def _integral(value: Any, where: str) -> Any:
    """Accept ``5.0`` for an INT64 feature (JSON writers often emit it); reject ``5.5``."""
    if type(value) is not float:
        return value
    if not value.is_integer():
        raise BadRequest(f"{where}: expected {_EXPECTED['INT64']}, got {value!r}")
    return int(value)


def _proto_examples(
    columns: Mapping[str, list], types: Mapping[str, str], size: int
) -> list[bytes]:
    """Small batches: fill ``tf.Example`` protos directly, as the Arrow encoder would.

    Like :func:`_arrow_examples`, a missing value becomes a present but empty value list.
    """
    examples = [example_pb2.Example() for _ in range(size)]
    for name, values in columns.items():
        kind = types[name]
        for example, value in zip(examples, values, strict=True):
            value_list = getattr(example.features.feature[name], _PROTO_LISTS[kind])
            if value is None:
                value_list.SetInParent()
            elif type(value) is str:
                value_list.value.append(value.encode())
            else:
                value_list.value.append(value)
    return [example.SerializeToString() for example in examples]


def _arrow_examples(columns: Mapping[str, list], types: Mapping[str, str]) -> list[bytes]:
    """Large batches: one Arrow list column per feature, encoded by tfx_bsl in C++."""
    arrays = [_list_array(values, types[name]) for name, values in columns.items()]
    batch = pa.RecordBatch.from_arrays(arrays, names=list(columns))
    return RecordBatchToExamplesEncoder().encode(batch)


def _list_array(values: list, kind: str) -> pa.LargeListArray:
    """``large_list<type>`` with ``[value]`` per present value and ``[]`` per missing one."""
    flat = pa.array(values, type=_ARROW_TYPES[kind], from_pandas=False)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    if flat.null_count:
        np.cumsum(flat.is_valid().to_numpy(zero_copy_only=False), out=offsets[1:])
        flat = flat.drop_null()
    else:
        offsets[1:] = np.arange(1, len(values) + 1)
    return pa.LargeListArray.from_arrays(pa.array(offsets), flat)


def instance_examples(
    encoder: ExampleEncoder, instances: Iterable[Any], where: str, input_name: str
) -> list[bytes]:
    """Serialized examples for row-format instances, raw JSON objects and ``b64`` ones mixed.

    An instance is ``{"b64": ...}``, ``{input_name: {"b64": ...}}`` or raw features by name; rows
    of raw features are encoded together, then every example is put back in request order.
    """
    instances = list(instances)
    serialized: list[bytes | None] = [None] * len(instances)
    raw_rows, raw_positions = [], []
    for index, instance in enumerate(instances):
        here = f"{where}[{index}]"
        if not isinstance(instance, dict):
            raise BadRequest(f"{here}: expected a JSON object, got {_json_type(instance)}")
        if set(instance) == {"b64"}:
            serialized[index] = decode_b64(instance, here)
        elif set(instance) == {input_name}:
            serialized[index] = decode_b64(instance[input_name], f"{here}.{input_name}")
        else:
            raw_rows.append(instance)
            raw_positions.append(index)
    if raw_rows:
        encoded = encoder.encode_rows(raw_rows, where, raw_positions)
        for position, example in zip(raw_positions, encoded, strict=True):
            serialized[position] = example
    return serialized  # type: ignore[return-value]
