"""Every preprocessing block against an independent NumPy computation on the same data.

One real TFT analyze+transform (``pipeline.transform.run_transform`` on Parquet, DirectRunner)
runs over a small synthetic table through a definition that uses every transform kind; each test
recomputes its feature from the raw table with NumPy. A row-id feature keeps rows aligned.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
from collections import Counter

import farmhash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipeline.arrow_io import to_list_batch
from pipeline.definition import (
    BinaryLabel,
    Column,
    ColumnType,
    DatasetDefinition,
    DefinitionError,
    Feature,
    ModelPart,
    SplitSettings,
)
from pipeline.raw_schema import raw_feature_spec
from tests.numpy_reference import assert_is_quantile, fit_zscore, present
from transforms import blocks, kinds

pytestmark = pytest.mark.slow

ROWS = 2000
EPSILON = blocks.QUANTILE_EPSILON
CITY_WEIGHTS = {"A": 400, "B": 250, "C": 120, "D": 60, "E": 7, "F": 3}  # E, F: rare
TAG_SETS = ["red", "red|green", "green| blue", "blue|red|red", "", "yellow|green", "red|"]
LAT_BOUNDARIES = (41.85, 41.9, 41.95)
LON_BOUNDARIES = (-87.7, -87.6)
FREQUENCY_THRESHOLD = 10

K = kinds
DEEP, BOTH, WIDE = ModelPart.DEEP, ModelPart.BOTH, ModelPart.WIDE
FEATURES = (
    Feature("row", "row", K.Identity(num_buckets=10**9), WIDE, default=-1),
    Feature("x_mean", "x", K.Numeric(impute="mean"), DEEP),
    Feature("x_median", "x", K.Numeric(impute="median"), DEEP),
    Feature("x_clip", "x", K.Numeric(clip=(0.01, 0.99)), DEEP, default=0.0),
    Feature("x_clean_z", "x", K.ZScore(impute="mean", clip=(0.05, 0.95)), DEEP),
    Feature("x_log_z", "x", K.LogZScore(impute="median"), DEEP),
    Feature("y_01", "y", K.Scale01(), DEEP, default=0.0),
    Feature("y_01_clip", "y", K.Scale01(clip=(0.01, 0.99)), DEEP, default=0.0),
    Feature("y_bucket", "y", K.QuantileBucket(num_buckets=4), BOTH, default=0.0),
    Feature("x_bucket", "x", K.QuantileBucket(num_buckets=4, impute="mean"), BOTH),
    Feature(
        "city_vocab",
        "city",
        K.Vocabulary(frequency_threshold=FREQUENCY_THRESHOLD, num_oov_buckets=3),
        BOTH,
        default="",
    ),
    Feature("city_top2", "city", K.Vocabulary(top_k=2, num_oov_buckets=1), BOTH, default=""),
    Feature("city_onehot", "city", K.OneHot(top_k=8, num_oov_buckets=2), DEEP, default=""),
    Feature(
        "tags_multi",
        "tags",
        K.MultiHot(top_k=3, num_oov_buckets=1, delimiter="|"),
        DEEP,
        default="",
    ),
    Feature("city_hash", "city", K.Hash(hash_buckets=64), BOTH, default=""),
    Feature("w_hash", "w", K.Hash(hash_buckets=16), BOTH, default=0),
    Feature("xyw_pca", ("x", "y", "w"), K.PCA(output_dim=2, log=True), DEEP, default=0.0),
    Feature(
        "xyw_pca_cov",
        ("x", "y", "w"),
        K.PCA(output_dim=2, log=True, standardize=False),
        DEEP,
        default=0.0,
    ),
    Feature("xy_poly", ("x", "y"), K.Polynomial(impute="mean", degree=3), DEEP),
    Feature(
        "cell_fixed",
        ("lat", "lon"),
        K.GeoCell(lat_boundaries=LAT_BOUNDARIES, lon_boundaries=LON_BOUNDARIES),
        BOTH,
    ),
    Feature("cell_quantile", ("lat", "lon"), K.GeoCell(lat_buckets=4, lon_buckets=3), BOTH),
)
FLOAT, INT, STRING = ColumnType.FLOAT64, ColumnType.INT64, ColumnType.STRING
BLOCKS = DatasetDefinition(
    name="blocks",
    table="blocks.rows",
    columns=(
        Column("row", INT),
        Column("x", FLOAT),
        Column("y", FLOAT),
        Column("w", INT),
        Column("city", STRING),
        Column("tags", STRING),
        Column("lat", FLOAT),
        Column("lon", FLOAT),
        Column("tip", FLOAT),
    ),
    label=BinaryLabel("big", "tip", ">", 0.2, scale_column="y"),
    features=FEATURES,
    split=SplitSettings(key_columns=("row",)),
    unknown_at_serving=("tip",),
)


def make_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(1.0, 0.6, rows)
    x[rng.random(rows) < 0.01] *= 50  # outliers for the clip
    weights = np.array(list(CITY_WEIGHTS.values()), dtype=float)
    city = rng.choice(list(CITY_WEIGHTS), rows, p=weights / weights.sum())

    def with_nulls(values, rate):
        missing = rng.random(rows) < rate
        return [None if m else v.item() for v, m in zip(values, missing, strict=True)]

    y = 2 * x + rng.normal(0, 1, rows)
    tip = rng.random(rows)
    return pa.table(
        {
            "row": pa.array(np.arange(rows), pa.int64()),
            "x": pa.array(with_nulls(x, 0.1), pa.float64()),
            "y": pa.array(y, pa.float64()),
            "w": pa.array(with_nulls(rng.integers(0, 100, rows), 0.05), pa.int64()),
            "city": pa.array(with_nulls(city, 0.05), pa.string()),
            "tags": pa.array(rng.choice(TAG_SETS, rows).tolist(), pa.string()),
            "lat": pa.array(with_nulls(rng.normal(41.9, 0.05, rows), 0.05), pa.float64()),
            "lon": pa.array(with_nulls(rng.normal(-87.65, 0.06, rows), 0.05), pa.float64()),
            "tip": pa.array(tip, pa.float64()),
            "big": pa.array((tip > 0.2 * y).astype(np.int64), pa.int64()),
        }
    )


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_table(ROWS, seed=11)


@pytest.fixture(scope="module")
def raw(table) -> dict[str, list]:
    """Raw columns as the pipeline sees them (floats travel as float32)."""
    out = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if BLOCKS.split_column(name).type is FLOAT:
            values = [None if v is None else float(np.float32(v)) for v in values]
        out[name] = values
    return out


@pytest.fixture(scope="module")
def analyzed(table, tmp_path_factory):
    """One real analyze+transform of the table; (tft_output, features by name, row-aligned)."""
    from pipeline.transform import run_transform

    root = tmp_path_factory.mktemp("blocks")
    split = root / "train"
    split.mkdir()
    pq.write_table(table, split / "part-00000.parquet")
    result = run_transform(BLOCKS, {"train": split}, root / "out", ["--runner", "DirectRunner"])
    tft_output = tft.TFTransformOutput(str(result.output_dir))
    files = sorted(glob.glob(result.example_patterns["train"]))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(100_000)
    (batch,) = list(records)
    parsed = tf.io.parse_example(batch, tft_output.transformed_feature_spec())
    order = np.argsort(parsed["row_xf"].numpy())
    return tft_output, {k: v.numpy()[order] for k, v in parsed.items()}


def _serving(tft_output, table: pa.Table) -> dict[str, np.ndarray]:
    """Features of raw rows through the exported transform graph, as serving computes them."""
    spec = raw_feature_spec(BLOCKS)
    batch = to_list_batch(table)
    inputs = {}
    for name, feature in spec.items():
        column = batch.column(batch.schema.get_field_index(name)).to_pylist()
        inputs[name] = tf.ragged.constant(
            [v if v else [] for v in column], dtype=feature.dtype
        ).to_sparse()
    # The Keras layer the export bundles (the transform graph is a TF1 SavedModel, which
    # transform_raw_features cannot apply eagerly).
    layer = tft_output.transform_features_layer()
    return {k: v.numpy() for k, v in layer(inputs).items()}


def _column(raw, name, fill=np.nan) -> np.ndarray:
    return np.array([fill if v is None else v for v in raw[name]], dtype=np.float64)


def _feature(name: str) -> Feature:
    (feature,) = [f for f in FEATURES if f.name == name]
    return feature


# ---- cleansing ---------------------------------------------------------------------------------


def test_mean_imputation_fills_with_the_mean_of_present_values(analyzed, raw):
    _, got = analyzed
    x = _column(raw, "x")
    missing = np.isnan(x)
    assert missing.any()
    np.testing.assert_allclose(got["x_mean_xf"][missing], present(raw["x"]).mean(), rtol=1e-5)
    np.testing.assert_array_equal(got["x_mean_xf"][~missing], x[~missing].astype(np.float32))


def test_median_imputation_fills_with_a_median_of_present_values(analyzed, raw):
    _, got = analyzed
    x = _column(raw, "x")
    filled = np.unique(got["x_median_xf"][np.isnan(x)])
    assert len(filled) == 1
    assert_is_quantile(present(raw["x"]), filled[0], 0.5, EPSILON)
    assert abs(filled[0] - np.median(present(raw["x"]))) < 0.05 * np.std(present(raw["x"]))


def test_clip_bounds_are_training_percentiles(analyzed, raw):
    _, got = analyzed
    x = _column(raw, "x")
    values = present(raw["x"])
    low, high = float(got["x_clip_xf"].min()), float(got["x_clip_xf"].max())
    assert_is_quantile(values, low, 0.01, EPSILON)
    assert_is_quantile(values, high, 0.99, EPSILON)
    assert high < values.max()  # the planted outliers are cut
    want = np.where(np.isnan(x), 0.0, x).clip(low, high)  # missing -> default 0 -> low
    np.testing.assert_allclose(got["x_clip_xf"], want, rtol=1e-6)


def test_zscore_of_imputed_and_clipped_values(analyzed, raw):
    """Statistics of the present, unclipped values (one pass); the output is bounded by the clip."""
    _, got = analyzed
    x = _column(raw, "x")
    values = present(raw["x"])
    z = got["x_clean_z_xf"]
    # The clip bounds are the extremes of the output, mapped back through the fitted z-score.
    inside = (z > z.min()) & (z < z.max()) & ~np.isnan(x)
    mean, std = fit_zscore(x[inside], z[inside])
    np.testing.assert_allclose([mean, std], [values.mean(), values.std()], rtol=1e-4)
    low, high = mean + std * z.min(), mean + std * z.max()
    assert_is_quantile(values, low, 0.05, EPSILON + 1e-4)
    assert_is_quantile(values, high, 0.95, EPSILON + 1e-4)
    cleaned = np.where(np.isnan(x), values.mean(), x).clip(low, high)
    np.testing.assert_allclose(z, (cleaned - values.mean()) / values.std(), atol=1e-4)
    np.testing.assert_allclose(z[np.isnan(x)], 0.0, atol=1e-5)  # mean-imputed -> 0


def test_log_zscore_with_median_imputation(analyzed, raw):
    _, got = analyzed
    x = _column(raw, "x")
    median = np.unique(got["x_median_xf"][np.isnan(x)])[0]
    logs = np.log1p(present(raw["x"]))
    want = (np.log1p(np.where(np.isnan(x), median, x)) - logs.mean()) / logs.std()
    np.testing.assert_allclose(got["x_log_z_xf"], want, atol=1e-4)


def test_scale_0_1(analyzed, raw):
    _, got = analyzed
    y = _column(raw, "y")
    np.testing.assert_allclose(got["y_01_xf"], (y - y.min()) / (y.max() - y.min()), atol=1e-6)


def test_scale_0_1_between_clip_bounds(analyzed, raw):
    _, got = analyzed
    y = _column(raw, "y")
    scaled = got["y_01_clip_xf"]
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    inside = (scaled > 0) & (scaled < 1)
    low, span = fit_zscore(y[inside], scaled[inside])
    assert_is_quantile(y, low, 0.01, EPSILON + 1e-4)
    assert_is_quantile(y, low + span, 0.99, EPSILON + 1e-4)
    np.testing.assert_allclose(scaled, (y.clip(low, low + span) - low) / span, atol=1e-5)


# ---- representation ----------------------------------------------------------------------------


def test_quantile_buckets_follow_training_quantiles(analyzed, raw):
    tft_output, got = analyzed
    y = _column(raw, "y").astype(np.float32)
    want = np.searchsorted(np.quantile(y, [0.25, 0.5, 0.75]), y, side="right")
    counts = np.bincount(got["y_bucket_xf"], minlength=4)
    np.testing.assert_allclose(counts, np.bincount(want, minlength=4), atol=0.01 * len(y))
    assert tft_output.num_buckets_for_transformed_feature("y_bucket_xf") == 4


def test_quantile_buckets_of_present_values_with_mean_imputation(analyzed, raw):
    _, got = analyzed
    x = _column(raw, "x")
    values = present(raw["x"]).astype(np.float32)
    boundaries = np.quantile(values, [0.25, 0.5, 0.75])
    buckets = got["x_bucket_xf"]
    counts = np.bincount(buckets[~np.isnan(x)], minlength=4)
    want = np.bincount(np.searchsorted(boundaries, values, side="right"), minlength=4)
    np.testing.assert_allclose(counts, want, atol=0.01 * len(values))
    mean_bucket = np.searchsorted(boundaries, values.mean(), side="right")
    np.testing.assert_array_equal(buckets[np.isnan(x)], mean_bucket)


def _by_frequency(tokens) -> list[tuple[str, int]]:
    return sorted(Counter(tokens).items(), key=lambda item: (-item[1], item[0]))


def _vocab(tft_output, name) -> list[str]:
    return [v.decode() for v in tft_output.vocabulary_by_name(f"{name}_vocab")]


def _assert_frequency_order(vocab: list[str], counts: Counter) -> None:
    assert [counts[v] for v in vocab] == sorted((counts[v] for v in vocab), reverse=True)


def test_vocabulary_frequency_threshold_and_oov_buckets(analyzed, raw):
    tft_output, got = analyzed
    counts = Counter(c for c in raw["city"] if c is not None)
    vocab = _vocab(tft_output, "city_vocab")
    kept = {c for c, n in counts.items() if n >= FREQUENCY_THRESHOLD}
    assert set(vocab) == kept and "E" in kept and "F" not in kept  # F is below the threshold
    _assert_frequency_order(vocab, counts)
    ids = got["city_vocab_xf"]
    for city, id_ in zip(raw["city"], ids, strict=True):
        if city in kept:
            assert vocab[id_] == city
        else:  # rare or missing: one of the 3 OOV buckets, never a known id
            assert len(vocab) <= id_ < len(vocab) + 3
    assert tft_output.num_buckets_for_transformed_feature("city_vocab_xf") == len(vocab) + 3


def test_vocabulary_top_k(analyzed, raw):
    tft_output, got = analyzed
    counts = Counter(c for c in raw["city"] if c is not None)
    top = [c for c, _ in _by_frequency(counts)[:2]]
    assert _vocab(tft_output, "city_top2") == top
    want = [top.index(c) if c in top else 2 for c in raw["city"]]
    np.testing.assert_array_equal(got["city_top2_xf"], want)
    assert tft_output.num_buckets_for_transformed_feature("city_top2_xf") == 3


def test_one_hot_of_the_vocabulary_id(analyzed, raw):
    tft_output, got = analyzed
    vocab = _vocab(tft_output, "city_onehot")
    onehot = got["city_onehot_xf"]
    assert onehot.shape == (ROWS, 8 + 2) and set(np.unique(onehot)) <= {0.0, 1.0}
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    hot = onehot.argmax(axis=1)
    for city, column in zip(raw["city"], hot, strict=True):
        if city in vocab:
            assert vocab[column] == city
        else:
            assert len(vocab) <= column < len(vocab) + 2


def test_multi_hot_of_a_delimited_column(analyzed, raw):
    tft_output, got = analyzed
    rows = [[t.strip() for t in tags.split("|") if t.strip()] for tags in raw["tags"]]
    counts = Counter(itertools.chain.from_iterable(rows))
    vocab = _vocab(tft_output, "tags_multi")
    assert len(vocab) == 3 and set(vocab) == {t for t, _ in _by_frequency(counts)[:3]}
    _assert_frequency_order(vocab, counts)
    want = np.zeros((ROWS, 4), np.float32)
    for i, tokens in enumerate(rows):
        for token in tokens:
            want[i, vocab.index(token) if token in vocab else 3] = 1.0
    np.testing.assert_array_equal(got["tags_multi_xf"], want)


def test_hashing_is_farmhash_fingerprint_mod_buckets(analyzed, raw):
    tft_output, got = analyzed
    want = [farmhash.fingerprint64(c or "") % 64 for c in raw["city"]]
    np.testing.assert_array_equal(got["city_hash_xf"], want)
    want = [farmhash.fingerprint64(str(0 if w is None else w)) % 16 for w in raw["w"]]
    np.testing.assert_array_equal(got["w_hash_xf"], want)
    assert tft_output.num_buckets_for_transformed_feature("city_hash_xf") == 64
    assert tft_output.num_buckets_for_transformed_feature("w_hash_xf") == 16
    assert _feature("city_hash").num_categories == 64


# ---- extraction and construction ---------------------------------------------------------------


def _zscored(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def _assert_pca(projection: np.ndarray, inputs: np.ndarray) -> None:
    """``projection`` is ``inputs`` (centred) on the top eigenvectors of their covariance."""
    centred = inputs - inputs.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(inputs, rowvar=False, bias=True))
    order = np.argsort(eigenvalues)[::-1][:2]
    assert projection.shape == (ROWS, 2)
    # The components TFT baked in, recovered from the projection of known inputs.
    components, *_ = np.linalg.lstsq(centred, projection, rcond=None)
    for k in range(2):
        want = eigenvectors[:, order[k]]
        np.testing.assert_allclose(
            components[:, k], np.sign(components[:, k] @ want) * want, atol=1e-4
        )
        # Canonical sign: the largest loading is positive.
        assert components[np.argmax(np.abs(components[:, k])), k] > 0
    np.testing.assert_allclose(projection, centred @ components, atol=1e-4)
    np.testing.assert_allclose(projection.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(projection.var(axis=0), eigenvalues[order], rtol=1e-3)


def _pca_inputs(raw) -> np.ndarray:
    return np.stack(
        [np.log1p(np.maximum(_column(raw, c, fill=0.0), 0.0)) for c in ("x", "y", "w")], axis=1
    )


def test_pca_of_standardized_inputs_matches_numpy_eigenvectors(analyzed, raw):
    _, got = analyzed
    logs = _pca_inputs(raw)
    _assert_pca(got["xyw_pca_xf"], (logs - logs.mean(axis=0)) / logs.std(axis=0))


def test_pca_of_the_covariance_matches_numpy_eigenvectors(analyzed, raw):
    _, got = analyzed
    _assert_pca(got["xyw_pca_cov_xf"], _pca_inputs(raw))


def test_polynomial_terms_of_zscored_inputs(analyzed, raw):
    _, got = analyzed
    x, y = _column(raw, "x"), _column(raw, "y")
    values = present(raw["x"])  # mean-imputed: scaled with the present values' statistics
    zx = (np.where(np.isnan(x), values.mean(), x) - values.mean()) / values.std()
    zy = _zscored(y)
    want = np.stack([zx * zx, zx * zy, zy * zy, zx**3, zx * zx * zy, zx * zy * zy, zy**3], axis=1)
    assert blocks.polynomial_exponents(2, 3) == [
        (0, 0),
        (0, 1),
        (1, 1),
        (0, 0, 0),
        (0, 0, 1),
        (0, 1, 1),
        (1, 1, 1),
    ]
    np.testing.assert_allclose(got["xy_poly_xf"], want, rtol=1e-3, atol=1e-3)


def test_geo_cell_on_fixed_boundaries(analyzed, raw):
    tft_output, got = analyzed
    lat, lon = _column(raw, "lat"), _column(raw, "lon")
    missing = np.isnan(lat) | np.isnan(lon)
    lat_bucket = np.searchsorted(np.float32(LAT_BOUNDARIES), np.float32(lat), side="right")
    lon_bucket = np.searchsorted(np.float32(LON_BOUNDARIES), np.float32(lon), side="right")
    want = np.where(missing, 12, lat_bucket * 3 + lon_bucket)
    np.testing.assert_array_equal(got["cell_fixed_xf"], want)
    assert tft_output.num_buckets_for_transformed_feature("cell_fixed_xf") == 13
    assert _feature("cell_fixed").num_categories == 13


def test_geo_cell_on_training_quantiles(analyzed, raw):
    tft_output, got = analyzed
    lat, lon = _column(raw, "lat"), _column(raw, "lon")
    missing = np.isnan(lat) | np.isnan(lon)
    cells = got["cell_quantile_xf"]
    np.testing.assert_array_equal(cells[missing], 12)
    assert cells[~missing].max() < 12
    for values, buckets, n in ((lat, cells // 3, 4), (lon, cells % 3, 3)):
        boundaries = np.quantile(present(values), np.arange(1, n) / n)
        want = np.searchsorted(boundaries, values[~missing], side="right")
        np.testing.assert_allclose(
            np.bincount(buckets[~missing], minlength=n),
            np.bincount(want, minlength=n),
            atol=2 * EPSILON * len(values) + 2,
        )
    assert tft_output.num_buckets_for_transformed_feature("cell_quantile_xf") == 13


# ---- contract with the model and the serving graph ---------------------------------------------


def test_outputs_fit_the_model_contract(analyzed):
    tft_output, got = analyzed
    spec = tft_output.transformed_feature_spec()
    widths = {"city_onehot": 10, "tags_multi": 4, "xyw_pca": 2, "xyw_pca_cov": 2, "xy_poly": 7}
    for feature in FEATURES:
        shape = list(spec[feature.output_name].shape)
        if feature.is_categorical:
            assert spec[feature.output_name].dtype == tf.int64 and shape == []
            if feature.name == "row":
                continue
            n = tft_output.num_buckets_for_transformed_feature(feature.output_name)
            assert feature.num_categories in (None, n)
            assert got[feature.output_name].min() >= 0 and got[feature.output_name].max() < n
        else:
            assert spec[feature.output_name].dtype == tf.float32
            assert shape == ([widths[feature.name]] if feature.name in widths else [])


def test_serving_graph_matches_the_beam_transform(analyzed, table):
    tft_output, got = analyzed
    served = _serving(tft_output, table)
    for feature in FEATURES:
        name = feature.output_name
        if feature.is_categorical:
            np.testing.assert_array_equal(served[name], got[name], err_msg=name)
        else:
            np.testing.assert_allclose(served[name], got[name], rtol=1e-6, err_msg=name)


def test_unseen_values_at_serving_time(analyzed):
    tft_output, _ = analyzed
    table = make_table(3, seed=5)
    table = table.set_column(table.schema.get_field_index("city"), "city", [["Z", "A", None]])
    table = table.set_column(
        table.schema.get_field_index("tags"), "tags", [["purple", "red|purple", ""]]
    )
    served = _serving(tft_output, table)
    vocab = _vocab(tft_output, "city_vocab")
    assert len(vocab) <= served["city_vocab_xf"][0] < len(vocab) + 3
    assert vocab[served["city_vocab_xf"][1]] == "A"
    tags = _vocab(tft_output, "tags_multi")
    np.testing.assert_array_equal(served["tags_multi_xf"][0], [0, 0, 0, 1])
    assert served["tags_multi_xf"][1, tags.index("red")] == 1 and served["tags_multi_xf"][1, 3]
    np.testing.assert_array_equal(served["tags_multi_xf"][2], 0)
    assert served["city_hash_xf"][0] == farmhash.fingerprint64("Z") % 64


# ---- pure functions and the definition's checks (no Beam) --------------------------------------


def traced_analysis_passes(dataset: DatasetDefinition) -> int:
    """Number of analysis phases TFT plans for the definition's ``preprocessing_fn``."""
    from tensorflow_transform import impl_helper, nodes
    from tensorflow_transform.beam import analysis_graph_builder, beam_nodes
    from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

    from pipeline.raw_schema import tensor_adapter_config
    from transforms.preprocessing import make_preprocessing_fn

    class Phases(nodes.Visitor):
        def __init__(self):
            self.phases = set()

        def visit(self, operation_def, input_values):
            if isinstance(operation_def, beam_nodes.ApplySavedModel):
                self.phases.add(operation_def.phase)
            return nodes.OperationNode(operation_def, input_values).outputs

        def validate_value(self, value):
            pass

    specs = TensorAdapter(tensor_adapter_config(dataset)).OriginalTypeSpecs()
    graph, inputs, outputs = impl_helper.trace_preprocessing_function(
        make_preprocessing_fn(dataset), specs, use_tf_compat_v1=False
    )
    future, _, _ = analysis_graph_builder.build(graph, inputs, outputs)
    visitor = Phases()
    nodes.Traverser(visitor).visit_value_node(future)
    return len(visitor.phases)


