"""The point-in-time rule at read time: a window feature's values for a row at time ``t``.

The store holds events; nothing is pre-aggregated, so a query at any ``t`` gives the value the
batch SQL computes for a row at ``t`` (see :mod:`pipeline.definition.windows`): an event counts
iff ``e.time >= t - window`` and ``e.time + lag < t``. NULL values are ignored, ``count`` counts
the non-null ones (0 without any), every other aggregate is None then; ``stddev`` is the
population standard deviation; ``last`` the value at the latest time, the largest of several.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.definition import Aggregation, WindowFeature
from pipeline.online.stores import Event


def read_range(window: WindowFeature, t: int) -> tuple[int, int]:
    """The inclusive range of event times ``[t - largest window, t - lag - 1]`` to read."""
    return t - window.lookback_seconds, t - window.lag_seconds - 1


def window_values(window: WindowFeature, t: int, events: Sequence[Event]) -> dict[str, object]:
    """Every derived column of ``window`` for a row at ``t``, from the events of its entity."""
    values: dict[str, object] = {}
    end = t - window.lag_seconds  # exclusive: e.time + lag < t
    for seconds in window.window_seconds:
        start = t - seconds
        present = [
            (time, float(payload))
            for time, _, payload in events
            if start <= time < end and payload is not None
        ]
        for aggregation in window.aggregation_kinds:
            values[window.output_name(aggregation, seconds)] = aggregate(aggregation, present)
    return values


def aggregate(aggregation: Aggregation, present: Sequence[tuple[int, float]]) -> object:
    """One aggregate over (time, value) pairs with values present."""
    if aggregation is Aggregation.COUNT:
        return len(present)
    if not present:
        return None
    values = [v for _, v in present]
    if aggregation is Aggregation.SUM:
        return math.fsum(values)
    if aggregation is Aggregation.MEAN:
        return math.fsum(values) / len(values)
    if aggregation is Aggregation.MIN:
        return min(values)
    if aggregation is Aggregation.MAX:
        return max(values)
    if aggregation is Aggregation.STDDEV:
        mean = math.fsum(values) / len(values)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if aggregation is Aggregation.LAST:
        latest = max(t for t, _ in present)
        return max(v for t, v in present if t == latest)
    raise ValueError(f"unknown aggregation {aggregation!r}")
