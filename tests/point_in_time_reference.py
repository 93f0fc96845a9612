"""A reference of the point-in-time rule, written from its statement, not from the SQL.

For each row: scan every event, keep those of the row's key with ``t - window <= time`` and
``time + lag < t`` and a present value, then aggregate with NumPy. As-of: the latest observation
with ``obs.time + lag <= t`` (and ``obs.time >= t - max_age``). Lookups: the row with the key.
Slow on purpose (a loop over rows, a mask over all events), obviously right, small data only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def window_reference(
    rows: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    *,
    key: str,
    event_key: str,
    row_time: str,
    event_time: str,
    value: str,
    window: int,
    lag: int,
) -> list[dict[str, Any]]:
    """Per row: count, sum, mean, min, max, stddev (population), last."""
    keys = np.array([e[event_key] for e in events], dtype=object)
    times = np.array([e[event_time] if e[event_time] is not None else -1 for e in events])
    has_time = np.array([e[event_time] is not None for e in events])
    present = np.array([_present(e[value]) for e in events])
    values = np.array([float(e[value]) if _present(e[value]) else 0.0 for e in events])
    results = []
    for row in rows:
        if row[key] is None or row[row_time] is None:
            results.append(dict.fromkeys(("count", "sum", "mean", "min", "max", "stddev", "last")))
            continue
        t = row[row_time]
        mask = (keys == row[key]) & has_time & present & (times >= t - window) & (times + lag < t)
        chosen, chosen_times = values[mask], times[mask]
        if not chosen.size:
            results.append(
                {"count": 0, "sum": None, "mean": None, "min": None, "max": None,
                 "stddev": None, "last": None}
            )  # fmt: skip
            continue
        latest = chosen_times.max()
        results.append(
            {
                "count": int(chosen.size),
                "sum": float(chosen.sum()),
                "mean": float(chosen.mean()),
                "min": float(chosen.min()),
                "max": float(chosen.max()),
                "stddev": float(chosen.std()),  # NumPy's default ddof=0: the population's
                "last": float(chosen[chosen_times == latest].max()),
            }
        )
    return results


def as_of_reference(
    rows: Sequence[Mapping[str, Any]],
    observations: Sequence[Mapping[str, Any]],
    *,
    key: str,
    obs_key: str,
    row_time: str,
    obs_time: str,
    columns: Sequence[str],
    lag: int,
    max_age: int | None,
) -> list[dict[str, Any]]:
    results = []
    for row in rows:
        best = None
        if row[key] is not None and row[row_time] is not None:
            t = row[row_time]
            for obs in observations:
                when = obs[obs_time]
                if obs[obs_key] != row[key] or when is None or when + lag > t:
                    continue
                if max_age is not None and when < t - max_age:
                    continue
                if best is None or when > best[obs_time]:
                    best = obs
        results.append({c: None if best is None else _clean(best[c]) for c in columns})
    return results


def lookup_reference(
    rows: Sequence[Mapping[str, Any]],
    table: Sequence[Mapping[str, Any]],
    *,
    key: str,
    table_key: str,
    columns: Sequence[str],
) -> list[dict[str, Any]]:
    by_key = {r[table_key]: r for r in table if r[table_key] is not None}
    return [
        {c: None if by_key.get(row[key]) is None else _clean(by_key[row[key]][c]) for c in columns}
        for row in rows
    ]


def _clean(value: Any) -> Any:
    return None if not _present(value) else value
