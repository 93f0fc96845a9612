"""Evaluation slices: groups of eval rows a model is judged on separately.

A model can beat the served one overall and still be worse for one kind of row (one payment
type, one carrier, the evening hours). A dataset declares the groups worth watching as
:class:`Slice`\\ s of a raw column: its values as they are (a STRING or INT64 column), numeric
buckets of it (``boundaries``), or a calendar part of a timestamp in a time zone
(``calendar_part``, the parts and ids of ``transforms.kinds.CALENDAR_PARTS``: hour 0..23,
day_of_week Monday 0 .. Sunday 6, weekend 0/1, day_of_month 0..30, month 0..11).

The evaluation computes each row's slice key from the raw value on the split's rows
(:mod:`pipeline.evaluation.slice_keys`, NumPy and ``zoneinfo``, not TensorFlow), reports the
metrics of every key, and the blessing compares the candidate with the served model on every key
with at least ``min_examples`` rows; smaller keys are reported but not gated (their metrics are
too noisy to stop a push). Pure Python: definitions load without NumPy or TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from pipeline.definition.columns import ColumnType
from transforms.kinds import CALENDAR_PARTS

# The key of a row whose slice column is missing (NULL, or NaN for a float).
MISSING_KEY = "(missing)"
DEFAULT_MIN_EXAMPLES = 100


@dataclasses.dataclass(frozen=True)
class Slice:
    """One slicing of the eval rows by a raw column (see the module docstring).

    ``boundaries`` ``(5, 10)`` make the buckets ``<= 5``, ``(5, 10]`` and ``> 10`` (a value is in
    the bucket of the number of boundaries it exceeds, as :class:`MultiClassLabel`'s buckets).
    """

    name: str
    column: str
    boundaries: tuple[float, ...] | None = None
    calendar_part: str | None = None
    timezone: str = "UTC"
    min_examples: int = DEFAULT_MIN_EXAMPLES

    def problems(self, types: Mapping[str, ColumnType]) -> list[str]:
        """What contradicts itself, given the dataset's column types (empty when sound)."""
        if self.column not in types:
            return [f"reads unknown column {self.column!r}"]
        column_type, found = types[self.column], []
        if self.min_examples < 1:
            found.append(f"min_examples must be at least 1, got {self.min_examples}")
        if self.boundaries is not None and self.calendar_part is not None:
            found.append("give boundaries or a calendar_part, not both")
        if self.boundaries is not None:
            if not column_type.is_numeric or column_type is ColumnType.TIMESTAMP:
                found.append(f"boundaries need a numeric column, {self.column!r} is {column_type}")
            if not self.boundaries or list(self.boundaries) != sorted(set(self.boundaries)):
                found.append("boundaries must be strictly increasing (at least one)")
        elif self.calendar_part is not None:
            if column_type not in (ColumnType.TIMESTAMP, ColumnType.INT64):
                found.append(f"a calendar part needs a TIMESTAMP column, {self.column!r} is not")
            if self.calendar_part not in CALENDAR_PARTS:
                found.append(
                    f"calendar_part must be one of {tuple(CALENDAR_PARTS)}, "
                    f"got {self.calendar_part!r}"
                )
            found += _timezone_problems(self.timezone)
        elif column_type is ColumnType.FLOAT64:
            found.append(f"{self.column!r} is FLOAT64: give boundaries to bucket it")
        elif column_type is ColumnType.TIMESTAMP:
            found.append(f"{self.column!r} is a TIMESTAMP: give a calendar_part")
        return found

    def describe(self) -> str:
        if self.boundaries is not None:
            edges = ", ".join(f"{b:g}" for b in self.boundaries)
            return f"{self.column} bucketed at ({edges})"
        if self.calendar_part is not None:
            return f"{self.calendar_part} of {self.column} in {self.timezone}"
        return self.column


def _timezone_problems(timezone: str) -> list[str]:
    try:
        ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return [f"unknown time zone {timezone!r} (an IANA name such as 'America/New_York')"]
    return []
