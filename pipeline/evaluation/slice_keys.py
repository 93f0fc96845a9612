"""Each eval row's key in a declared slice, computed from the raw value in NumPy and Python.

The same semantics as the transform kinds that read the same columns (``transforms.kinds``):
numeric buckets count the boundaries a value exceeds (``<= 5``, ``(5, 10]``, ``> 10``), and a
calendar part is taken of the Unix seconds in local time of the slice's zone, with Python's
``zoneinfo`` (``transforms.calendar`` does the same in TensorFlow for the model). A row without a
value gets :data:`pipeline.definition.MISSING_KEY`. Keys come with their display order: numbers
and calendar parts in their natural order, strings by their number of rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from pipeline.definition import MISSING_KEY, ColumnType, Slice

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def slice_keys(spec: Slice, values: pa.Array | pa.ChunkedArray, column_type: ColumnType):
    """``(keys, order)``: a string key per row, and every key that occurs, in display order."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    present = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if spec.boundaries is not None:
        numbers = np.asarray(values.cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
        present &= ~np.isnan(numbers)
        ids, names = _buckets(numbers, spec.boundaries)
    elif spec.calendar_part is not None:
        seconds = np.asarray(values.cast(pa.int64()).fill_null(0), dtype=np.int64)
        ids, names = _calendar_ids(seconds, spec.calendar_part, spec.timezone)
    elif column_type.is_numeric:
        numbers = np.asarray(values.cast(pa.int64()).fill_null(0), dtype=np.int64)
        distinct = np.unique(numbers[present])
        ids = np.searchsorted(distinct, numbers) if distinct.size else np.zeros_like(numbers)
        names = [str(int(v)) for v in distinct]
    else:
        return _string_keys(values, present)
    keys = np.asarray(names, dtype=object)[ids] if names else np.empty(len(ids), dtype=object)
    keys[~present] = MISSING_KEY
    order = [name for i, name in enumerate(names) if np.any(present & (ids == i))]
    return keys, order + ([MISSING_KEY] if not present.all() else [])


def _buckets(numbers: np.ndarray, boundaries: tuple[float, ...]) -> tuple[np.ndarray, list[str]]:
    """Bucket ids (the number of boundaries a value exceeds) and the buckets' names."""
    edges = np.asarray(boundaries, dtype=np.float64)
    ids = np.searchsorted(edges, np.nan_to_num(numbers, nan=edges[0]), side="left")
    names = [f"<= {boundaries[0]:g}"]
    names += [f"({low:g}, {high:g}]" for low, high in itertools.pairwise(boundaries)]
    return ids, [*names, f"> {boundaries[-1]:g}"]


def _calendar_ids(seconds: np.ndarray, part: str, timezone: str) -> tuple[np.ndarray, list[str]]:
    """Calendar part ids of Unix seconds in local time (ids of ``transforms.kinds``)."""
    zone = ZoneInfo(timezone)
    distinct, inverse = np.unique(seconds, return_inverse=True)
    local = [dt.datetime.fromtimestamp(int(s), tz=dt.UTC).astimezone(zone) for s in distinct]
    if part == "hour":
        ids, names = [t.hour for t in local], [f"{h:02d}" for h in range(24)]
    elif part == "day_of_week":
        ids, names = [t.weekday() for t in local], list(WEEKDAYS)
    elif part == "weekend":
        ids, names = [int(t.weekday() >= 5) for t in local], ["weekday", "weekend"]
    elif part == "day_of_month":
        ids, names = [t.day - 1 for t in local], [str(d) for d in range(1, 32)]
    elif part == "month":
        ids, names = [t.month - 1 for t in local], list(MONTHS)
    else:
        raise ValueError(f"unknown calendar part {part!r}")
    return np.asarray(ids, dtype=np.int64)[inverse], names


def _string_keys(values: pa.Array, present: np.ndarray) -> tuple[np.ndarray, list[str]]:
    text = values.cast(pa.string()).fill_null(MISSING_KEY).to_numpy(zero_copy_only=False)
    keys = np.asarray(text, dtype=object)
    keys[~present] = MISSING_KEY
    distinct, counts = np.unique(keys[present].astype(str), return_counts=True)
    order = [str(distinct[i]) for i in np.lexsort((distinct, -counts))]
    return keys, order + ([MISSING_KEY] if not present.all() else [])
