"""The transform stage's numbers against independent NumPy computations on the same data."""

from __future__ import annotations

import glob
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipeline.arrow_io import to_list_batch
from pipeline.raw_schema import raw_feature_spec
from transforms import blocks

pytestmark = pytest.mark.slow


def _raw(split_dir) -> dict[str, np.ndarray]:
    table = pq.read_table(glob.glob(f"{split_dir}/*.parquet"))
    return {name: table.column(name).to_pandas().to_numpy() for name in table.column_names}


def _transformed(transform_output, split: str) -> dict[str, np.ndarray]:
    tft_output = tft.TFTransformOutput(str(transform_output.output_dir))
    files = sorted(glob.glob(transform_output.example_patterns[split]))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(100_000)
    (batch,) = list(records)
    parsed = tf.io.parse_example(batch, tft_output.transformed_feature_spec())
    return {k: v.numpy() for k, v in parsed.items()}


def test_every_split_is_written_with_all_rows(transform_output, small_splits):
    for split, directory in small_splits.items():
        expected = pq.read_metadata(glob.glob(f"{directory}/*.parquet")[0]).num_rows
        assert transform_output.rows[split] == expected
        assert len(_transformed(transform_output, split)["fare_xf"]) == expected


def test_zscore_uses_train_mean_and_variance(transform_output, small_splits):
    train = _raw(small_splits["train"])["trip_miles"].astype(np.float32)
    got = _transformed(transform_output, "train")["trip_miles_xf"]
    want = (train - train.mean()) / train.std()
    np.testing.assert_allclose(np.sort(got), np.sort(want), rtol=1e-4, atol=1e-5)
    assert abs(got.mean()) < 1e-4 and abs(got.std() - 1) < 1e-3


def test_no_leakage_eval_is_scaled_with_train_statistics(transform_output, small_splits):
    """Eval fares are 3x train's; eval must be scaled with train's mean/std, not its own."""
    train_log = np.log1p(_raw(small_splits["train"])["fare"].astype(np.float32))
    eval_log = np.log1p(_raw(small_splits["eval"])["fare"].astype(np.float32))
    got = _transformed(transform_output, "eval")["fare_xf"]
    want = (eval_log - train_log.mean()) / train_log.std()
    np.testing.assert_allclose(np.sort(got), np.sort(want), rtol=1e-4, atol=1e-4)
    # Scaled with its own statistics eval would be centred at 0; with train's it is far above.
    assert got.mean() > 1.0


def test_vocabulary_is_ordered_by_training_frequency(transform_output, small_splits):
    tft_output = tft.TFTransformOutput(str(transform_output.output_dir))
    vocabulary = [v.decode() for v in tft_output.vocabulary_by_name("payment_type_vocab")]
    values, counts = np.unique(_raw(small_splits["train"])["payment_type"], return_counts=True)
    by_count = [v for _, v in sorted(zip(-counts, values, strict=True))]
    assert set(vocabulary) == set(values)
    assert [int(c) for c in sorted(counts, reverse=True)] == sorted(
        (int(counts[list(values).index(v)]) for v in vocabulary), reverse=True
    )
    assert vocabulary[:2] == by_count[:2] or set(vocabulary[:2]) == set(by_count[:2])


def _transform_raw(transform_output, taxi, table):
    tft_output = tft.TFTransformOutput(str(transform_output.output_dir))
    spec = raw_feature_spec(taxi)
    batch = to_list_batch(table)
    raw = {}
    for name, feature in spec.items():
        column = batch.column(batch.schema.get_field_index(name)).to_pylist()
        raw[name] = tf.ragged.constant(
            [v if v else [] for v in column], dtype=feature.dtype
        ).to_sparse()
    return {k: v.numpy() for k, v in tft_output.transform_raw_features(raw).items()}