@pytest.mark.parametrize(
    "names", [("row",), ("x_clean_z", "y_01_clip", "xy_poly"), ("xyw_pca",), ("xyw_pca_cov",)]
)
def test_declared_analysis_passes_match_tft(names):
    dataset = dataclasses.replace(BLOCKS, features=tuple(_feature(n) for n in names))
    assert traced_analysis_passes(dataset) == dataset.analysis_passes
    assert BLOCKS.analysis_passes == 2


def test_taxi_analysis_is_one_pass(taxi):
    """One pass over the data: TFT's analyzer cache can then reuse every earlier span."""
    assert taxi.analysis_passes == 1
    assert traced_analysis_passes(taxi) == 1


def test_quantile_grid():
    assert blocks.quantile_grid([0.01, 0.99]) == (100, [0, 98])
    assert blocks.quantile_grid([0.05, 0.95]) == (20, [0, 18])
    assert blocks.quantile_grid([0.5]) == (2, [0])
    with pytest.raises(ValueError):
        blocks.quantile_grid([0.0001])


def test_pca_canonical_signs():
    components = tf.constant([[0.6, -0.1], [-0.8, -0.9], [0.0, 0.3]])
    got = blocks.canonical_signs(components).numpy()
    np.testing.assert_allclose(got, [[-0.6, 0.1], [0.8, 0.9], [0.0, -0.3]])


