"""Local calendar and clock parts of Unix times, in any time zone, in pure TensorFlow.

TensorFlow has no time-zone database, so a zone's UTC offsets are turned into constants when the
graph is traced: the instants where the offset changes (daylight saving, legal changes) between
1950 and 2100, read from Python's ``zoneinfo``, and the offset from each. In the graph a local
time is then ``t + offset[searchsorted(transitions, t) - 1]``: integer arithmetic, identical in
TFT's Beam jobs and in the serving graph, and right across DST changes (New York's evening rush
stays at 17:00 local all year while it moves between 21:00 and 22:00 UTC).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from zoneinfo import ZoneInfo

import tensorflow as tf

SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400
_FIRST_YEAR, _LAST_YEAR = 1950, 2100
_INT64_MIN = -(2**63)


@functools.cache
def offset_table(timezone: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(transition instants in Unix seconds, UTC offset in seconds from each instant on).

    The first instant is the smallest int64, so every time finds its offset. Offsets are found
    day by day; a change within a day is located to the second by bisection.
    """
    zone = ZoneInfo(timezone)

    def offset(seconds: int) -> int:
        moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).astimezone(zone)
        return int(moment.utcoffset().total_seconds())

    start = int(dt.datetime(_FIRST_YEAR, 1, 1, tzinfo=dt.UTC).timestamp())
    end = int(dt.datetime(_LAST_YEAR + 1, 1, 1, tzinfo=dt.UTC).timestamp())
    instants, offsets = [_INT64_MIN], [offset(start)]
    for day_start in range(start, end, SECONDS_PER_DAY):
        day_end = day_start + SECONDS_PER_DAY
        if offset(day_end) == offsets[-1]:
            continue
        low, high = day_start, day_end  # offset(low) is the old one, offset(high) the new one
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == offsets[-1] else (low, middle)
        instants.append(high)
        offsets.append(offset(high))
    return tuple(instants), tuple(offsets)


def local_seconds(timestamp_seconds: tf.Tensor, timezone: str = "UTC") -> tf.Tensor:
    """int64 ``[batch]``: Unix seconds shifted to wall-clock time in ``timezone``."""
    seconds = tf.cast(tf.reshape(timestamp_seconds, [-1]), tf.int64)
    if timezone == "UTC":
        return seconds
    instants, offsets = offset_table(timezone)
    if len(instants) == 1:
        return seconds + offsets[0]
    index = tf.searchsorted(
        tf.constant([instants], tf.int64), seconds[None, :], side="right", out_type=tf.int64
    )[0]
    return seconds + tf.gather(tf.constant(offsets, tf.int64), index - 1)


def civil_date(days: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(year, month 1..12, day 1..31) of int64 days since 1970-01-01 (proleptic Gregorian).

    Howard Hinnant's ``civil_from_days``: integer divisions only, exact for every day.
    """
    z = days + 719468
    era = tf.math.floordiv(z, 146097)
    doe = z - era * 146097
    yoe = tf.math.floordiv(
        doe - tf.math.floordiv(doe, 1460) + tf.math.floordiv(doe, 36524)
        - tf.math.floordiv(doe, 146096),
        365,
    )  # fmt: skip
    doy = doe - (365 * yoe + tf.math.floordiv(yoe, 4) - tf.math.floordiv(yoe, 100))
    mp = tf.math.floordiv(5 * doy + 2, 153)
    day = doy - tf.math.floordiv(153 * mp + 2, 5) + 1
    month = tf.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + tf.cast(month <= 2, tf.int64)
    return year, month, day


def calendar_part(timestamp_seconds: tf.Tensor, part: str, timezone: str = "UTC") -> tf.Tensor:
    """int64 id of a calendar part of local time in ``timezone``.

    Parts (see ``transforms.kinds.CALENDAR_PARTS``): hour 0..23, day_of_week Monday = 0 .. Sunday
    = 6, weekend 0/1, day_of_month 0..30 (day 1 is 0), month 0..11.
    """
    local = local_seconds(timestamp_seconds, timezone)
    days = tf.math.floordiv(local, SECONDS_PER_DAY)
    if part == "hour":
        return tf.math.floordiv(tf.math.floormod(local, SECONDS_PER_DAY), SECONDS_PER_HOUR)
    # 1970-01-01 was a Thursday: Monday = 0 makes it day 3.
    day_of_week = tf.math.floormod(days + 3, 7)
    if part == "day_of_week":
        return day_of_week
    if part == "weekend":
        return tf.cast(day_of_week >= 5, tf.int64)
    _, month, day = civil_date(days)
    if part == "day_of_month":
        return day - 1
    if part == "month":
        return month - 1
    raise ValueError(f"unknown calendar part {part!r}")


def cyclical_time(timestamp_seconds: tf.Tensor, timezone: str = "UTC") -> tf.Tensor:
    """``[batch, 4]``: sin/cos of the hour of day and of the day of week, in local time.

    Hour 23 and hour 0 are neighbours on the circle, which a plain integer hides from the model.
    The day of week counts from Sunday (0) and carries the hour as its fraction.
    """
    seconds = local_seconds(timestamp_seconds, timezone)
    seconds_of_day = tf.math.floormod(seconds, SECONDS_PER_DAY)
    hour = tf.cast(seconds_of_day, tf.float32) / SECONDS_PER_HOUR
    # 1970-01-01 was a Thursday: with Sunday = 0 that is day 4.
    day = tf.math.floormod(tf.math.floordiv(seconds, SECONDS_PER_DAY) + 4, 7)
    day = tf.cast(day, tf.float32) + hour / 24.0
    hour_angle = hour * (2.0 * math.pi / 24.0)
    day_angle = day * (2.0 * math.pi / 7.0)
    return tf.stack(
        [tf.sin(hour_angle), tf.cos(hour_angle), tf.sin(day_angle), tf.cos(day_angle)], axis=1
    )


def clock_minutes(hhmm: tf.Tensor) -> tf.Tensor:
    """int64 minutes after midnight of a clock time written as HHMM (``1530`` -> 930).

    ``2400`` (some schedules' midnight) is minute 0; minutes of 60 or more carry into the hour.
    """
    value = tf.cast(tf.math.round(tf.cast(tf.reshape(hhmm, [-1]), tf.float64)), tf.int64)
    minutes = tf.math.floordiv(value, 100) * 60 + tf.math.floormod(value, 100)
    return tf.math.floormod(minutes, 24 * 60)


def clock_time(hhmm: tf.Tensor, output: str) -> tf.Tensor:
    """A clock time HHMM as its hour id (0..23), minute of day in [0, 1), or sin/cos [batch, 2]."""
    minutes = clock_minutes(hhmm)
    if output == "hour":
        return tf.math.floordiv(minutes, 60)
    fraction = tf.cast(minutes, tf.float32) / (24.0 * 60.0)
    if output == "minute_of_day":
        return fraction
    if output == "cyclical":
        angle = fraction * (2.0 * math.pi)
        return tf.stack([tf.sin(angle), tf.cos(angle)], axis=1)
    raise ValueError(f"unknown clock output {output!r}")
