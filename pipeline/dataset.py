"""The dataset definition: the one place a dataset's columns, label and features are declared.

Every stage derives what it needs from a :class:`DatasetDefinition`:

* the warehouse stage reads the column list and types (DuckDB DDL, BigQuery SELECT list) and the
  label rule (stratification, oversampling);
* the validation stage checks the curated schema in ``schemas/`` against the raw columns;
* the transform stage builds ``preprocessing_fn`` from the features;
* the model builds its wide and deep inputs from the features' ``model_part``;
* the serving signature parses every raw column except those only the label needs.

A second dataset needs a new module in ``pipeline/datasets/``, not edits across the codebase.
This module is pure Python (no TensorFlow) so that light processes (the DAG parser, the warehouse
CLI) can import it cheaply.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any


class ColumnType(enum.StrEnum):
    """Warehouse (BigQuery Standard SQL) types of raw columns."""

    INT64 = "INT64"
    FLOAT64 = "FLOAT64"
    STRING = "STRING"
    TIMESTAMP = "TIMESTAMP"  # leaves the warehouse as INT64 seconds since the epoch

    @property
    def split_file_type(self) -> str:
        """Type of the column in split files and serving requests (what TFXIO and tf.Example carry).

        TIMESTAMPs travel as integer Unix seconds: tf.Example has no timestamp type and a serving
        client sends the same integer it would log.
        """
        return "INT64" if self is ColumnType.TIMESTAMP else self.value


@dataclasses.dataclass(frozen=True)
class Column:
    """One raw column of the warehouse table."""

    name: str
    type: ColumnType
    description: str = ""
    # False when every row must carry a value (the warehouse filters the others out).
    nullable: bool = True


class Transform(enum.StrEnum):
    """How raw columns become a model feature. Implemented in ``transforms/``.

    Numeric transforms (:data:`NUMERIC_TRANSFORMS`) first clean each raw input according to the
    optional params ``impute`` (``"constant"``: the feature's ``default``, the default;
    ``"mean"`` / ``"median"``: of the present training values), ``clip`` (a pair of quantile
    fractions, e.g. ``(0.01, 0.99)``: clip to those training quantiles) and ``log``
    (``log1p(max(x, 0))`` after clipping). See :data:`TRANSFORM_PARAMS` for each kind's params.

    Every statistic of a feature comes from one pass over the raw training values where it can:
    after full-pass cleaning (mean/median imputation, clipping), z-score, 0..1 and quantile
    statistics are those of the values before it (present values, unclipped values), so a
    mean-imputed value z-scores to 0 and a clipped one to its bound's z-score. One pass is what
    lets TFT's analyzer cache reuse each span's results (a second pass reads every span again):
    only PCA over standardized or full-pass-cleaned inputs needs two, see
    :attr:`Feature.analysis_passes`.
    """

    NUMERIC = "numeric"  # dense float, the cleaned raw value itself
    ZSCORE = "zscore"  # dense float, (x - mean) / std over train
    SCALE_0_1 = "scale_0_1"  # dense float, (x - min) / (max - min) over train
    LOG_ZSCORE = "log_zscore"  # dense float, z-score of log1p(max(x, 0))
    QUANTILE_BUCKET = "quantile_bucket"  # categorical id, quantile boundaries over train
    VOCABULARY = "vocabulary"  # categorical id, vocabulary over train (+ OOV buckets)
    ONE_HOT = "one_hot"  # dense [top_k + num_oov_buckets], one-hot of the vocabulary id
    MULTI_HOT = "multi_hot"  # dense [top_k + num_oov_buckets], tokens of a delimited string
    HASH = "hash"  # categorical id, FarmHash of the value mod hash_buckets (no analysis)
    IDENTITY = "identity"  # categorical id, integer already in [0, num_buckets)
    CYCLICAL_TIME = "cyclical_time"  # dense floats: sin/cos of hour of day and day of week
    CROSS = "cross"  # categorical id, hashed cross of several raw columns
    POLYNOMIAL = "polynomial"  # dense [m], monomials of degree 2..degree of z-scored inputs
    PCA = "pca"  # dense [output_dim], projection on the top principal components of the inputs
    GEO_CELL = "geo_cell"  # categorical id, latitude x longitude grid cell (+1 for no point)


# Params each transform accepts: name -> required (True) or optional (False).
_CLEANING_PARAMS = {"impute": False, "clip": False, "log": False}
_VOCABULARY_PARAMS = {"top_k": False, "frequency_threshold": False, "num_oov_buckets": True}
TRANSFORM_PARAMS: Mapping[Transform, Mapping[str, bool]] = {
    Transform.NUMERIC: _CLEANING_PARAMS,
    Transform.ZSCORE: _CLEANING_PARAMS,
    Transform.SCALE_0_1: _CLEANING_PARAMS,
    Transform.LOG_ZSCORE: _CLEANING_PARAMS,
    Transform.QUANTILE_BUCKET: {**_CLEANING_PARAMS, "num_buckets": True},
    Transform.VOCABULARY: _VOCABULARY_PARAMS,
    Transform.ONE_HOT: {**_VOCABULARY_PARAMS, "top_k": True},
    Transform.MULTI_HOT: {**_VOCABULARY_PARAMS, "top_k": True, "delimiter": False},
    Transform.HASH: {"hash_buckets": True},
    Transform.IDENTITY: {"num_buckets": True},
    Transform.CYCLICAL_TIME: {},
    Transform.CROSS: {"hash_buckets": True},
    Transform.POLYNOMIAL: {**_CLEANING_PARAMS, "degree": False},
    Transform.PCA: {**_CLEANING_PARAMS, "output_dim": True, "standardize": False},
    Transform.GEO_CELL: {
        "lat_buckets": False,
        "lon_buckets": False,
        "lat_boundaries": False,
        "lon_boundaries": False,
    },
}
# Transforms that read numeric raw columns and honour the cleaning params.
NUMERIC_TRANSFORMS = frozenset(t for t, params in TRANSFORM_PARAMS.items() if "impute" in params)
IMPUTATIONS = ("constant", "mean", "median")
INSTANCE_LEVEL_TRANSFORMS = frozenset(
    {Transform.IDENTITY, Transform.CYCLICAL_TIME, Transform.CROSS, Transform.HASH}
)
# How many raw inputs each transform takes: (minimum, maximum or None).
_ARITY = {
    Transform.CROSS: (2, None),
    Transform.POLYNOMIAL: (1, None),
    Transform.PCA: (2, None),
    Transform.GEO_CELL: (2, 2),
}
DEFAULT_MULTI_HOT_DELIMITER = ","
DEFAULT_POLYNOMIAL_DEGREE = 2


class ModelPart(enum.StrEnum):
    """Which part of the wide-and-deep model a feature feeds."""

    WIDE = "wide"  # one-hot into the linear part
    DEEP = "deep"  # dense value or embedding into the neural net
    BOTH = "both"


@dataclasses.dataclass(frozen=True)
class Feature:
    """A model feature derived from one or more raw columns."""

    name: str
    inputs: tuple[str, ...]
    transform: Transform
    model_part: ModelPart
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Value used for a missing raw input before the transform (instance-level imputation).
    default: Any = None

    @property
    def output_name(self) -> str:
        """Name of the transformed feature in TFRecords and model inputs."""
        return f"{self.name}_xf"

    @property
    def is_categorical(self) -> bool:
        return self.transform in CATEGORICAL_TRANSFORMS

    @property
    def analysis_passes(self) -> int:
        """Passes over the training data TFT needs for this feature (0: instance-level only).

        A feature whose analyzers read the output of other analyzers needs a second pass, and
        that pass cannot use the per-span analyzer cache: it reads every span again.
        """
        transform, params = self.transform, self.params
        if transform in INSTANCE_LEVEL_TRANSFORMS:
            return 0
        if transform is Transform.GEO_CELL:
            return 0 if "lat_boundaries" in params else 1
        if transform is Transform.PCA:
            full_pass_cleaning = params.get("impute", "constant") != "constant" or "clip" in params
            return 2 if params.get("standardize", True) or full_pass_cleaning else 1
        return 1

    @property
    def num_categories(self) -> int | None:
        """Number of ids of a categorical feature when the definition alone fixes it.

        ``None`` for dense features and for ids whose range analysis decides (vocabularies,
        quantile buckets): TFT records those in the transformed schema (as it does for every
        categorical output, see ``transforms.blocks.record_categories``).
        """
        params = self.params
        if self.transform is Transform.IDENTITY:
            return int(params["num_buckets"])
        if self.transform in (Transform.CROSS, Transform.HASH):
            return int(params["hash_buckets"])
        if self.transform is Transform.GEO_CELL:
            lat_cells, lon_cells = geo_grid(params)
            return lat_cells * lon_cells + 1
        return None


CATEGORICAL_TRANSFORMS = frozenset(
    {
        Transform.QUANTILE_BUCKET,
        Transform.VOCABULARY,
        Transform.IDENTITY,
        Transform.CROSS,
        Transform.HASH,
        Transform.GEO_CELL,
    }
)


def geo_grid(params: Mapping[str, Any]) -> tuple[int, int]:
    """(latitude cells, longitude cells) of a GEO_CELL feature's grid.

    Either ``lat_buckets`` / ``lon_buckets`` (quantile buckets over train) or
    ``lat_boundaries`` / ``lon_boundaries`` (fixed, sorted; n boundaries make n + 1 cells).
    """
    if "lat_boundaries" in params or "lon_boundaries" in params:
        return len(params["lat_boundaries"]) + 1, len(params["lon_boundaries"]) + 1
    return int(params["lat_buckets"]), int(params["lon_buckets"])


@dataclasses.dataclass(frozen=True)
class ThresholdLabel:
    """A binary label ``numerator > threshold * denominator`` (e.g. tips > 0.2 * fare).

    Kept declarative so the warehouse can render it in SQL (stratification, oversampling) and the
    transform can compute it in TensorFlow from the very same numbers.
    """

    name: str
    numerator: str
    denominator: str
    threshold: float

    @property
    def source_columns(self) -> tuple[str, ...]:
        return (self.numerator, self.denominator)


@dataclasses.dataclass(frozen=True)
class DatasetDefinition:
    """Everything the pipeline needs to know about one dataset."""

    name: str
    # Warehouse table as ``dataset.table`` (BigQuery adds the project in front).
    table: str
    columns: tuple[Column, ...]
    label: ThresholdLabel
    features: tuple[Feature, ...]
    # Raw columns that exist only to compute the label: absent from serving requests.
    label_only_columns: tuple[str, ...] = ()
    # Column that orders rows in time (data-interval filtering, drift windows).
    timestamp_column: str | None = None

    def __post_init__(self) -> None:
        self._check_consistency()

    # ---- lookups ---------------------------------------------------------------------------

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"dataset {self.name!r} has no column {name!r}")

    @property
    def serving_columns(self) -> tuple[Column, ...]:
        """Raw columns a serving request carries: everything but the label's sources."""
        return tuple(c for c in self.columns if c.name not in self.label_only_columns)

    @property
    def analysis_passes(self) -> int:
        """Passes over the training data the transform's analysis takes (see Feature's)."""
        return max((f.analysis_passes for f in self.features), default=0)

    def features_for(self, part: ModelPart) -> tuple[Feature, ...]:
        """Features feeding ``part`` (features marked BOTH feed wide and deep)."""
        return tuple(f for f in self.features if f.model_part in (part, ModelPart.BOTH))

    # ---- validation ------------------------------------------------------------------------

    def _check_consistency(self) -> None:
        names = self.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name!r}: duplicate column names in {names}")
        known = set(names)
        for source in (*self.label.source_columns, *self.label_only_columns):
            if source not in known:
                raise ValueError(f"dataset {self.name!r}: label column {source!r} is not a column")
        if self.timestamp_column and self.timestamp_column not in known:
            raise ValueError(f"dataset {self.name!r}: unknown timestamp column")
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise ValueError(f"dataset {self.name!r}: duplicate feature {feature.name!r}")
            seen.add(feature.name)
            for source in feature.inputs:
                if source not in known:
                    raise ValueError(
                        f"dataset {self.name!r}: feature {feature.name!r} reads unknown "
                        f"column {source!r}"
                    )
                if source in self.label_only_columns:
                    raise ValueError(
                        f"dataset {self.name!r}: feature {feature.name!r} reads label-only "
                        f"column {source!r}, which serving requests do not carry"
                    )
            problem = _feature_problem(feature, self)
            if problem:
                raise ValueError(f"dataset {self.name!r}: feature {feature.name!r}: {problem}")


