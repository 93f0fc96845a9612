"""Vectorized, deterministic ``tf.Example`` serialization of Arrow RecordBatches.

Why not tfx_bsl's encoder alone: protobuf serializes the ``map`` of features in hash order, and
that order changes from process to process, so the same rows gave different bytes on every run
(measured: three runs, three digests). It also builds one protobuf per row (about 11 us per
transformed row of the default dataset here).

The transformed features are dense, fixed-width numbers, whose wire format is a few length
prefixes, varints and raw little-endian floats. Rows whose integers need the same number of
varint bytes have byte-for-byte the same layout, so they are written together: one template
per layout (keys, tags, lengths), NumPy fills in the values. Features are in sorted key order,
which is exactly protobuf's deterministic serialization (tests compare with it byte for byte).
On transformed batches of the default dataset, 65,536 rows: 4 layouts, about 3.5 us per row.

Columns that are not fixed-width int64/float32 lists (strings, ragged or missing values), or
batches with more than ``MAX_LAYOUTS`` layouts, take tfx_bsl's encoder followed by a
deterministic re-serialization: slower, same bytes.

Wire format (tensorflow/core/example/example.proto, proto3)::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }   entry: { string key = 1; Feature value = 2; }
    Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                        Int64List int64_list = 3; } }
    FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

_FLOAT_LIST, _INT64_LIST = 0x12, 0x1A  # Feature field tags (field number << 3 | wire type 2)
_FIELD_1, _FIELD_2 = 0x0A, 0x12  # length-delimited fields 1 and 2


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _delimited(tag: int, payload_length: int) -> bytes:
    """Tag and length prefix of a length-delimited field."""
    return bytes([tag]) + _encode_varint(payload_length)


# Rows whose integers take the same number of varint bytes share a byte layout and are written
# together from one template. Category ids (most frequent first) give a handful of layouts per
# batch; data with many more (wide random integers) takes the exact fallback instead.
MAX_LAYOUTS = 256

_VARINT_LIMITS = [np.uint64(1 << (7 * i)) for i in range(1, 10)]


def _varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes each uint64 takes as a canonical varint (1 below 128, ..., 10 at most)."""
    sizes = np.ones(values.shape, dtype=np.uint8)
    top = values.max() if values.size else 0
    for limit in _VARINT_LIMITS:
        if top < limit:
            break
        sizes += values >= limit
    return sizes


def _varint_bytes(values: np.ndarray, size: int) -> np.ndarray:
    """``uint8[rows, size]`` canonical varints of uint64 ``values`` that all take ``size`` bytes."""
    shifts = np.arange(size, dtype=np.uint64) * np.uint64(7)
    groups = (values[:, None] >> shifts) & np.uint64(0x7F)
    groups[:, :-1] |= np.uint64(0x80)
    return groups.astype(np.uint8)


def _fixed_width(column: pa.Array) -> int | None:
    """``k`` if every row of a list column holds exactly k > 0 values (and none is null)."""
    is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    if column.null_count or not is_list:
        return None
    sizes = np.diff(np.asarray(column.offsets))
    width = int(sizes[0]) if len(sizes) else 0
    return width if width > 0 and np.all(sizes == width) else None


@dataclasses.dataclass
class _Column:
    """One feature of the batch: its key, its values as ``[rows, width]``, and their kind."""

    key: bytes
    values: np.ndarray  # float32 or uint64 (int64 reinterpreted), shape [rows, width]
    is_float: bool
    sizes: np.ndarray | None = None  # varint sizes of int values, uint8 [rows, width]


def _columns(batch: pa.RecordBatch) -> list[_Column] | None:
    """Dense numeric columns in key order, or None when the fast path does not apply."""
    columns = []
    for name in sorted(batch.schema.names):
        column = batch.column(batch.schema.get_field_index(name))
        width = _fixed_width(column)
        value_type = column.type.value_type if width else None
        if not width or not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
            return None
        values = np.asarray(column.flatten()).reshape(len(column), width)
        if pa.types.is_floating(value_type):
            columns.append(_Column(name.encode(), values.astype("<f4"), True))
        else:
            unsigned = values.astype(np.int64).view(np.uint64)
            columns.append(_Column(name.encode(), unsigned, False, _varint_sizes(unsigned)))
    return columns