@pytest.mark.parametrize(
    "feature, message",
    [
        (Feature("p", ("x", "y"), K.PCA(output_dim=3), DEEP), "output_dim 3 exceeds the 2 inputs"),
        (Feature("g", ("lat", "lon"), K.GeoCell(lat_buckets=4), BOTH), "geo cells need"),
        (Feature("g", "lat", K.GeoCell(lat_buckets=4, lon_buckets=4), BOTH), "takes 2 input"),
        (Feature("v", "city", K.Vocabulary(num_oov_buckets=0), BOTH), "num_oov_buckets"),
        (Feature("m", "x", K.MultiHot(top_k=5, num_oov_buckets=1), DEEP), "STRING inputs"),
        (Feature("z", "x", K.ZScore(impute="mode"), DEEP), "impute"),
        (Feature("z", "x", K.ZScore(clip=(0.99, 0.01)), DEEP), "clip"),
        (Feature("z", "x", K.ZScore(clip=(0.0001, 0.99)), DEEP), "0.001"),
        (Feature("z", "city", K.ZScore(), DEEP), "FLOAT64/INT64 inputs; 'city' is STRING"),
        (Feature("c", ("city", "w"), K.Cross(hash_buckets=8), BOTH, default=0), "does not fit"),
        (Feature("t", "x", K.CalendarPart(part="hour"), BOTH), "TIMESTAMP inputs"),
        (Feature("t", "row", K.CalendarPart(part="week"), BOTH), "part must be one of"),
        (Feature("t", "row", K.CyclicalTime(timezone="Mars/Olympus"), BOTH), "unknown time zone"),
        (Feature("h", "x", K.ClockTime(output="seconds"), BOTH), "output must be one of"),
    ],
)
def test_definition_rejects_bad_features_naming_them(feature, message):
    with pytest.raises(DefinitionError, match=message) as error:
        dataclasses.replace(BLOCKS, features=(feature,))
    assert f"feature {feature.name!r}" in str(error.value)


