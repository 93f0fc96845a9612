"""How a dataset's rows are filtered and split in the warehouse, declared with its definition.

Filters are structured (a kind, columns, a bound) rather than SQL text: the warehouse renders
each as a NULL- and NaN-safe predicate whose bound is a query parameter, counts the rows it
removes under its name, and nothing from a definition is pasted into SQL unchecked.
"""

from __future__ import annotations

import dataclasses
import enum

SPLIT_NAMES: tuple[str, str, str] = ("train", "eval", "test")
DEFAULT_SALT = "split-v1"


class DuplicatePolicy(enum.StrEnum):
    """What the warehouse does with exact duplicate rows (every column equal)."""

    KEEP = "keep"  # counted and reported, kept
    DROP = "drop"  # one copy kept, the others removed and counted
    BLOCK = "block"  # any duplicate stops the run (a verdict)


@dataclasses.dataclass(frozen=True)
class RequirePresent:
    """Remove rows where any of ``columns`` is NULL (or NaN, which means missing too)."""

    name: str
    columns: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AtLeast:
    """Remove rows whose present ``column`` is below ``minimum`` (missing values pass)."""

    name: str
    column: str
    minimum: float


@dataclasses.dataclass(frozen=True)
class AtMost:
    """Remove rows whose present ``column`` is above ``maximum`` (missing values pass)."""

    name: str
    column: str
    maximum: float


RowFilter = RequirePresent | AtLeast | AtMost


def filter_columns(row_filter: RowFilter) -> tuple[str, ...]:
    if isinstance(row_filter, RequirePresent):
        return row_filter.columns
    return (row_filter.column,)


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """The hash split of a dataset.

    ``key_columns`` identify a row: its split is a pure function of their values and ``salt``,
    so adding a column to the table never moves a row to another split. ``stratify_by`` is a
    column or the label's name; ``oversample_target`` (binary labels only) replicates the
    minority class of train up to that minority/majority ratio.
    """

    key_columns: tuple[str, ...]
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    salt: str = DEFAULT_SALT
    stratify_by: str | None = None
    oversample_target: float | None = None
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP
