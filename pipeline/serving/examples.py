"""Raw features as JSON <-> serialized ``tf.Example``s, typed by the dataset definition.

Signatures that take serialized examples get them built here from JSON rows or columns, and
serialized examples a client sends (``{"b64": ...}``) are checked here before the model sees them.
The bytes built are both what the model receives and what the request log records, so the log
holds exactly what was sent: a missing value (a missing key, ``null`` or ``[]``) is an *absent*
feature, never an empty value list (which TFDV would count as present with zero values). The
transform graph parses every raw column as a VarLen feature, for which absent and empty are the
same thing, so predictions do not depend on the choice (tested).

A value is a scalar or a one-element list; strings may also be ``{"b64": ...}`` (TF Serving's
binary form). Numbers are checked after the cast to the model's dtype: a FLOAT64 column is
float32 in ``tf.Example``, so ``1e300`` (infinite as float32), ``NaN`` and ``Infinity`` are
refused with the field's name, as are integers outside INT64.

Examples are serialized directly in protobuf's wire format, features in sorted key order, which
is byte for byte what ``Example.SerializeToString(deterministic=True)`` gives (tested); filling
protos per row costs several times more.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2

from pipeline.definition import DatasetDefinition
from pipeline.serving.errors import BadRequest

_EXPECTED = {
    "INT64": "an integer (INT64)",
    "FLOAT64": "a number (FLOAT64)",
    "STRING": 'a string or {"b64": ...} (STRING)',
}
_NONE = type(None)
_ALLOWED = {"INT64": {int, _NONE}, "FLOAT64": {int, float, _NONE}, "STRING": {str, bytes, _NONE}}
_LIST_KINDS = {"INT64": "int64_list", "FLOAT64": "float_list", "STRING": "bytes_list"}
_Where = Callable[[str, int], str]  # (feature, row) -> the field's name in error messages
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32 = struct.Struct("<f")


def decode_b64(value: Any, where: str) -> bytes:
    """Bytes of a ``{"b64": "..."}`` object; a 400 naming ``where`` for anything else."""
    if not isinstance(value, dict) or set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise BadRequest(f'{where}: expected {{"b64": "<base64 string>"}}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(f"{where}.b64: invalid base64 ({error})") from None


def json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    return names.get(type(value), "array" if isinstance(value, list) else type(value).__name__)


def float32_bytes(value: float, where: str) -> bytes:
    """Little-endian float32 of a finite value whose float32 is finite too; else a 400."""
    try:
        if math.isfinite(value):
            return _FLOAT32.pack(value)
    except OverflowError:  # beyond float32, or an integer beyond even float64
        pass
    if value != value:
        raise BadRequest(f"{where}: NaN is not a value; send null (or leave it out) if missing")
    raise BadRequest(f"{where}: {value!r} is not a finite float32 (DT_FLOAT) value")


def utf8(value: str, where: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
        raise BadRequest(f"{where}: string is not valid Unicode") from None


# ---- protobuf wire format --------------------------------------------------------------------

_ONE_BYTE = [bytes([i]) for i in range(128)]


def varint(value: int) -> bytes:
    """Canonical varint of an int64 (negative values as their 64-bit two's complement)."""
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: int, payload: bytes) -> bytes:
    return _ONE_BYTE[tag] + varint(len(payload)) + payload


class _FeatureWriter:
    """Wire bytes of one map entry ``feature[name] = value`` of ``tf.Example.features``."""

    def __init__(self, name: str, kind: str) -> None:
        self.key = b"\x0a" + varint(len(name.encode())) + name.encode()  # MapEntry.key = 1
        self.kind = kind
        # A float entry has a fixed size: precompute everything up to the 4 value bytes.
        body = len(self.key) + 10  # key, value tag+len, Feature: tag+len, FloatList: tag+len, 4
        self._float_head = b"\x0a" + varint(body) + self.key + b"\x12\x08\x12\x06\x0a\x04"

    def entry(self, value: Any) -> bytes:
        if self.kind == "FLOAT64":
            return self._float_head + value  # value: float32_bytes(...)
        if self.kind == "INT64":
            packed = varint(value)
            feature = b"\x1a" + _ONE_BYTE[len(packed) + 2] + b"\x0a" + _ONE_BYTE[len(packed)]
            feature += packed  # Feature.int64_list = 3 { value = 1 [packed] }
        else:
            feature = _delimited(0x0A, _delimited(0x0A, value))  # Feature.bytes_list = 1
        return _delimited(0x0A, self.key + _delimited(0x12, feature))


def serialize_example(entries: list[bytes]) -> bytes:
    """``Example { features = 1 { feature = 1 (entries) } }`` from sorted map entries."""
    return _delimited(0x0A, b"".join(entries))


# ---- JSON -> examples ------------------------------------------------------------------------


