"""The vectorized tf.Example encoder: exact protobuf bytes, parsed back by TensorFlow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from pipeline import example_encoding
from pipeline.example_encoding import encode_examples


def _fixed(values: np.ndarray, width: int) -> pa.LargeListArray:
    rows = len(values) // width
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int64))
    return pa.LargeListArray.from_arrays(offsets, pa.array(values))


def _reference(batch: pa.RecordBatch) -> list[bytes]:
    """What protobuf's own deterministic serialization makes of the same values."""
    examples = []
    for row in batch.to_pylist():
        example = tf.train.Example()
        for name, values in row.items():
            feature = example.features.feature[name]
            if isinstance(values[0], float):
                feature.float_list.value.extend(values)
            else:
                feature.int64_list.value.extend(values)
        examples.append(example.SerializeToString(deterministic=True))
    return examples


@pytest.fixture
def batch() -> pa.RecordBatch:
    rng = np.random.default_rng(3)
    rows = 500
    return pa.RecordBatch.from_arrays(
        [
            _fixed(rng.integers(0, 100, rows), 1),  # one-byte varints
            _fixed(rng.integers(0, 300, rows), 1),  # one or two bytes: several layouts
            _fixed(rng.integers(-3, 10**15, rows), 1),  # negative: ten bytes
            _fixed(rng.normal(size=rows * 4).astype(np.float32), 4),
            _fixed(rng.integers(0, 200, rows * 3), 3),  # packed list of three
            _fixed(rng.normal(size=rows).astype(np.float32), 1),
        ],
        names=["m_small", "hour_x_day_xf", "big", "a_vector", "multi", "z_score"],
    )


def test_bytes_equal_protobufs_deterministic_serialization(batch):
    assert encode_examples(batch) == _reference(batch)


def test_tensorflow_parses_back_the_same_values(batch):
    spec = {
        "m_small": tf.io.FixedLenFeature([], tf.int64),
        "hour_x_day_xf": tf.io.FixedLenFeature([], tf.int64),
        "big": tf.io.FixedLenFeature([], tf.int64),
        "a_vector": tf.io.FixedLenFeature([4], tf.float32),
        "multi": tf.io.FixedLenFeature([3], tf.int64),
        "z_score": tf.io.FixedLenFeature([], tf.float32),
    }
    parsed = tf.io.parse_example(encode_examples(batch), spec)
    for name, values in parsed.items():
        column = batch.column(batch.schema.get_field_index(name)).flatten().to_numpy()
        np.testing.assert_array_equal(values.numpy().ravel(), column)


def test_strings_and_missing_values_take_the_exact_fallback():
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([[b"a"], None, [b"bc", b"d"]], pa.large_list(pa.large_binary())),
            pa.array([[1], [2], []], pa.large_list(pa.int64())),
        ],
        names=["s", "n"],
    )
    encoded = [tf.train.Example.FromString(e) for e in encode_examples(batch)]
    assert list(encoded[2].features.feature["s"].bytes_list.value) == [b"bc", b"d"]
    assert encoded[1].features.feature["s"].WhichOneof("kind") is None  # tfx_bsl: no value
    assert list(encoded[0].features.feature["n"].int64_list.value) == [1]


def test_too_many_layouts_fall_back_to_the_same_bytes(batch, monkeypatch):
    monkeypatch.setattr(example_encoding, "MAX_LAYOUTS", 1)
    assert encode_examples(batch) == _reference(batch)


def test_empty_batch():
    assert (
        encode_examples(pa.RecordBatch.from_pydict({"x": pa.array([], pa.large_list(pa.int64()))}))
        == []
    )
