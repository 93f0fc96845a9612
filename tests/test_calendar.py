"""Calendar and clock parts in a time zone (transforms/calendar.py) against Python's zoneinfo."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tensorflow as tf

from transforms import calendar

NEW_YORK = ZoneInfo("America/New_York")


def _instants() -> list[int]:
    """Every 37 minutes over 2013 (both DST changes), around 1970 and up to 2099."""
    start = int(dt.datetime(2013, 1, 1, tzinfo=dt.UTC).timestamp())
    every = list(range(start, start + 366 * 86400, 37 * 60))
    edges = [0, -86400 * 3 + 17, 86400 * 59 + 3600 * 5, 4_070_908_800 - 1]
    return every + edges


def _expected(seconds: int, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).astimezone(zone)


@pytest.mark.parametrize("zone_name", ["UTC", "America/New_York", "Australia/Lord_Howe"])
def test_local_calendar_parts_equal_zoneinfo(zone_name):
    zone = ZoneInfo(zone_name)
    instants = _instants()
    seconds = tf.constant(instants, tf.int64)
    local = [_expected(s, zone) for s in instants]
    want = {
        "hour": [t.hour for t in local],
        "day_of_week": [t.weekday() for t in local],
        "weekend": [int(t.weekday() >= 5) for t in local],
        "day_of_month": [t.day - 1 for t in local],
        "month": [t.month - 1 for t in local],
    }
    for part, expected in want.items():
        got = calendar.calendar_part(seconds, part, zone_name).numpy().tolist()
        assert got == expected, part


def test_new_york_evening_rush_stays_at_17_local_across_dst():
    winter = int(dt.datetime(2013, 1, 15, 17, tzinfo=NEW_YORK).timestamp())
    summer = int(dt.datetime(2013, 7, 15, 17, tzinfo=NEW_YORK).timestamp())
    hours = calendar.calendar_part(
        tf.constant([winter, summer], tf.int64), "hour", "America/New_York"
    )
    assert hours.numpy().tolist() == [17, 17]
    utc_hours = calendar.calendar_part(tf.constant([winter, summer], tf.int64), "hour")
    assert utc_hours.numpy().tolist() == [22, 21]


def test_offset_table_finds_each_transition_to_the_second():
    instants, offsets = calendar.offset_table("America/New_York")
    march = int(dt.datetime(2013, 3, 10, 7, tzinfo=dt.UTC).timestamp())  # 02:00 EST -> 03:00 EDT
    index = instants.index(march)
    assert (offsets[index - 1], offsets[index]) == (-5 * 3600, -4 * 3600)


def test_cyclical_time_in_a_zone_is_the_utc_encoding_of_local_wall_time():
    instants = _instants()
    got = calendar.cyclical_time(tf.constant(instants, tf.int64), "America/New_York").numpy()
    for row, seconds in zip(got[::97], instants[::97], strict=True):
        local = _expected(seconds, NEW_YORK)
        hour = local.hour + local.minute / 60 + local.second / 3600
        day = (local.weekday() + 1) % 7 + hour / 24  # Sunday = 0
        want = [
            math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
            math.sin(2 * math.pi * day / 7), math.cos(2 * math.pi * day / 7),
        ]  # fmt: skip
        np.testing.assert_allclose(row, want, atol=1e-5)


def test_clock_times_written_as_hhmm():
    hhmm = tf.constant([0, 5, 59, 100, 1530, 2359, 2400], tf.int64)
    minutes = calendar.clock_minutes(hhmm).numpy().tolist()
    assert minutes == [0, 5, 59, 60, 930, 1439, 0]  # 2400 is midnight
    assert calendar.clock_time(hhmm, "hour").numpy().tolist() == [0, 0, 0, 1, 15, 23, 0]
    fraction = calendar.clock_time(hhmm, "minute_of_day").numpy()
    np.testing.assert_allclose(fraction, np.array(minutes) / 1440, rtol=1e-6)
    cyclical = calendar.clock_time(tf.constant([600.0, 1800.0]), "cyclical").numpy()
    np.testing.assert_allclose(cyclical, [[1, 0], [-1, 0]], atol=1e-6)  # 06:00 and 18:00


def test_civil_dates_match_the_gregorian_calendar():
    days = [*range(-800, 60_000, 173), 11016, 11017, 47540]  # leap days included
    year, month, day = (v.numpy() for v in calendar.civil_date(tf.constant(days, tf.int64)))
    for d, y, m, dd in zip(days, year, month, day, strict=True):
        date = dt.date(1970, 1, 1) + dt.timedelta(days=d)
        assert (y, m, dd) == (date.year, date.month, date.day)