class ExampleEncoder:
    """Encodes JSON rows or columns of raw serving features as serialized ``tf.Example``s."""

    def __init__(self, dataset: DatasetDefinition) -> None:
        self.types = {c.name: c.type.split_file_type for c in dataset.serving_columns}
        self._label_only = frozenset(dataset.unknown_at_serving)
        self._writers = {name: _FeatureWriter(name, kind) for name, kind in self.types.items()}
        self._order = sorted(self.types, key=lambda name: name.encode())

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
            self.check_names(row, f"{where}[{position}]")
        if len(rows) == 1 and (example := self._encode_plain_row(rows[0])) is not None:
            return [example]
        columns = {name: [row.get(name) for row in rows] for name in self.types}
        return self._encode(columns, len(rows), lambda name, i: f"{where}[{positions[i]}].{name}")

    def encode_columns(self, columns: Mapping[str, Any], where: str) -> list[bytes]:
        """Columnar form: ``{feature: [value per example]}``, every list of the same length."""
        self.check_names(columns, where)
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

    def check_names(self, row: Any, where: str) -> None:
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

    def _encode_plain_row(self, row: Mapping[str, Any]) -> bytes | None:
        """The common one-row request, when every value is a plain valid scalar; else None.

        It accepts only what :meth:`_encode` accepts and gives the same bytes (tested); anything
        else (lists, b64, an invalid value) takes :meth:`_encode`, which names what is wrong.
        Skipping the per-column checks saves about half of a row's encoding time.
        """
        entries = []
        for name in self._order:
            value = row.get(name)
            if value is None:
                continue
            writer, kind, cls = self._writers[name], self.types[name], type(value)
            if kind == "FLOAT64" and (cls is float or cls is int):
                try:
                    if not math.isfinite(value):
                        return None
                    entries.append(writer.entry(_FLOAT32.pack(value)))
                except OverflowError:
                    return None
            elif kind == "INT64" and cls is int and INT64_MIN <= value <= INT64_MAX:
                entries.append(writer.entry(value))
            elif kind == "STRING" and cls is str and value.isascii():
                entries.append(writer.entry(value.encode()))
            else:
                return None
        return serialize_example(entries)

    def _encode(self, columns: Mapping[str, list], size: int, where: _Where) -> list[bytes]:
        if size == 0:
            return []
        rows: list[list[bytes]] = [[] for _ in range(size)]
        for name in self._order:  # sorted keys: protobuf's deterministic map order
            values = typed_values(columns[name], self.types[name], name, where)
            writer = self._writers[name]
            for entries, value in zip(rows, values, strict=True):
                if value is not None:
                    entries.append(writer.entry(value))
        return [serialize_example(entries) for entries in rows]

    # ---- examples a client serialized itself -------------------------------------------------

    def check_example(self, serialized: bytes, where: str) -> None:
        """A 400 unless ``serialized`` is a ``tf.Example`` the model can read.

        Each serving feature it holds must have its column's kind, at most one value, and finite
        floats; other features are ignored by the model, as in TF Serving.
        """
        try:
            example = example_pb2.Example.FromString(serialized)
        except (DecodeError, RuntimeError) as error:
            raise BadRequest(f"{where}: not a serialized tf.Example ({error})") from None
        features = example.features.feature
        for name, kind in self.types.items():
            if name not in features:
                continue
            feature = features[name]
            present = feature.WhichOneof("kind")
            if present is None:
                continue
            if present != _LIST_KINDS[kind]:
                raise BadRequest(
                    f"{where}: feature {name!r} is a {present}; the model reads {kind} "
                    f"({_LIST_KINDS[kind]})"
                )
            values = getattr(feature, present).value
            if len(values) > 1:
                raise BadRequest(f"{where}: feature {name!r} holds {len(values)} values; one")
            if kind == "FLOAT64" and values and not math.isfinite(values[0]):
                raise BadRequest(f"{where}: feature {name!r} is {values[0]!r}, not finite")


def typed_values(values: list, kind: str, name: str, where: _Where) -> list:
    """``values`` checked against the column type and encoded for the wire, None for missing.

    Floats become their float32 bytes, strings UTF-8 bytes, integers stay ints. Works on the set
    of Python types in the column, so a well-typed column costs one pass plus the encoding.
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
        raise BadRequest(f"{where(name, index)}: expected {_EXPECTED[kind]}, got {json_type(bad)}")
    if kind == "FLOAT64":
        return [
            None if v is None else float32_bytes(v, where(name, i)) for i, v in enumerate(values)
        ]
    if kind == "STRING":
        return [v if type(v) is not str else utf8(v, where(name, i)) for i, v in enumerate(values)]
    if int in seen:
        check_int64(values, lambda i: where(name, i))
    return values


def check_int64(values: list, where: Callable[[int], str]) -> None:
    present = [v for v in values if v is not None]
    if present and (min(present) < INT64_MIN or max(present) > INT64_MAX):
        index = next(
            i for i, v in enumerate(values) if v is not None and not INT64_MIN <= v <= INT64_MAX
        )
        raise BadRequest(f"{where(index)}: integer out of INT64 range")


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


def instance_examples(
    encoder: ExampleEncoder, instances: Iterable[Any], where: str, input_name: str
) -> list[bytes]:
    """Serialized examples for row-format instances: serialized ones and raw JSON objects mixed.

    An instance is ``{"b64": ...}``, ``{input_name: {"b64": ...}}``, a plain string (TF Serving
    reads it as the serialized bytes) or raw features by name; rows of raw features are encoded
    together, then every example is put back in request order. Serialized examples are checked.
    """
    instances = list(instances)
    serialized: list[bytes | None] = [None] * len(instances)
    raw_rows, raw_positions = [], []
    for index, instance in enumerate(instances):
        here = f"{where}[{index}]"
        value = instance
        if isinstance(instance, dict) and set(instance) == {input_name}:
            value, here = instance[input_name], f"{here}.{input_name}"
        if isinstance(value, str):
            serialized[index] = utf8(value, here)
        elif isinstance(value, dict) and "b64" in value:
            serialized[index] = decode_b64(value, here)
        elif isinstance(instance, dict):
            raw_rows.append(instance)
            raw_positions.append(index)
            continue
        else:
            raise BadRequest(f"{here}: expected a JSON object, got {json_type(value)}")
        encoder.check_example(serialized[index], here)
    if raw_rows:
        encoded = encoder.encode_rows(raw_rows, where, raw_positions)
        for position, example in zip(raw_positions, encoded, strict=True):
            serialized[position] = example
    return serialized  # type: ignore[return-value]
