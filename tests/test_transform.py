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
from tests.numpy_reference import assert_is_quantile, fit_zscore
from transforms import blocks, calendar

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


def _clipped_zscore_statistics(raw: np.ndarray, scaled: np.ndarray):
    """(mean, std, low, high) of a clipped z-score, recovered from raw and scaled values.

    Rows at the output's extremes are the clipped ones; the others pin down mean and std, and the
    clip bounds are the extremes mapped back.
    """
    inside = (scaled > scaled.min()) & (scaled < scaled.max())
    mean, std = fit_zscore(raw[inside], scaled[inside])
    return mean, std, mean + std * scaled.min(), mean + std * scaled.max()


def test_zscore_uses_train_mean_and_variance_and_clips(transform_output, small_splits):
    train = _raw(small_splits["train"])["trip_miles"].astype(np.float32).astype(np.float64)
    got = _transformed(transform_output, "train")["trip_miles_xf"]
    mean, std, low, high = _clipped_zscore_statistics(np.sort(train), np.sort(got))
    # z-scored with the training mean and std, clipped to the 1st/99th training percentile.
    np.testing.assert_allclose([mean, std], [train.mean(), train.std()], rtol=1e-4)
    assert_is_quantile(train, low, 0.01, blocks.QUANTILE_EPSILON + 1e-4)
    assert_is_quantile(train, high, 0.99, blocks.QUANTILE_EPSILON + 1e-4)
    want = (train.clip(low, high) - train.mean()) / train.std()
    np.testing.assert_allclose(np.sort(got), np.sort(want), rtol=1e-4, atol=1e-4)


def test_no_leakage_eval_is_scaled_with_train_statistics(transform_output, small_splits):
    """Eval fares are 3x train's; eval must be clipped and scaled with train's numbers."""
    train_log = np.log1p(_raw(small_splits["train"])["fare"].astype(np.float32)).astype(float)
    eval_log = np.log1p(_raw(small_splits["eval"])["fare"].astype(np.float32)).astype(float)
    train_got = _transformed(transform_output, "train")["fare_xf"]
    _, _, low, high = _clipped_zscore_statistics(np.sort(train_log), np.sort(train_got))
    assert_is_quantile(train_log, low, 0.01, blocks.QUANTILE_EPSILON + 1e-4)
    assert_is_quantile(train_log, high, 0.99, blocks.QUANTILE_EPSILON + 1e-4)
    got = _transformed(transform_output, "eval")["fare_xf"]
    unclipped = np.sort(got) < got.max()
    mean, std = fit_zscore(np.sort(eval_log)[unclipped], np.sort(got)[unclipped])
    np.testing.assert_allclose([mean, std], [train_log.mean(), train_log.std()], rtol=1e-4)
    want = (eval_log.clip(low, high) - train_log.mean()) / train_log.std()
    np.testing.assert_allclose(np.sort(got), np.sort(want), rtol=1e-4, atol=1e-4)
    # With its own statistics eval would be centred at 0 and clipped at its own percentiles.
    assert got.mean() > 1.0 and np.mean(eval_log > high) > 0.3


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
    # The Keras layer the export bundles (the transform graph is a TF1 SavedModel, which
    # transform_raw_features cannot apply eagerly).
    layer = tft_output.transform_features_layer()
    return {k: v.numpy() for k, v in layer(raw).items()}


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


def test_geo_cells_follow_training_quantiles_of_latitude_and_longitude(
    transform_output, small_splits, taxi
):
    raw = _raw(small_splits["train"])
    lat = np.array([np.nan if v is None else v for v in raw["pickup_latitude"]], np.float32)
    lon = np.array([np.nan if v is None else v for v in raw["pickup_longitude"]], np.float32)
    missing = np.isnan(lat) | np.isnan(lon)
    cells = _transformed(transform_output, "train")["pickup_cell_xf"]
    (feature,) = [f for f in taxi.features if f.name == "pickup_cell"]
    tft_output = tft.TFTransformOutput(str(transform_output.output_dir))
    assert feature.num_categories == 101
    assert tft_output.num_buckets_for_transformed_feature("pickup_cell_xf") == 101
    np.testing.assert_array_equal(cells[missing], 100)
    assert cells[~missing].max() < 100
    for values, buckets in ((lat, cells // 10), (lon, cells % 10)):
        boundaries = np.quantile(values[~np.isnan(values)], np.linspace(0.1, 0.9, 9))
        want = np.searchsorted(boundaries, values[~missing], side="right")
        # TFT's quantiles are approximate: each bucket may hold a few rows more or less.
        np.testing.assert_allclose(
            np.bincount(buckets[~missing], minlength=10),
            np.bincount(want, minlength=10),
            atol=0.01 * len(cells),
        )


def test_every_feature_fits_the_model_contract(transform_output, taxi):
    """Categorical: scalar int64 ids in [0, n) with n recorded; dense: float32 of fixed width."""
    tft_output = tft.TFTransformOutput(str(transform_output.output_dir))
    spec = tft_output.transformed_feature_spec()
    got = _transformed(transform_output, "eval")
    widths = {"trip_start_time": [4], "trip_pca": [2], "miles_fare_poly": [3]}
    for feature in taxi.features:
        name = feature.output_name
        if feature.is_categorical:
            assert spec[name].dtype == tf.int64 and list(spec[name].shape) == []
            n = tft_output.num_buckets_for_transformed_feature(name)
            assert feature.num_categories in (None, n)
            assert got[name].min() >= 0 and got[name].max() < n, name
        else:
            assert spec[name].dtype == tf.float32
            assert list(spec[name].shape) == widths.get(feature.name, []), name
            assert np.isfinite(got[name]).all(), name


def test_the_label_passes_through_as_the_split_files_carry_it(transform_output, small_splits):
    """The warehouse computed it in double precision; the transform must not recompute it from
    float32 copies (a tip of exactly 20% would flip)."""
    raw = _raw(small_splits["test"])
    assert np.array_equal(raw["big_tipper"], raw["tips"] > 0.2 * raw["fare"])  # the fixture's rule
    got = np.sort(_transformed(transform_output, "test")["big_tipper"])
    np.testing.assert_array_equal(got, np.sort(raw["big_tipper"]).astype(np.int64))


def test_cyclical_time_against_calendar():
    # 1970-01-04 was a Sunday; 06:00 is a quarter turn of the 24 h circle.
    sunday_6am = 3 * 86400 + 6 * 3600
    wednesday_noon = 6 * 86400 + 12 * 3600
    got = calendar.cyclical_time(tf.constant([sunday_6am, wednesday_noon], tf.int64)).numpy()
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
