"""Synthetic taxi trips (pipeline/datasets/taxi/synthetic.py): determinism, shape, realistic
relations, loading through ``pipeline.data``."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pandas as pd
import pytest

from pipeline.data import build_synthetic_warehouse
from pipeline.data.load import read_sidecar
from pipeline.datasets import get_dataset, synthetic_generator

TAXI = get_dataset("taxi")
synthetic = synthetic_generator(TAXI)

START = date(2024, 1, 1)


@pytest.fixture(scope="module")
def trips() -> pd.DataFrame:
    return synthetic.generate_chunk(seed=3, chunk=0, rows=60_000, start=START, days=365)


def test_same_seed_same_rows_other_seed_other_rows():
    first = pd.concat(synthetic.generate(1_200, seed=5, start=START, days=30, chunk_rows=500))
    again = pd.concat(synthetic.generate(1_200, seed=5, start=START, days=30, chunk_rows=500))
    other = pd.concat(synthetic.generate(1_200, seed=6, start=START, days=30, chunk_rows=500))
    pd.testing.assert_frame_equal(first, again)
    assert not first["fare"].equals(other["fare"])


def test_chunks_cover_exactly_the_requested_rows():
    sizes = [len(c) for c in synthetic.generate(1_200, seed=1, start=START, days=5, chunk_rows=500)]
    assert sizes == [500, 500, 200]
    with pytest.raises(ValueError):
        next(synthetic.generate(10, seed=1, start=START, days=0))


def test_columns_follow_the_definition(trips):
    assert list(trips.columns) == list(TAXI.column_names)


def test_time_columns_agree_with_the_timestamp(trips):
    ts = pd.to_datetime(trips["trip_start_timestamp"], unit="s")
    assert (ts.dt.hour == trips["trip_start_hour"]).all()
    assert (ts.dt.month == trips["trip_start_month"]).all()
    assert ((ts.dt.dayofweek + 1) % 7 + 1 == trips["trip_start_day"]).all()  # 1 = Sunday
    assert ts.min() >= datetime(2024, 1, 1) and ts.max() < datetime(2025, 1, 1)
    evening, early_morning = ((trips["trip_start_hour"] == h).mean() for h in (19, 5))
    assert evening > 4 * early_morning


def test_tips_depend_on_payment_type_and_fare(trips):
    cash = trips[trips["payment_type"] == "Cash"]
    card = trips[trips["payment_type"] == "Credit Card"]
    assert (cash["tips"] > 0).mean() < 0.01
    assert (card["tips"] > 0).mean() > 0.9
    share = (card["tips"] / card["fare"])[card["tips"] > 0]
    assert 0.15 <= share.median() <= 0.25
    cheap, dear = card[card["fare"] < 8], card[card["fare"] > 30]
    assert (cheap["tips"] / cheap["fare"]).median() > (dear["tips"] / dear["fare"]).median()
    big_tipper = (trips["tips"] > 0.2 * trips["fare"]).mean()
    assert 0.15 < big_tipper < 0.3  # the sample: 0.22


def test_fare_follows_distance_and_duration(trips):
    moving = trips[(trips["trip_miles"] > 0) & (trips["trip_seconds"] > 0)]
    correlations = moving[["fare", "trip_miles", "trip_seconds"]].corr(method="spearman")
    assert correlations.loc["fare", "trip_miles"] > 0.7
    assert correlations.loc["fare", "trip_seconds"] > 0.8


def test_places_and_companies(trips):
    for column in ("pickup_community_area", "dropoff_community_area"):
        areas = trips[column].dropna()
        assert areas.between(1, 77).all() and areas.nunique() > 60
    for column, low, high in (("latitude", 41.6, 42.1), ("longitude", -87.95, -87.5)):
        values = trips[[f"pickup_{column}", f"dropoff_{column}"]].stack()
        assert values.between(low, high).all()
    assert trips["company"].nunique() == len(synthetic.COMPANIES) == 40


@pytest.mark.parametrize(
    ("column", "sample_rate"),
    [
        ("company", 0.3426),
        ("dropoff_census_tract", 0.2827),
        ("dropoff_community_area", 0.0338),
        ("dropoff_latitude", 0.0322),
        ("pickup_census_tract", 0.9999),
        ("fare", 0.0),
        ("tips", 0.0),
    ],
)
def test_missing_values_at_the_sample_rates(trips, column, sample_rate):
    assert trips[column].isna().mean() == pytest.approx(sample_rate, abs=0.01)


def test_build_synthetic_warehouse_loads_typed_rows_once(tmp_path):
    db_path = tmp_path / "synthetic.duckdb"
    assert (
        build_synthetic_warehouse(TAXI, db_path, rows=2_000, seed=9, start=START, days=10)
        == db_path
    )
    with duckdb.connect(str(db_path), read_only=True) as con:
        described = con.execute("DESCRIBE chicago_taxi_trips.taxi_trips").fetchall()
        rows, first, last, nulls = con.execute(
            "SELECT COUNT(*), MIN(trip_start_timestamp), MAX(trip_start_timestamp), "
            "COUNT(*) - COUNT(company) FROM chicago_taxi_trips.taxi_trips"
        ).fetchone()
    assert [name for name, *_ in described] == list(TAXI.column_names)
    assert dict((n, t) for n, t, *_ in described)["trip_start_timestamp"] == "TIMESTAMP"
    assert rows == 2_000 and 500 < nulls < 900
    assert first >= datetime(2024, 1, 1) and last < datetime(2024, 1, 11)
    assert read_sidecar(db_path)["seed"] == 9
    mtime = db_path.stat().st_mtime_ns
    build_synthetic_warehouse(TAXI, db_path, rows=2_000, seed=9, start=START, days=10)
    assert db_path.stat().st_mtime_ns == mtime  # same arguments: reused
