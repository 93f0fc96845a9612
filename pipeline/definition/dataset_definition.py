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
import functools
from pathlib import Path

from pipeline.definition.columns import Column, ColumnType
from pipeline.definition.features import Feature, ModelPart
from pipeline.definition.labels import Label, LabelKind
from pipeline.definition.slices import Slice
from pipeline.definition.sources import Source
from pipeline.definition.splitting import RowFilter, SplitSettings, filter_columns
from pipeline.definition.windows import (
    NUMERIC,
    AsOfJoin,
    Join,
    WindowFeature,
    join_derived_columns,
)


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
    # Columns derived from events before each row's time (pipeline.definition.windows): computed
    # by the warehouse SQL for training and filled by the server from the online store.
    windows: tuple[WindowFeature, ...] = ()
    joins: tuple[Join, ...] = ()
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
        """Types of every column a feature may read: the raw columns and the derived ones."""
        return {c.name: c.type for c in self.row_columns}

    # ---- derived columns (window features and joins) ---------------------------------------

    @functools.cached_property
    def derived_columns(self) -> tuple[Column, ...]:
        """Columns the warehouse SQL (batch) and the online store (serving) derive per row."""
        derived: list[Column] = []
        for window in self.windows:
            try:
                derived += window.derived_columns()
            except ValueError:  # a bad duration: reported by problems()
                continue
        for join in self.joins:
            side = {c.name: c for c in self._side_columns(join.table)}
            derived += join_derived_columns(join, side)
        return tuple(derived)

    @property
    def derived_column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.derived_columns)

    @property
    def row_columns(self) -> tuple[Column, ...]:
        """The raw table's columns, then the derived ones: a split file row without the label."""
        return (*self.columns, *self.derived_columns)

    @property
    def client_columns(self) -> tuple[Column, ...]:
        """What a serving client sends: the serving columns the server does not fill itself."""
        derived = set(self.derived_column_names)
        return tuple(c for c in self.serving_columns if c.name not in derived)

    @property
    def has_derived_columns(self) -> bool:
        return bool(self.windows or self.joins)

    def event_table_columns(self, table_name: str | None) -> tuple[Column, ...]:
        """Columns of the main table (``None``) or of the side table called ``table_name``."""
        return self.columns if table_name is None else self._side_columns(table_name)

    def _side_columns(self, name: str) -> tuple[Column, ...]:
        for table in self.side_tables:
            if table.name == name:
                return table.columns
        return ()

    @property
    def label_column(self) -> Column:
        """The label as the warehouse writes it into split files (computed there, once, by
        SQL both engines run): INT64 class ids, or the FLOAT64 target."""
        kind = ColumnType.FLOAT64 if self.label.kind is LabelKind.REGRESSION else ColumnType.INT64
        return Column(self.label.name, kind, self.label.describe(), nullable=False)

    @property
    def split_file_columns(self) -> tuple[Column, ...]:
        """Columns of the split files: the raw columns in order, the derived ones, the label."""
        return (*self.row_columns, self.label_column)

    def split_column(self, name: str) -> Column:
        """A column of the split files (a raw or derived column, or the label)."""
        if name == self.label.name:
            return self.label_column
        for column in self.row_columns:
            if column.name == name:
                return column
        raise KeyError(f"dataset {self.name!r} has no column {name!r}")

    @property
    def serving_columns(self) -> tuple[Column, ...]:
        """Raw columns the exported model reads from a request: everything known before the
        prediction, derived columns included (the server fills those, see client_columns)."""
        known = tuple(c for c in self.columns if c.name not in self.unknown_at_serving)
        return (*known, *self.derived_columns)

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
        found += self._warehouse_problems() + self._derived_problems()
        return found + self._slice_problems()

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
        types, found, seen = self.column_types, [], set()
        known = set(types)
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

    def _derived_problems(self) -> list[str]:
        """Window features and joins: columns, types, windows, lags, names (see windows.py)."""
        found: list[str] = []
        if (self.windows or self.joins) and self.timestamp_column is None:
            found.append("window features and joins need a timestamp column (the row's time)")
        for window in self.windows:
            where = f"window feature {window.name!r}"
            found += [f"{where}: {p}" for p in window.parameter_problems()]
            found += [f"{where}: {p}" for p in self._window_column_problems(window)]
        for join in self.joins:
            kind = "as-of join" if isinstance(join, AsOfJoin) else "lookup"
            where = f"{kind} {join.name!r}"
            found += [f"{where}: {p}" for p in join.parameter_problems()]
            found += [f"{where}: {p}" for p in self._join_column_problems(join)]
        found += self._derived_name_problems()
        return found

    def _key_problems(self, keys, table_keys, table_label: str, table_columns) -> list[str]:
        row_types = {c.name: c.type for c in self.columns}
        other = {c.name: c.type for c in table_columns}
        found = []
        if len(keys) != len(table_keys):
            return [f"{len(keys)} key column(s) {keys} but {len(table_keys)} in {table_label}"]
        for key, table_key in zip(keys, table_keys, strict=True):
            if key not in row_types:
                found.append(f"key {key!r} is not a column of the main table")
            elif key in self.unknown_at_serving:
                found.append(f"key {key!r} is unknown at serving, so a request cannot name it")
            elif table_key not in other:
                found.append(f"key {table_key!r} is not a column of {table_label}")
            elif row_types[key] is not other[table_key]:
                found.append(
                    f"key type mismatch: {key!r} is {row_types[key]}, {table_label}."
                    f"{table_key} is {other[table_key]}"
                )
            elif row_types[key] in (ColumnType.FLOAT64, ColumnType.TIMESTAMP):
                found.append(f"key {key!r} must be STRING or INT64, not {row_types[key]}")
        return found

    def _time_problem(self, table_label: str, columns, name: str | None) -> list[str]:
        types = {c.name: c.type for c in columns}
        if name is None:
            return [f"{table_label} needs a time column (event_time / time)"]
        if name not in types:
            return [f"time column {name!r} is not a column of {table_label}"]
        if types[name] is not ColumnType.TIMESTAMP:
            return [f"time column {name!r} of {table_label} must be TIMESTAMP"]
        return []

    def _window_column_problems(self, window: WindowFeature) -> list[str]:
        if window.events is not None and window.events not in {t.name for t in self.side_tables}:
            return [f"events names unknown side table {window.events!r}"]
        label = "the main table" if window.events is None else f"side table {window.events!r}"
        columns = self.event_table_columns(window.events)
        types = {c.name: c.type for c in columns}
        found = self._key_problems(window.keys, window.matching_event_keys, label, columns)
        found += self._time_problem(label, columns, self.event_time_column(window))
        if window.value is None:
            pass  # counts the events themselves
        elif window.value not in types:
            found.append(f"value {window.value!r} is not a column of {label}")
        elif types[window.value] not in NUMERIC:
            found.append(f"value {window.value!r} must be INT64 or FLOAT64")
        event_id = self.event_id_columns(window)
        if not event_id:
            found.append(f"{label} needs event_id columns (what identifies an event)")
        for column in event_id:
            if column not in types:
                found.append(f"event_id column {column!r} is not a column of {label}")
        return found

    def _join_column_problems(self, join: Join) -> list[str]:
        if join.table not in {t.name for t in self.side_tables}:
            return [f"unknown side table {join.table!r}"]
        label, columns = f"side table {join.table!r}", self._side_columns(join.table)
        types = {c.name: c for c in columns}
        found = self._key_problems(join.keys, join.matching_table_keys, label, columns)
        if isinstance(join, AsOfJoin):
            found += self._time_problem(label, columns, join.time)
        found += [
            f"column {name!r} is not a column of {label}" for name in join.columns
            if name not in types
        ]  # fmt: skip
        return found

    def _derived_name_problems(self) -> list[str]:
        taken = {c.name: "a raw column" for c in self.columns}
        taken[self.label.name] = "the label"
        found = []
        for owner, names in self._derived_names_by_owner():
            for name in names:
                if name in taken:
                    found.append(f"{owner}: derived column {name!r} clashes with {taken[name]}")
                else:
                    taken[name] = owner
        return found

    def _derived_names_by_owner(self):
        for window in self.windows:
            try:
                names = [name for name, _, _ in window.outputs]
            except ValueError:
                names = []
            yield f"window feature {window.name!r}", names
        for join in self.joins:
            kind = "as-of join" if isinstance(join, AsOfJoin) else "lookup"
            yield f"{kind} {join.name!r}", [join.output_name(c) for c in join.columns]

    # ---- event tables ----------------------------------------------------------------------

    def event_time_column(self, window: WindowFeature) -> str | None:
        """The TIMESTAMP column of a window feature's event table."""
        if window.event_time is not None:
            return window.event_time
        return self.timestamp_column if window.events is None else None

    def event_id_columns(self, window: WindowFeature) -> tuple[str, ...]:
        """What identifies one event of a window feature's table (main: the split key)."""
        if window.event_id is not None:
            return window.event_id
        return self.split.key_columns if window.events is None else ()

    @property
    def max_lookback_seconds(self) -> int:
        """The largest window (events older than a row's time minus this never count)."""
        return max((w.lookback_seconds for w in self.windows), default=0)