def _feature_problem(feature: Feature, dataset: DatasetDefinition) -> str | None:
    """What is wrong with a feature's inputs and params, or None."""
    transform, params = feature.transform, feature.params
    low, high = _ARITY.get(transform, (1, 1))
    count = len(feature.inputs)
    if count < low or (high is not None and count > high):
        wanted = f"{low}" if low == high else f"at least {low}" if high is None else f"{low}-{high}"
        return f"{transform} takes {wanted} input(s), got {count}"
    allowed = TRANSFORM_PARAMS[transform]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        return f"unknown params {unknown} for {transform}"
    missing = sorted(name for name, required in allowed.items() if required and name not in params)
    if missing:
        return f"{transform} needs params {missing}"
    types = {dataset.column(c).type for c in feature.inputs}
    if transform in NUMERIC_TRANSFORMS or transform is Transform.GEO_CELL:
        if ColumnType.STRING in types:
            return f"{transform} needs numeric inputs"
        if params.get("impute", "constant") not in IMPUTATIONS:
            return f"impute must be one of {IMPUTATIONS}"
        clip = params.get("clip")
        if clip is not None and not (len(clip) == 2 and 0 < clip[0] < clip[1] < 1):
            return "clip must be two quantile fractions 0 < lower < upper < 1"
        if clip is not None and any(round(q * 1000, 9) % 1 for q in clip):
            return "clip fractions must be multiples of 0.001"
    if transform is Transform.MULTI_HOT and types != {ColumnType.STRING}:
        return "multi_hot needs a STRING input"
    if transform in (Transform.VOCABULARY, Transform.ONE_HOT, Transform.MULTI_HOT):
        oov = int(params["num_oov_buckets"])
        # A categorical id must stay in [0, n): without OOV buckets unseen values would be -1.
        if oov < (1 if transform is Transform.VOCABULARY else 0):
            return "num_oov_buckets must be >= 1 (unseen values need an id)"
    if transform is Transform.PCA and not 1 <= int(params["output_dim"]) <= count:
        return "output_dim must be between 1 and the number of inputs"
    if transform is Transform.POLYNOMIAL and int(params.get("degree", 2)) < 2:
        return "degree must be >= 2"
    if transform is Transform.GEO_CELL:
        fixed = {"lat_boundaries", "lon_boundaries"} & set(params)
        quantile = {"lat_buckets", "lon_buckets"} & set(params)
        if not (len(fixed) == 2 and not quantile) and not (len(quantile) == 2 and not fixed):
            return "geo_cell needs lat_buckets and lon_buckets, or lat/lon_boundaries"
        for name in sorted(fixed):
            if list(params[name]) != sorted(params[name]):
                return f"{name} must be sorted"
    return None
