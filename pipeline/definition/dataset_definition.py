"""The dataset definition: the one place a dataset's table, label and features are declared.

Every stage derives what it needs from a :class:`DatasetDefinition`: the warehouse its column
list, types, filters, split settings and label rule; validation its schema (found through
:attr:`DatasetDefinition.schema_name`); the transform ``preprocessing_fn``; the model its inputs
and head; the export its serving signatures; serving the raw features a request may carry; the
run its model name and push base. A definition is checked when it is built, so a mistake is a
:class:`DefinitionError` naming the dataset and the feature or column, before anything runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.definition.columns import Column, ColumnType
from pipeline.definition.features import Feature, ModelPart
from pipeline.definition.labels import Label, LabelKind
from pipeline.definition.slices import Slice
from pipeline.definition.sources import Source
from pipeline.definition.splitting import RowFilter, SplitSettings, filter_columns


class DefinitionError(ValueError):
    """A dataset definition contradicts itself; the message names the dataset and the part."""


@dataclasses.dataclass(frozen=True)
class SideTable:
    """Another warehouse table of the dataset (e.g. weather observations, aircraft)."""

    name: str
    table: str  # dataset.table
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclasses.dataclass(frozen=True)
class DatasetDefinition:
    """Everything the pipeline needs to know about one dataset (see the module docstring)."""

    name: str
    table: str  # warehouse table as dataset.table (BigQuery adds the project in front)
    columns: tuple[Column, ...]
    label: Label
    features: tuple[Feature, ...]
    split: SplitSettings
    description: str = ""
    source: Source | None = None
    filters: tuple[RowFilter, ...] = ()
    # Raw columns a serving request cannot carry (the label's column, anything known later).
    unknown_at_serving: tuple[str, ...] = ()
    # Column that orders rows in time (data-interval filtering, drift windows).
    timestamp_column: str | None = None
    side_tables: tuple[SideTable, ...] = ()
    model_name: str | None = None  # default: the dataset's name
    schema_name: str | None = None  # schemas/<schema_name>/; default: the dataset's name
    # Raw columns that describe a row to a person (run summaries); default: the first three.
    display_columns: tuple[str, ...] = ()
    # Groups of eval rows the model is judged on separately (reported, and gating the blessing).
    slices: tuple[Slice, ...] = ()
    folder: Path | None = None  # the dataset's folder, set when it is discovered

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise DefinitionError(
                f"dataset {self.name!r}: " + "; ".join(problems[:10])
                + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else "")
            )  # fmt: skip

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
    def column_types(self) -> dict[str, ColumnType]:
        return {c.name: c.type for c in self.columns}

    @property
    def label_column(self) -> Column:
        """The label as the warehouse writes it into split files (computed there, once, by
        SQL both engines run): INT64 class ids, or the FLOAT64 target."""
        kind = ColumnType.FLOAT64 if self.label.kind is LabelKind.REGRESSION else ColumnType.INT64
        return Column(self.label.name, kind, self.label.describe(), nullable=False)

    @property
    def split_file_columns(self) -> tuple[Column, ...]:
        """Columns of the split files: the raw columns in order, then the label."""
        return (*self.columns, self.label_column)

    def split_column(self, name: str) -> Column:
        """A column of the split files (a raw column or the label)."""
        if name == self.label.name:
            return self.label_column
        return self.column(name)

    @property
    def serving_columns(self) -> tuple[Column, ...]:
        """Raw columns a serving request carries: everything known before the prediction."""
        return tuple(c for c in self.columns if c.name not in self.unknown_at_serving)

    @property
    def served_model_name(self) -> str:
        return self.model_name or self.name

    @property
    def schema(self) -> str:
        return self.schema_name or self.name

    @property
    def label_kind(self) -> LabelKind:
        return self.label.kind

    @property
    def summary_columns(self) -> tuple[str, ...]:
        return self.display_columns or tuple(c.name for c in self.serving_columns[:3])

    @property
    def analysis_passes(self) -> int:
        """Passes over the training data the transform's analysis takes (see the kinds')."""
        return max((f.analysis_passes for f in self.features), default=0)

    def features_for(self, part: ModelPart) -> tuple[Feature, ...]:
        """Features feeding ``part`` (features marked BOTH feed wide and deep)."""
        return tuple(f for f in self.features if f.model_part in (part, ModelPart.BOTH))

    def side_table(self, name: str) -> SideTable:
        for table in self.side_tables:
            if table.name == name:
                return table
        raise KeyError(f"dataset {self.name!r} has no side table {name!r}")

    @property
    def tables(self) -> dict[str, tuple[Column, ...]]:
        """Every warehouse table of the dataset (main first) with its columns."""
        return {self.table: self.columns, **{t.table: t.columns for t in self.side_tables}}

    # ---- consistency ----------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Everything that contradicts itself in this definition (empty when it is sound)."""
        found = self._column_problems() + self._label_problems() + self._feature_problems()
        return found + self._warehouse_problems() + self._slice_problems()

    def _column_problems(self) -> list[str]:
        names = self.column_names
        found = []
        if not names:
            found.append("no columns")
        if len(set(names)) != len(names):
            found.append(f"duplicate column names in {names}")
        for name in self.unknown_at_serving:
            if name not in names:
                found.append(f"unknown_at_serving names unknown column {name!r}")
        ts = self.timestamp_column
        if ts is not None and ts not in names:
            found.append(f"timestamp column {ts!r} is not a column")
        elif ts is not None and self.column(ts).type is not ColumnType.TIMESTAMP:
            found.append(f"timestamp column {ts!r} must be of type TIMESTAMP")
        for column in self.display_columns:
            if column not in names:
                found.append(f"display column {column!r} is not a column")
        return found

    def _label_problems(self) -> list[str]:
        label, known = self.label, set(self.column_names)
        missing = [c for c in label.source_columns if c not in known]
        if missing:
            return [f"label {label.name!r} reads unknown column(s) {missing}"]
        found = [f"label {label.name!r}: {p}" for p in label.problems(self.column_types)]
        if label.column not in self.unknown_at_serving:
            found.append(
                f"label {label.name!r}: its column {label.column!r} would be sent with serving "
                "requests; list it in unknown_at_serving"
            )
        if label.name in known:
            found.append(f"label name {label.name!r} is also a column name")
        return found

    def _feature_problems(self) -> list[str]:
        known, types, found, seen = set(self.column_names), self.column_types, [], set()
        for feature in self.features:
            where = f"feature {feature.name!r}"
            if feature.name in seen:
                found.append(f"duplicate feature {feature.name!r}")
            seen.add(feature.name)
            unknown = [c for c in feature.inputs if c not in known]
            if unknown:
                found.append(f"{where} reads unknown column(s) {unknown}")
                continue
            for column in feature.inputs:
                if column in self.unknown_at_serving:
                    found.append(
                        f"{where} reads {column!r}, which serving requests do not carry "
                        "(unknown_at_serving)"
                    )
            found += [f"{where}: {problem}" for problem in feature.problems(types)]
        if not self.features:
            found.append("no features")
        return found

    def _slice_problems(self) -> list[str]:
        names = [s.name for s in self.slices]
        found = [f"duplicate slice names in {names}"] if len(set(names)) != len(names) else []
        for one in self.slices:
            found += [f"slice {one.name!r}: {p}" for p in one.problems(self.column_types)]
        return found

    def _warehouse_problems(self) -> list[str]:
        known, split, found = set(self.column_names), self.split, []
        for column in split.key_columns:
            if column not in known:
                found.append(f"split key column {column!r} is not a column")
        if not split.key_columns:
            found.append("split.key_columns must name the columns that identify a row")
        stratum = split.stratify_by
        if stratum is not None and stratum != self.label.name and stratum not in known:
            found.append(f"stratify_by {stratum!r} is neither a column nor the label")
        if stratum == self.label.name and self.label.kind is LabelKind.REGRESSION:
            found.append("cannot stratify by a regression label")
        if split.oversample_target is not None and self.label.kind is not LabelKind.BINARY:
            found.append("oversampling needs a binary label")
        names = [f.name for f in self.filters]
        if len(set(names)) != len(names):
            found.append(f"duplicate filter names in {names}")
        for row_filter in self.filters:
            for column in filter_columns(row_filter):
                if column not in known:
                    found.append(f"filter {row_filter.name!r} reads unknown column {column!r}")
                elif not hasattr(row_filter, "columns") and not self.column(column).type.is_numeric:
                    found.append(f"filter {row_filter.name!r} needs a numeric column")
        side_names = [t.name for t in self.side_tables]
        if len(set(side_names)) != len(side_names):
            found.append(f"duplicate side table names in {side_names}")
        if self.source is not None:
            for table in self.tables:
                try:
                    self.source.file_for(table)
                except KeyError:
                    found.append(f"the source has no file for table {table!r}")
        return found
