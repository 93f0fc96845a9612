"""Deterministic generator of taxi-like trips, for scale tests of the warehouse and later stages.

``python -m pipeline.data synthetic --dataset taxi --rows N --seed S --db FILE`` loads them into a
warehouse file (the loader calls :func:`generate`, the one entry point of this module).

The 15k-row sample is too small to time anything; this produces any number of rows shaped like
it: the sample's hour and weekday profile, community areas 1..77 with the sample's hot spots,
pickup/dropoff coordinates at area (or census tract) centroids around Chicago, trip length from
the distance between them, duration from length and hour-dependent speed, fares from the city's
meter rates, tips that depend on the payment type (card riders mostly tip 15-25%, cash tips are
almost never recorded) and on the fare, and missing values at the sample's rates.

Rows come in chunks of ``CHUNK_ROWS`` generated with vectorized numpy, each from its own
``SeedSequence([seed, chunk])``, so memory stays flat whatever the row count and the same seed
always gives the same rows. Chunks are pandas frames over numpy arrays rather than Arrow
batches: DuckDB 1.5 scans pyarrow objects only through the Arrow PyCapsule interface, which
pyarrow 10 (pinned by the TFX stack) lacks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date

import numpy as np
import pandas as pd

CHUNK_ROWS = 500_000

# Share of trips per hour of day (0..23) and per weekday (1=Sunday..7), as in the sample.
HOUR_WEIGHTS = np.array(
    [
        40,
        36,
        28,
        19,
        13,
        10,
        13,
        20,
        35,
        44,
        46,
        41,
        50,
        47,
        49,
        48,
        51,
        55,
        63,
        67,
        64,
        56,
        56,
        48,
    ],
    dtype=float,
)
WEEKDAY_WEIGHTS = np.array([130, 130, 130, 134, 147, 167, 162], dtype=float)

# Payment types and their shares in the sample.
PAYMENT_TYPES = ("Cash", "Credit Card", "No Charge", "Unknown", "Dispute", "Pcard", "Prcard")
PAYMENT_WEIGHTS = np.array([9909, 4975, 81, 29, 4, 3, 1], dtype=float)
# Probability that a recorded tip is positive, per payment type (same order).
TIP_PROBABILITY = np.array([0.0005, 0.95, 0.0, 0.28, 0.0, 0.0, 0.0])

COMPANIES = (
    "Taxi Affiliation Services",
    "Dispatch Taxi Affiliation",
    "Blue Ribbon Taxi Association Inc.",
    "Choice Taxi Association",
    "Northwest Management LLC",
    "KOAM Taxi Association",
    "Top Cab Affiliation",
    "Chicago Elite Cab Corp. (Chicago Carriag",
    "Chicago Medallion Leasing INC",
    "Chicago Medallion Management",
    "Chicago Elite Cab Corp.",
    "Flash Cab",
    "Yellow Cab",
    "Sun Taxi",
    "City Service",
    "Medallion Leasin",
    "Globe Taxi",
    "Star North Management LLC",
    "Checker Taxi",
    "American United",
    "Chicago Carriage Cab Corp",
    "Patriot Taxi Dba Peace Taxi Associat",
    "5 Star Taxi",
    "Setare Inc",
    "Metro Jet Taxi A",
    "Leonard Cab Co",
    "Blue Diamond",
    "Chicago Independents",
    "Gold Coast Taxi",
    "Suburban Dispatch LLC",
    "Checker Taxi Affiliation",
    "Royal Star",
    "Ahzmi Inc",
    "Godfrey S.Awir",
    "Benny Jona",
    "Crystal Abernathy",
    "Gaither Cab Co.",
    "JBL Cab Inc.",
    "N and W Cab Co",
    "C & D Cab Co Inc",
)

# Known centroids of the busiest community areas; the others are placed deterministically.
KNOWN_CENTROIDS = {
    8: (41.8996, -87.6339),  # Near North Side
    32: (41.8786, -87.6251),  # Loop
    28: (41.8741, -87.6640),  # Near West Side
    6: (41.9434, -87.6545),  # Lake View
    76: (41.9802, -87.9090),  # O'Hare
    7: (41.9214, -87.6513),  # Lincoln Park
    24: (41.9010, -87.6768),  # West Town
    33: (41.8574, -87.6201),  # Near South Side
    3: (41.9659, -87.6553),  # Uptown
    56: (41.7856, -87.7509),  # Garfield Ridge (Midway)
}
# Share of pickups/dropoffs in those areas (the rest spread evenly over the other areas).
HOT_AREA_SHARES = {8: 0.327, 32: 0.22, 28: 0.086, 6: 0.079, 76: 0.06, 7: 0.06, 24: 0.04, 33: 0.021}
AREAS = 77
TRACTS_PER_AREA = 6

# Missing-value rates of the sample.
MISSING = {
    "pickup_area": 0.0001,
    "pickup_census_tract": 0.9999,
    "dropoff_area": 0.0338,
    "dropoff_census_tract": 0.25,  # on top of a missing dropoff area
    "company": 0.3426,
    "trip_seconds": 0.0004,
}


def _geography() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area centroids (77 x 2), tract centroids (77 x 6 x 2) and area weights, seed-independent."""
    rng = np.random.default_rng(20_130_101)
    centroids = np.column_stack(
        [rng.uniform(41.66, 42.01, AREAS), rng.uniform(-87.84, -87.56, AREAS)]
    )
    for area, point in KNOWN_CENTROIDS.items():
        centroids[area - 1] = point
    tracts = centroids[:, None, :] + rng.normal(0, 0.006, (AREAS, TRACTS_PER_AREA, 2))
    weights = np.full(AREAS, (1 - sum(HOT_AREA_SHARES.values())) / (AREAS - len(HOT_AREA_SHARES)))
    for area, share in HOT_AREA_SHARES.items():
        weights[area - 1] = share
    return centroids, tracts, weights / weights.sum()