def test_unseen_category_goes_to_an_oov_bucket(transform_output, taxi):
    from tests.conftest import make_rows

    table = make_rows(4, seed=9)
    payment = table.column("payment_type").to_pylist()
    payment[0] = "Bitcoin"  # never seen in training
    table = table.set_column(
        table.schema.get_field_index("payment_type"), "payment_type", [payment]
    )
    tft_output = tft.TFTransformOutput(str(transform_output.output_dir))
    vocab_size = tft_output.vocabulary_size_by_name("payment_type_vocab")
    ids = _transform_raw(transform_output, taxi, table)["payment_type_xf"]
    assert vocab_size <= ids[0] < vocab_size + 2
    known = tft_output.vocabulary_by_name("payment_type_vocab")
    assert all(known[i].decode() == p for i, p in zip(ids[1:], payment[1:], strict=True))


def test_quantile_buckets_follow_training_quantiles(transform_output, small_splits):
    lat = _raw(small_splits["train"])["pickup_latitude"]
    filled = np.array([0.0 if v is None or np.isnan(v) else v for v in lat], dtype=np.float32)
    got = _transformed(transform_output, "train")["pickup_latitude_xf"]
    boundaries = np.quantile(filled, np.linspace(0.1, 0.9, 9))
    want = np.searchsorted(boundaries, filled, side="right")
    assert got.min() >= 0 and got.max() <= 9
    # TFT's quantiles are approximate: each bucket may hold a few rows more or less.
    np.testing.assert_allclose(
        np.bincount(got, minlength=10), np.bincount(want, minlength=10), atol=0.01 * len(got)
    )


def test_label_is_tips_above_twenty_percent_of_fare(transform_output, small_splits):
    raw = _raw(small_splits["test"])
    want = np.sort(raw["tips"].astype(np.float32) > 0.2 * raw["fare"].astype(np.float32))
    got = np.sort(_transformed(transform_output, "test")["big_tipper"])
    np.testing.assert_array_equal(got, want.astype(np.int64))


def test_cyclical_time_against_calendar():
    # 1970-01-04 was a Sunday; 06:00 is a quarter turn of the 24 h circle.
    sunday_6am = 3 * 86400 + 6 * 3600
    wednesday_noon = 6 * 86400 + 12 * 3600
    got = blocks.cyclical_time(tf.constant([sunday_6am, wednesday_noon], tf.int64)).numpy()
    hour, day = 6 / 24 * 2 * math.pi, (0 + 6 / 24) / 7 * 2 * math.pi
    np.testing.assert_allclose(
        got[0], [math.sin(hour), math.cos(hour), math.sin(day), math.cos(day)], atol=1e-6
    )
    day = (3 + 12 / 24) / 7 * 2 * math.pi
    np.testing.assert_allclose(got[1, 2:], [math.sin(day), math.cos(day)], atol=1e-6)


def test_hashed_cross_is_stable_and_in_range():
    a = tf.constant([1, 1, 2], tf.int64)
    b = tf.constant([3, 3, 3], tf.int64)
    ids = blocks.hashed_cross([a, b], 16).numpy()
    assert ids[0] == ids[1] and ids.min() >= 0 and ids.max() < 16
    fingerprint = tf.strings.to_hash_bucket_fast(tf.constant(["1_x_3"]), 16).numpy()[0]
    assert ids[0] == fingerprint


def test_fill_in_missing_uses_the_default():
    sparse = tf.SparseTensor(indices=[[0, 0], [2, 0]], values=[5.0, 7.0], dense_shape=[3, 1])
    np.testing.assert_array_equal(blocks.fill_in_missing(sparse, -1.0).numpy(), [5.0, -1.0, 7.0])


def test_transform_publishes_nothing_when_it_fails(taxi, tmp_path):
    from pipeline.transform import run_transform

    out = tmp_path / "transform"
    with pytest.raises(Exception):  # noqa: B017 - any failure will do, the point is the output
        run_transform(taxi, {"train": tmp_path / "missing"}, out, ["--runner", "DirectRunner"])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".transform")]
