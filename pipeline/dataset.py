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
    """How a raw column becomes a model feature. Implemented in ``transforms/``."""

    ZSCORE = "zscore"  # dense float, (x - mean) / std over train
    SCALE_0_1 = "scale_0_1"  # dense float, (x - min) / (max - min) over train
    LOG_ZSCORE = "log_zscore"  # dense float, z-score of log1p(max(x, 0))
    QUANTILE_BUCKET = "quantile_bucket"  # categorical id, quantile boundaries over train
    VOCABULARY = "vocabulary"  # categorical id, vocabulary over train (+ OOV buckets)
    IDENTITY = "identity"  # categorical id, integer already in [0, num_buckets)
    CYCLICAL_TIME = "cyclical_time"  # dense floats: sin/cos of hour of day and day of week
    CROSS = "cross"  # categorical id, hashed cross of several raw columns


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


CATEGORICAL_TRANSFORMS = frozenset(
    {Transform.QUANTILE_BUCKET, Transform.VOCABULARY, Transform.IDENTITY, Transform.CROSS}
)


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