CENTROIDS, TRACT_CENTROIDS, AREA_WEIGHTS = _geography()
COMPANY_WEIGHTS = 1.0 / np.arange(1, len(COMPANIES) + 1) ** 1.3


def _miles_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance in miles between (lat, lon) rows of ``a`` and ``b``."""
    lat1, lon1, lat2, lon2 = (np.radians(v) for v in (a[:, 0], a[:, 1], b[:, 0], b[:, 1]))
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 3958.8 * np.arcsin(np.sqrt(h))


def _masked_int(values: np.ndarray, missing: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype(np.int64), missing)


def _with_nan(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    return np.where(missing, np.nan, values)


def _categorical(codes: np.ndarray, categories: tuple[str, ...]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=list(categories))


def _times(rng: np.random.Generator, n: int, start: date, days: int) -> dict[str, np.ndarray]:
    """Start times on 15-minute marks with the sample's weekday and hour profile."""
    day_numbers = np.arange(days) + (start - date(1970, 1, 1)).days
    weekday = (day_numbers + 4) % 7  # 1970-01-01 was a Thursday; 0 = Sunday
    day_weights = WEEKDAY_WEIGHTS[weekday]
    day = rng.choice(day_numbers, size=n, p=day_weights / day_weights.sum())
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    quarter = rng.integers(0, 4, size=n)
    timestamp = day * 86_400 + hour * 3_600 + quarter * 900
    month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    return {
        "trip_start_timestamp": timestamp,
        "trip_start_hour": hour,
        "trip_start_day": (day + 4) % 7 + 1,
        "trip_start_month": month,
    }


