"""Label kinds: binary, multi-class and regression, each declared once and used everywhere.

A label is a rule over raw columns. The warehouse renders it in SQL and computes it there, once,
in double precision on the warehouse's own values (both engines run the same SQL), writing it
into the split files beside the raw columns; strata and oversampling use the same expression.
The transform passes it through, and its kind decides the model head, the loss, the metrics,
the baselines and the metric that blesses a model (:class:`Head`).

A row whose label sources are NULL or NaN never gets a label: the warehouse removes it and
counts it under the ``label_present`` filter (a comparison must never decide what NaN means:
DuckDB orders NaN above every number, so ``NaN > 15`` would be true there).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from pipeline.definition.columns import ColumnType

COMPARISONS = (">", ">=", "<", "<=")


class LabelKind(enum.StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


@dataclasses.dataclass(frozen=True)
class Head:
    """What a label kind asks of the model and its evaluation.

    ``blessing_metric`` decides whether a model may replace the served one; ``higher_is_better``
    gives its direction. ``stopping_metric`` is the Keras validation metric early stopping
    watches.
    """

    kind: LabelKind
    units: int
    metrics: tuple[str, ...]
    blessing_metric: str
    higher_is_better: bool
    stopping_metric: str
    stopping_mode: str
    baseline: str  # majority | mean


@dataclasses.dataclass(frozen=True)
class BinaryLabel:
    """``column <op> threshold`` (``arr_delay > 15``), or ``column <op> threshold * scale_column``
    (``tips > 0.2 * fare``). Class 1 is the rule holding."""

    name: str
    column: str
    op: str
    threshold: float
    scale_column: str | None = None
    class_names: tuple[str, str] = ("0", "1")

    kind = LabelKind.BINARY

    @property
    def source_columns(self) -> tuple[str, ...]:
        return (self.column,) if self.scale_column is None else (self.column, self.scale_column)

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def head(self) -> Head:
        return Head(
            LabelKind.BINARY,
            1,
            ("auc", "accuracy", "precision", "recall", "log_loss"),
            blessing_metric="auc",
            higher_is_better=True,
            stopping_metric="val_auc",
            stopping_mode="max",
            baseline="majority",
        )

    def describe(self) -> str:
        scale = f" * {self.scale_column}" if self.scale_column else ""
        return f"{self.name} = {self.column} {self.op} {self.threshold:g}{scale}"

    def problems(self, types: Mapping[str, ColumnType]) -> list[str]:
        found = []
        if self.op not in COMPARISONS:
            found.append(f"op must be one of {COMPARISONS}, got {self.op!r}")
        found += [f"{c!r} must be numeric" for c in self.source_columns if not types[c].is_numeric]
        if len(self.class_names) != 2 or len(set(self.class_names)) != 2:
            found.append("class_names must be two distinct names (negative, positive)")
        return found


@dataclasses.dataclass(frozen=True)
class MultiClassLabel:
    """One of ``classes``: a STRING column's values (others are removed, counted), or buckets of
    a number: with boundaries ``(15, 60)`` a value ``<= 15`` is class 0, ``<= 60`` class 1, and
    anything above class 2 (as ``BinaryLabel``'s ``>``: class i is the number of boundaries the
    value exceeds)."""

    name: str
    column: str
    classes: tuple[str, ...]
    boundaries: tuple[float, ...] | None = None

    kind = LabelKind.MULTICLASS

    @property
    def source_columns(self) -> tuple[str, ...]:
        return (self.column,)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes

    @property
    def head(self) -> Head:
        return Head(
            LabelKind.MULTICLASS,
            self.num_classes,
            ("accuracy", "macro_f1", "log_loss"),
            blessing_metric="macro_f1",
            higher_is_better=True,
            stopping_metric="val_loss",
            stopping_mode="min",
            baseline="majority",
        )

    def describe(self) -> str:
        if self.boundaries is None:
            return f"{self.name} = {self.column} in {list(self.classes)}"
        edges = ", ".join(f"{b:g}" for b in self.boundaries)
        return f"{self.name} = {self.column} bucketed at ({edges}) -> {list(self.classes)}"

    def problems(self, types: Mapping[str, ColumnType]) -> list[str]:
        found = []
        if len(self.classes) < 3:
            found.append("a multi-class label needs at least 3 classes (2: use BinaryLabel)")
        if len(set(self.classes)) != len(self.classes):
            found.append("class names must be distinct")
        column_type = types[self.column]
        if self.boundaries is None:
            if column_type is not ColumnType.STRING:
                found.append(f"{self.column!r} is not STRING: give boundaries to bucket a number")
        else:
            if not column_type.is_numeric:
                found.append(f"boundaries need a numeric column, {self.column!r} is not")
            if list(self.boundaries) != sorted(set(self.boundaries)):
                found.append("boundaries must be strictly increasing")
            if len(self.classes) != len(self.boundaries) + 1:
                found.append("n boundaries make n + 1 classes")
        return found


@dataclasses.dataclass(frozen=True)
class RegressionLabel:
    """A number to predict; ``log1p`` trains on ``log(1 + y)`` (rows with ``y <= -1`` are
    removed, counted) and the export answers on the original scale."""

    name: str
    column: str
    log1p: bool = False

    kind = LabelKind.REGRESSION

    @property
    def source_columns(self) -> tuple[str, ...]:
        return (self.column,)

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def class_names(self) -> tuple[str, ...]:
        return ()

    @property
    def head(self) -> Head:
        return Head(
            LabelKind.REGRESSION,
            1,
            ("rmse", "mae", "r2"),
            blessing_metric="rmse",
            higher_is_better=False,
            stopping_metric="val_loss",
            stopping_mode="min",
            baseline="mean",
        )

    def describe(self) -> str:
        return f"{self.name} = {'log1p(' + self.column + ')' if self.log1p else self.column}"

    def problems(self, types: Mapping[str, ColumnType]) -> list[str]:
        return [] if types[self.column].is_numeric else [f"{self.column!r} must be numeric"]


Label = BinaryLabel | MultiClassLabel | RegressionLabel
