"""Transform kinds: one class per way raw columns become a model feature.

A kind is a frozen dataclass whose fields are its typed parameters (keyword-only:
``LogZScore(impute="mean", clip=(0.01, 0.99))``). Each kind says how many inputs it takes and of
which column types, checks its parameters when the dataset definition loads (the definition
names the feature in the error), knows how many analysis passes and categories it implies, and
implements itself in TensorFlow (:meth:`Kind.apply`). ``apply`` runs in TFT's analysis and
transform and, through the exported transform graph, in serving. Adding a kind means adding a
class here, nothing else.

TensorFlow is imported only inside ``apply``: definitions load in light processes (the DAG
parser, the warehouse CLI) without it.

Numeric kinds first clean each input (:class:`Cleaning`): impute (``"constant"``: the feature's
default; ``"mean"`` / ``"median"`` of the present training values), clip to training quantiles,
then optionally ``log1p(max(x, 0))``. Scaling statistics after full-pass cleaning are those of
the values before it (present values, unclipped values), so everything stays in one analysis
pass, which is what lets TFT's analyzer cache reuse each span's results; only PCA over
standardized or full-pass-cleaned inputs needs a second pass (:attr:`Kind.analysis_passes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

NUMERIC = frozenset({"INT64", "FLOAT64"})
TIME = frozenset({"TIMESTAMP", "INT64"})
IMPUTATIONS = ("constant", "mean", "median")
CALENDAR_PARTS: dict[str, int] = {
    "hour": 24,
    "day_of_week": 7,
    "weekend": 2,
    "day_of_month": 31,
    "month": 12,
}
CLOCK_OUTPUTS = ("hour", "minute_of_day", "cyclical")


@dataclasses.dataclass(frozen=True)
class RawColumn:
    """One raw input of a feature as ``apply`` receives it."""

    name: str
    tensor: Any  # tf.SparseTensor [batch, 1] (a VarLen raw column) or a dense [batch] tensor
    type: str  # the column's warehouse type: INT64, FLOAT64, STRING or TIMESTAMP
    default: Any  # value for a missing entry (instance-level imputation)


def vocabulary_file(feature_name: str) -> str:
    """File name of a feature's vocabulary inside the transform output."""
    return f"{feature_name}_vocab"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Kind:
    """Base of every transform kind (see the module docstring)."""

    categorical: ClassVar[bool] = False  # a scalar int64 id per row in [0, num_categories)
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    input_types: ClassVar[frozenset[str] | None] = None  # None: any column type

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def analysis_passes(self) -> int:
        """Passes over the training data TFT needs (0: instance-level only)."""
        return 1

    @property
    def num_categories(self) -> int | None:
        """Id range fixed by the parameters; None when analysis decides (TFT records it)."""
        return None

    def problems(self) -> list[str]:
        """What is wrong with the parameters (empty when nothing is)."""
        return []

    def input_problems(self, count: int) -> list[str]:
        """What is wrong with the parameters for ``count`` inputs."""
        return []

    def apply(self, feature_name: str, columns: Sequence[RawColumn]):
        raise NotImplementedError

    def vocabulary_request(self, feature_name: str, columns: Sequence[RawColumn]):
        """``(blocks.VocabularySpec, tokens)`` when ``apply`` looks ids up in a training
        vocabulary, so ``preprocessing_fn`` can count every vocabulary in one pass; else None."""
        return None


def _blocks():
    from transforms import blocks

    return blocks


def _calendar():
    from transforms import calendar

    return calendar


def _dense(column: RawColumn):
    return _blocks().fill_in_missing(column.tensor, column.default)


def _timezone_problem(timezone: str) -> list[str]:
    try:
        ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return [f"unknown time zone {timezone!r} (an IANA name such as 'America/New_York')"]
    return []