def _places(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Pickup and dropoff areas, tracts and coordinates (tract centroid when the tract is known)."""
    pickup_area = rng.choice(AREAS, size=n, p=AREA_WEIGHTS)
    local = rng.random(n) < 0.3  # short trips inside the pickup area
    dropoff_area = np.where(local, pickup_area, rng.choice(AREAS, size=n, p=AREA_WEIGHTS))
    pickup_tract = rng.integers(0, TRACTS_PER_AREA, size=n)
    dropoff_tract = rng.integers(0, TRACTS_PER_AREA, size=n)
    pickup_point = CENTROIDS[pickup_area]
    dropoff_point = TRACT_CENTROIDS[dropoff_area, dropoff_tract]
    dropoff_area_missing = rng.random(n) < MISSING["dropoff_area"]
    dropoff_tract_missing = dropoff_area_missing | (rng.random(n) < MISSING["dropoff_census_tract"])
    dropoff_point = np.where(dropoff_tract_missing[:, None], CENTROIDS[dropoff_area], dropoff_point)
    pickup_missing = rng.random(n) < MISSING["pickup_area"]
    return {
        "pickup_area": pickup_area + 1,
        "dropoff_area": dropoff_area + 1,
        "pickup_tract": _tract_id(pickup_area, pickup_tract),
        "dropoff_tract": _tract_id(dropoff_area, dropoff_tract),
        "pickup_point": pickup_point,
        "dropoff_point": dropoff_point,
        "pickup_missing": pickup_missing,
        "pickup_tract_missing": pickup_missing | (rng.random(n) < MISSING["pickup_census_tract"]),
        "dropoff_area_missing": dropoff_area_missing,
        "dropoff_tract_missing": dropoff_tract_missing,
    }


def _tract_id(area: np.ndarray, tract: np.ndarray) -> np.ndarray:
    """Cook County census tract ids (17031 + 6 digits) unique per area and tract."""
    return 17_031_000_000 + (area + 1) * 10_000 + (tract + 1) * 100


def _trip(rng: np.random.Generator, places: dict, hour: np.ndarray) -> dict[str, np.ndarray]:
    """Distance, duration and fare: miles follow the distance between the two points."""
    n = hour.shape[0]
    straight = _miles_between(places["pickup_point"], places["dropoff_point"])
    miles = straight * 1.3 + rng.lognormal(-0.4, 0.7, n)
    rush = np.isin(hour, (7, 8, 9, 16, 17, 18))
    night = (hour < 6) | (hour >= 22)
    speed = np.where(rush, 11.0, np.where(night, 20.0, 15.0)) * rng.lognormal(0, 0.25, n)
    seconds = np.round((miles / speed * 3600 + 90) / 60) * 60
    fare = 3.25 + 2.25 * miles + 0.20 * np.maximum(seconds - miles / 15 * 3600, 0) / 36
    extras = np.where(rng.random(n) < 0.08, rng.choice([1.0, 2.0, 4.0], size=n), 0.0)
    fare = np.round((fare + extras) * 4) / 4
    fare = np.where(rng.random(n) < 0.002, 0.0, fare)
    # Recording quirks of the sample: many trips report 0 miles, a few 0 seconds.
    reported_miles = np.where(rng.random(n) < 0.27, 0.0, np.round(miles, 1))
    reported_seconds = np.where(rng.random(n) < 0.03, 0.0, seconds)
    return {"miles": reported_miles, "seconds": reported_seconds, "fare": fare}


def _tips(rng: np.random.Generator, payment: np.ndarray, fare: np.ndarray) -> np.ndarray:
    """Tips: positive with a per-payment-type probability, 15-25% of the fare for most card
    riders, a lower share on expensive trips."""
    n = payment.shape[0]
    tipped = rng.random(n) < TIP_PROBABILITY[payment]
    share = 0.24 - 0.03 * np.log(np.maximum(fare, 3.25) / 10) + rng.normal(0, 0.06, n)
    share = np.clip(share, 0.05, 0.6)
    return np.where(tipped, np.round(fare * share, 2), 0.0)


def generate_chunk(seed: int, chunk: int, rows: int, start: date, days: int) -> pd.DataFrame:
    """One chunk of trips as a DataFrame with the definition's columns (timestamps in seconds)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk]))
    times = _times(rng, rows, start, days)
    places = _places(rng, rows)
    trip = _trip(rng, places, times["trip_start_hour"])
    payment = rng.choice(len(PAYMENT_TYPES), size=rows, p=PAYMENT_WEIGHTS / PAYMENT_WEIGHTS.sum())
    company = rng.choice(len(COMPANIES), size=rows, p=COMPANY_WEIGHTS / COMPANY_WEIGHTS.sum())
    company = np.where(rng.random(rows) < MISSING["company"], -1, company)
    pickup_missing = places["pickup_missing"]
    dropoff_missing = places["dropoff_area_missing"]
    frame = pd.DataFrame(
        {
            "pickup_community_area": _masked_int(places["pickup_area"], pickup_missing),
            "fare": trip["fare"],
            "trip_start_month": times["trip_start_month"],
            "trip_start_hour": times["trip_start_hour"],
            "trip_start_day": times["trip_start_day"],
            "trip_start_timestamp": times["trip_start_timestamp"],
            "pickup_latitude": _with_nan(places["pickup_point"][:, 0], pickup_missing),
            "pickup_longitude": _with_nan(places["pickup_point"][:, 1], pickup_missing),
            "dropoff_latitude": _with_nan(places["dropoff_point"][:, 0], dropoff_missing),
            "dropoff_longitude": _with_nan(places["dropoff_point"][:, 1], dropoff_missing),
            "trip_miles": trip["miles"],
            "pickup_census_tract": _masked_int(
                places["pickup_tract"], places["pickup_tract_missing"]
            ),
            "dropoff_census_tract": _masked_int(
                places["dropoff_tract"], places["dropoff_tract_missing"]
            ),
            "payment_type": _categorical(payment, PAYMENT_TYPES),
            "company": _categorical(company, COMPANIES),
            "trip_seconds": _masked_int(
                trip["seconds"], rng.random(rows) < MISSING["trip_seconds"]
            ),
            "dropoff_community_area": _masked_int(places["dropoff_area"], dropoff_missing),
            "tips": _tips(rng, payment, trip["fare"]),
        }
    )
    return frame


def generate(
    rows: int, seed: int, start: date, days: int, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """``rows`` trips in chunks of at most ``chunk_rows``; identical for identical arguments."""
    if rows < 0 or days < 1 or chunk_rows < 1:
        raise ValueError(f"invalid synthetic size: rows={rows}, days={days}, chunk={chunk_rows}")
    for chunk in range(math.ceil(rows / chunk_rows)):
        yield generate_chunk(seed, chunk, min(chunk_rows, rows - chunk * chunk_rows), start, days)