def _layout(columns: list[_Column], sizes: list[np.ndarray | None]) -> tuple[bytes, list]:
    """Template bytes of one example layout and where each column's values go in it.

    ``sizes`` holds, per column, the varint size of each of its values (None for floats): rows
    sharing these sizes share every length prefix, so they share one template.
    """
    parts: list[bytes] = []
    slots = []
    position = 0
    entries = []
    for column, column_sizes in zip(columns, sizes, strict=True):
        width = column.values.shape[1]
        packed = 4 * width if column.is_float else int(sum(column_sizes))
        value_list = _delimited(_FIELD_1, packed)  # FloatList/Int64List.value, packed
        list_length = len(value_list) + packed
        feature = _delimited(_FLOAT_LIST if column.is_float else _INT64_LIST, list_length)
        feature_length = len(feature) + list_length
        key = _delimited(_FIELD_1, len(column.key)) + column.key
        value = _delimited(_FIELD_2, feature_length)
        entry_length = len(key) + len(value) + feature_length
        head = _delimited(_FIELD_1, entry_length) + key + value + feature + value_list
        entries.append((head, column, column_sizes, packed))
    total = sum(len(head) + packed for head, _, _, packed in entries)
    prefix = _delimited(_FIELD_1, total)
    parts.append(prefix)
    position = len(prefix)
    for head, column, column_sizes, packed in entries:
        parts.append(head)
        position += len(head)
        slots.append((position, column, column_sizes))
        parts.append(bytes(packed))
        position += packed
    return b"".join(parts), slots


def _encode_rows(columns: list[_Column], rows: np.ndarray, sizes: list) -> np.ndarray:
    """``uint8[len(rows), W]``: the examples of ``rows``, which all share one layout."""
    template, slots = _layout(columns, sizes)
    out = np.empty((len(rows), len(template)), dtype=np.uint8)
    out[:] = np.frombuffer(template, dtype=np.uint8)
    for start, column, column_sizes in slots:
        values = column.values[rows]
        if column.is_float:
            out[:, start : start + values.shape[1] * 4] = values.view(np.uint8)
            continue
        for j, size in enumerate(column_sizes):
            out[:, start : start + size] = _varint_bytes(values[:, j], int(size))
            start += int(size)
    return out


def encode_examples(batch: pa.RecordBatch) -> list[bytes]:
    """Serialized ``tf.Example`` per row, features in sorted name order, byte-deterministic."""
    if batch.num_rows == 0:
        return []
    columns = _columns(batch)
    if columns is None:
        return _encode_with_fallback(batch)
    int_columns = [c for c in columns if not c.is_float]
    if int_columns:
        signature = np.ascontiguousarray(np.concatenate([c.sizes for c in int_columns], axis=1))
        keys = signature.view(np.dtype((np.void, signature.shape[1]))).ravel()
        _, first, group_of = np.unique(keys, return_index=True, return_inverse=True)
        if len(first) > MAX_LAYOUTS:
            return _encode_with_fallback(batch)
    else:
        first, group_of = np.zeros(1, dtype=np.int64), np.zeros(batch.num_rows, dtype=np.int64)
    result: list[bytes] = [b""] * batch.num_rows
    for group, representative in enumerate(first):
        rows = np.flatnonzero(group_of == group)
        sizes = [None if c.is_float else c.sizes[representative] for c in columns]
        block = _encode_rows(columns, rows, sizes)
        flat, width = block.tobytes(), block.shape[1]
        for index, row in enumerate(rows.tolist()):
            result[row] = flat[index * width : (index + 1) * width]
    return result


def _encode_with_fallback(batch: pa.RecordBatch) -> list[bytes]:
    """Exact but slower path for strings, ragged or missing values."""
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    parse = tf.train.Example.FromString
    return [
        parse(e).SerializeToString(deterministic=True)
        for e in RecordBatchToExamplesEncoder().encode(batch)
    ]