# ---- numeric kinds ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cleaning(Kind):
    """Numeric kinds: impute, clip to training quantiles, log (see the module docstring)."""

    impute: str = "constant"
    clip: tuple[float, float] | None = None
    log: bool = False

    input_types: ClassVar[frozenset[str] | None] = NUMERIC
    force_log: ClassVar[bool] = False

    def problems(self) -> list[str]:
        found = []
        if self.impute not in IMPUTATIONS:
            found.append(f"impute must be one of {IMPUTATIONS}, got {self.impute!r}")
        clip = self.clip
        if clip is not None:
            if not (len(clip) == 2 and 0 < clip[0] < clip[1] < 1):
                found.append("clip must be two quantile fractions 0 < lower < upper < 1")
            elif any(round(q * 1000, 9) % 1 for q in clip):
                found.append("clip fractions must be multiples of 0.001")
        return found

    @property
    def full_pass_cleaning(self) -> bool:
        return self.impute != "constant" or self.clip is not None

    def cleaned(self, columns: Sequence[RawColumn]) -> list:
        return [
            _blocks().clean_numeric(
                column.tensor,
                default=column.default,
                impute=self.impute,
                clip=self.clip,
                log=self.log or self.force_log,
                name=f"{column.name}_clean",
            )
            for column in columns
        ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Numeric(Cleaning):
    """Dense float: the cleaned raw value itself."""

    @property
    def analysis_passes(self) -> int:
        return 1 if self.full_pass_cleaning else 0

    def apply(self, feature_name, columns):
        (x,) = self.cleaned(columns)
        return x.values


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZScore(Cleaning):
    """Dense float: ``(x - mean) / std`` over train."""

    def apply(self, feature_name, columns):
        (x,) = self.cleaned(columns)
        return _blocks().zscore(x.values, x.reference, name=feature_name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogZScore(ZScore):
    """Dense float: z-score of ``log1p(max(x, 0))`` (skewed non-negative amounts)."""

    force_log: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scale01(Cleaning):
    """Dense float: ``(x - min) / (max - min)`` over train (the clip bounds when clipped)."""

    def apply(self, feature_name, columns):
        (x,) = self.cleaned(columns)
        return _blocks().scale_0_1(x.values, x.reference, x.bounds, name=feature_name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantileBucket(Cleaning):
    """Categorical id: bucket of the value among ``num_buckets`` training quantiles."""

    num_buckets: int
    categorical: ClassVar[bool] = True

    def problems(self) -> list[str]:
        found = super().problems()
        if self.num_buckets < 2:
            found.append("num_buckets must be >= 2")
        return found

    def apply(self, feature_name, columns):
        (x,) = self.cleaned(columns)
        return _blocks().quantile_bucket(x.values, self.num_buckets, x.reference, feature_name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Polynomial(Cleaning):
    """Dense ``[m]``: monomials of degree 2..``degree`` of the z-scored inputs (x^2, xy, y^2)."""

    degree: int = 2
    max_inputs: ClassVar[int | None] = None

    def problems(self) -> list[str]:
        found = super().problems()
        if self.degree < 2:
            found.append("degree must be >= 2")
        return found

    def apply(self, feature_name, columns):
        blocks = _blocks()
        cleaned = self.cleaned(columns)
        z = [blocks.zscore(c.values, c.reference, name=f"z{i}") for i, c in enumerate(cleaned)]
        return blocks.polynomial(z, self.degree)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PCA(Cleaning):
    """Dense ``[output_dim]``: projection on the top principal components of the inputs.

    ``standardize`` z-scores each input first (PCA of the correlation matrix); without it, PCA of
    the covariance (fine for inputs on one scale, e.g. logs of positive amounts).
    """

    output_dim: int
    standardize: bool = True
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = None

    @property
    def analysis_passes(self) -> int:
        return 2 if self.standardize or self.full_pass_cleaning else 1

    def problems(self) -> list[str]:
        found = super().problems()
        if self.output_dim < 1:
            found.append("output_dim must be >= 1")
        return found

    def input_problems(self, count: int) -> list[str]:
        if self.output_dim > count:
            return [f"output_dim {self.output_dim} exceeds the {count} inputs"]
        return []

    def apply(self, feature_name, columns):
        cleaned = self.cleaned(columns)
        return _blocks().pca(
            [c.values for c in cleaned],
            self.output_dim,
            standardize_inputs=self.standardize,
            references=[c.reference for c in cleaned],
        )


# ---- categorical kinds --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Vocabulary(Kind):
    """Categorical id in the training vocabulary (most frequent first); rare and unseen values
    share ``num_oov_buckets`` hashed ids. Empty strings never enter a vocabulary."""

    top_k: int | None = None
    frequency_threshold: int | None = None
    num_oov_buckets: int = 1
    categorical: ClassVar[bool] = True
    min_oov_buckets: ClassVar[int] = 1  # an id must stay in [0, n): unseen values need one

    def problems(self) -> list[str]:
        found = []
        if self.num_oov_buckets < self.min_oov_buckets:
            found.append(f"num_oov_buckets must be >= {self.min_oov_buckets}")
        if self.top_k is not None and self.top_k < 1:
            found.append("top_k must be >= 1")
        return found

    def tokens(self, columns: Sequence[RawColumn]):
        """What the vocabulary counts and looks up: the column's values."""
        (column,) = columns
        return _dense(column)

    def ids(self, feature_name: str, tokens):
        return _blocks().vocabulary(
            tokens,
            self.top_k,
            self.num_oov_buckets,
            vocab_filename=vocabulary_file(feature_name),
            frequency_threshold=self.frequency_threshold,
        )

    def vocabulary_request(self, feature_name, columns):
        tokens = self.tokens(columns)
        spec = _blocks().VocabularySpec(
            vocabulary_file(feature_name),
            self.top_k,
            self.frequency_threshold,
            is_string=tokens.dtype.name == "string",
        )
        return spec, tokens

    def apply(self, feature_name, columns):
        return self.ids(feature_name, self.tokens(columns))


@dataclasses.dataclass(frozen=True, kw_only=True)
class OneHot(Vocabulary):
    """Dense ``[top_k + num_oov_buckets]``: one-hot of the vocabulary id."""

    top_k: int = dataclasses.field()  # required here (a plain annotation would inherit None)
    num_oov_buckets: int = 0
    categorical: ClassVar[bool] = False
    min_oov_buckets: ClassVar[int] = 0

    def apply(self, feature_name, columns):
        ids = self.ids(feature_name, self.tokens(columns))
        return _blocks().one_hot(ids, self.top_k + self.num_oov_buckets)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiHot(Vocabulary):
    """Dense ``[top_k + num_oov_buckets]``: the tokens of a delimited string, multi-hot."""

    top_k: int = dataclasses.field()
    num_oov_buckets: int = 0
    delimiter: str = ","
    categorical: ClassVar[bool] = False
    min_oov_buckets: ClassVar[int] = 0
    input_types: ClassVar[frozenset[str] | None] = frozenset({"STRING"})

    def tokens(self, columns):
        (column,) = columns
        return _blocks().split_tokens(_dense(column), self.delimiter)

    def apply(self, feature_name, columns):
        ids = self.ids(feature_name, self.tokens(columns))
        return _blocks().multi_hot(ids, self.top_k + self.num_oov_buckets)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _FixedIds(Kind):
    """Categorical kinds whose id range the parameters fix: instance-level, no analysis pass."""

    categorical: ClassVar[bool] = True
    size_param: ClassVar[str] = "hash_buckets"  # the parameter that is the id range
    minimum_size: ClassVar[int] = 2

    @property
    def analysis_passes(self) -> int:
        return 0

    @property
    def num_categories(self) -> int:
        return getattr(self, self.size_param)

    def problems(self) -> list[str]:
        if self.num_categories >= self.minimum_size:
            return []
        return [f"{self.size_param} must be >= {self.minimum_size}"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hash(_FixedIds):
    """Categorical id: FarmHash of the value mod ``hash_buckets`` (no analysis; unseen values
    get an id too, at the price of collisions)."""

    hash_buckets: int

    def apply(self, feature_name, columns):
        (column,) = columns
        return _blocks().hash_bucket(_dense(column), self.hash_buckets)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Identity(_FixedIds):
    """Categorical id: an integer already in ``[0, num_buckets)`` (clipped into it)."""

    num_buckets: int
    size_param: ClassVar[str] = "num_buckets"
    minimum_size: ClassVar[int] = 1
    input_types: ClassVar[frozenset[str] | None] = frozenset({"INT64"})

    def apply(self, feature_name, columns):
        (column,) = columns
        return _blocks().identity(_dense(column), self.num_buckets)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cross(_FixedIds):
    """Categorical id: hashed combination of several columns of any types (each input missing
    takes its own default: the feature's per-input default or its type's)."""

    hash_buckets: int
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = None

    def apply(self, feature_name, columns):
        return _blocks().hashed_cross([_dense(c) for c in columns], self.hash_buckets)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeoCell(Kind):
    """Categorical id: latitude x longitude grid cell, one extra id for rows without a point.

    The grid is ``lat_buckets`` x ``lon_buckets`` training quantiles, or fixed sorted
    ``lat_boundaries`` / ``lon_boundaries`` (n boundaries make n + 1 cells).
    """

    lat_buckets: int | None = None
    lon_buckets: int | None = None
    lat_boundaries: tuple[float, ...] | None = None
    lon_boundaries: tuple[float, ...] | None = None
    categorical: ClassVar[bool] = True
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = 2
    input_types: ClassVar[frozenset[str] | None] = NUMERIC

    @property
    def fixed(self) -> bool:
        return self.lat_boundaries is not None

    @property
    def grid(self) -> tuple[int, int]:
        if self.fixed:
            return len(self.lat_boundaries) + 1, len(self.lon_boundaries) + 1
        return int(self.lat_buckets), int(self.lon_buckets)

    @property
    def analysis_passes(self) -> int:
        return 0 if self.fixed else 1

    @property
    def num_categories(self) -> int:
        lat_cells, lon_cells = self.grid
        return lat_cells * lon_cells + 1

    def problems(self) -> list[str]:
        fixed = [self.lat_boundaries is not None, self.lon_boundaries is not None]
        quantile = [self.lat_buckets is not None, self.lon_buckets is not None]
        if not ((all(fixed) and not any(quantile)) or (all(quantile) and not any(fixed))):
            return ["geo cells need lat_buckets and lon_buckets, or lat/lon_boundaries"]
        for name in ("lat_boundaries", "lon_boundaries"):
            values = getattr(self, name)
            if values is not None and list(values) != sorted(values):
                return [f"{name} must be sorted"]
        return []

    def apply(self, feature_name, columns):
        import tensorflow as tf

        blocks = _blocks()
        lat_raw, lon_raw = (c.tensor for c in columns)
        present = tf.logical_and(blocks.is_present(lat_raw), blocks.is_present(lon_raw))
        lat = blocks.fill_in_missing(tf.cast(lat_raw, tf.float32), 0.0)
        lon = blocks.fill_in_missing(tf.cast(lon_raw, tf.float32), 0.0)
        if self.fixed:
            lat_edges = tf.constant([list(self.lat_boundaries)], tf.float32)
            lon_edges = tf.constant([list(self.lon_boundaries)], tf.float32)
        else:
            lat_edges = blocks.quantile_boundaries(
                blocks.present_values(lat_raw), self.lat_buckets, name="lat_quantiles"
            )
            lon_edges = blocks.quantile_boundaries(
                blocks.present_values(lon_raw), self.lon_buckets, name="lon_quantiles"
            )
        return blocks.geo_cell(lat, lon, present, lat_edges, lon_edges, self.num_categories)


# ---- time ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CyclicalTime(Kind):
    """Dense ``[4]``: sin/cos of the hour of day and the day of week of a timestamp, in local
    time of ``timezone`` (an IANA name; DST included)."""

    timezone: str = "UTC"
    input_types: ClassVar[frozenset[str] | None] = TIME

    @property
    def analysis_passes(self) -> int:
        return 0

    def problems(self) -> list[str]:
        return _timezone_problem(self.timezone)

    def apply(self, feature_name, columns):
        (column,) = columns
        return _calendar().cyclical_time(_dense(column), self.timezone)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CalendarPart(Kind):
    """Categorical id of a calendar part of a timestamp in local time of ``timezone``: hour
    (0..23), day_of_week (Monday 0 .. Sunday 6), weekend (0/1), day_of_month (0..30), month
    (0..11)."""

    part: str
    timezone: str = "UTC"
    categorical: ClassVar[bool] = True
    input_types: ClassVar[frozenset[str] | None] = TIME

    @property
    def analysis_passes(self) -> int:
        return 0

    @property
    def num_categories(self) -> int:
        return CALENDAR_PARTS[self.part]

    def problems(self) -> list[str]:
        if self.part not in CALENDAR_PARTS:
            return [f"part must be one of {tuple(CALENDAR_PARTS)}, got {self.part!r}"]
        return _timezone_problem(self.timezone)

    def apply(self, feature_name, columns):
        (column,) = columns
        ids = _calendar().calendar_part(_dense(column), self.part, self.timezone)
        return _blocks().record_categories(ids, self.num_categories)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClockTime(Kind):
    """A clock time written as HHMM (``1530``): its hour as a categorical id (``output="hour"``),
    the minute of day as a dense fraction in [0, 1) (``"minute_of_day"``) or its sin/cos
    (``"cyclical"``, dense ``[2]``)."""

    output: str = "hour"
    input_types: ClassVar[frozenset[str] | None] = NUMERIC

    @property
    def categorical(self) -> bool:  # type: ignore[override]
        return self.output == "hour"

    @property
    def analysis_passes(self) -> int:
        return 0

    @property
    def num_categories(self) -> int | None:
        return 24 if self.output == "hour" else None

    def problems(self) -> list[str]:
        if self.output not in CLOCK_OUTPUTS:
            return [f"output must be one of {CLOCK_OUTPUTS}, got {self.output!r}"]
        return []

    def apply(self, feature_name, columns):
        (column,) = columns
        values = _calendar().clock_time(_dense(column), self.output)
        if self.output == "hour":
            return _blocks().record_categories(values, 24)
        return values