def test_kind_parameters_are_typed_keywords():
    """A required parameter missing or an unknown one fails where the kind is written."""
    with pytest.raises(TypeError, match="top_k"):
        K.OneHot()
    with pytest.raises(TypeError, match="buckets"):
        K.Hash(buckets=4)


def test_eager_calls_leave_no_schema_annotations_behind():
    """Called eagerly, a block must not leave eager tensors in TFT's global collections."""
    from tensorflow_transform import schema_inference

    blocks.record_categories(tf.constant([1, 2], tf.int64), 5)
    collection = tf.compat.v1.get_collection(schema_inference._TF_METADATA_TENSOR_COLLECTION)
    assert not any(isinstance(t, tf.__internal__.EagerTensor) for t in collection)


def test_features_cleaning_one_column_the_same_way_share_its_analyzers(monkeypatch):
    """One analyzer per statistic: the polynomial reuses the z-score's imputation, clip and
    moments of ``x`` instead of asking TFT for the same training statistics again."""
    from tensorflow_transform import impl_helper
    from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

    from pipeline.raw_schema import tensor_adapter_config
    from transforms.preprocessing import make_preprocessing_fn

    calls = Counter()
    for analyzer in ("mean", "var", "quantiles"):
        original = getattr(tft, analyzer)

        def counted(*args, _original=original, _analyzer=analyzer, **kwargs):
            calls[_analyzer] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(tft, analyzer, counted)
    clip = (0.05, 0.95)
    features = (
        Feature("x_z", "x", K.ZScore(impute="mean", clip=clip), DEEP),
        Feature("x_poly", ("x", "y"), K.Polynomial(impute="mean", clip=clip), DEEP),
    )
    dataset = dataclasses.replace(BLOCKS, features=features)
    specs = TensorAdapter(tensor_adapter_config(dataset)).OriginalTypeSpecs()
    impl_helper.trace_preprocessing_function(
        make_preprocessing_fn(dataset), specs, use_tf_compat_v1=False
    )
    # x and y: the mean of the present values (imputation and z-score), the clip bounds, the
    # variance; once each, not once per feature and use.
    assert calls == {"mean": 2, "var": 2, "quantiles": 2}
