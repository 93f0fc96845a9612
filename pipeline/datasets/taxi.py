"""Chicago taxi trips: predict whether a rider tips more than 20% of the fare.

The columns mirror the public BigQuery table ``bigquery-public-data.chicago_taxi_trips.taxi_trips``
as sampled in the TFX example data (18 columns; many values are missing).
"""

from pipeline.dataset import (
    Column,
    ColumnType,
    DatasetDefinition,
    Feature,
    ModelPart,
    ThresholdLabel,
    Transform,
)

INT = ColumnType.INT64
FLOAT = ColumnType.FLOAT64
STRING = ColumnType.STRING

COLUMNS = (
    Column("pickup_community_area", INT, "Community area (1-77) of the pickup"),
    Column("fare", FLOAT, "Fare in USD", nullable=False),
    Column("trip_start_month", INT, "Month (1-12) the trip started"),
    Column("trip_start_hour", INT, "Hour of day (0-23) the trip started"),
    Column("trip_start_day", INT, "Day of week (1=Sunday .. 7) the trip started"),
    Column("trip_start_timestamp", ColumnType.TIMESTAMP, "Trip start time", nullable=False),
    Column("pickup_latitude", FLOAT, "Latitude of the pickup area's centroid"),
    Column("pickup_longitude", FLOAT, "Longitude of the pickup area's centroid"),
    Column("dropoff_latitude", FLOAT, "Latitude of the dropoff area's centroid"),
    Column("dropoff_longitude", FLOAT, "Longitude of the dropoff area's centroid"),
    Column("trip_miles", FLOAT, "Distance of the trip in miles"),
    Column("pickup_census_tract", INT, "Census tract of the pickup"),
    Column("dropoff_census_tract", INT, "Census tract of the dropoff"),
    Column("payment_type", STRING, "Cash, Credit Card, ..."),
    Column("company", STRING, "Taxi company"),
    Column("trip_seconds", INT, "Duration of the trip in seconds"),
    Column("dropoff_community_area", INT, "Community area (1-77) of the dropoff"),
    Column("tips", FLOAT, "Tip in USD (label source; unknown at serving time)", nullable=False),
)


def _vocabulary(
    name: str, top_k: int, oov: int, default, part=ModelPart.BOTH, frequency_threshold=None
) -> Feature:
    params = {"top_k": top_k, "num_oov_buckets": oov}
    if frequency_threshold is not None:
        params["frequency_threshold"] = frequency_threshold
    return Feature(name, (name,), Transform.VOCABULARY, part, params, default=default)


def _census_tract(name: str) -> Feature:
    # ~800 tracts, new ones appear: hashed ids need no vocabulary pass and give unseen tracts an
    # id of their own (shared with a few others) instead of a handful of OOV buckets.
    return Feature(
        name, (name,), Transform.HASH, ModelPart.WIDE, {"hash_buckets": 2048}, default=-1
    )


def _geo_cell(name: str, prefix: str) -> Feature:
    # Community-area centroids on a 10 x 10 grid of training quantiles (+1 id for no location).
    return Feature(
        name,
        (f"{prefix}_latitude", f"{prefix}_longitude"),
        Transform.GEO_CELL,
        ModelPart.BOTH,
        {"lat_buckets": 10, "lon_buckets": 10},
    )


# Fares and distances have a long tail of meter errors (fares of $700, 0-mile trips): clip them to
# the 1st/99th training percentile; impute a missing distance with the training mean, a missing
# duration with the median (durations are skewed), a missing fare (serving only) with the mean.
# z-scores use the statistics of the present, unclipped values (one analysis pass).
_CLEAN = {"impute": "mean", "clip": (0.01, 0.99)}

FEATURES = (
    Feature("trip_miles", ("trip_miles",), Transform.ZSCORE, ModelPart.DEEP, _CLEAN, default=0.0),
    Feature("fare", ("fare",), Transform.LOG_ZSCORE, ModelPart.DEEP, _CLEAN, default=0.0),
    Feature(
        "trip_seconds",
        ("trip_seconds",),
        Transform.LOG_ZSCORE,
        ModelPart.DEEP,
        {"impute": "median", "clip": (0.01, 0.99)},
        default=0,
    ),
    _geo_cell("pickup_cell", "pickup"),
    _geo_cell("dropoff_cell", "dropoff"),
    Feature(
        "trip_start_hour",
        ("trip_start_hour",),
        Transform.IDENTITY,
        ModelPart.BOTH,
        {"num_buckets": 24},
        default=0,
    ),
    Feature(
        "trip_start_day",
        ("trip_start_day",),
        Transform.IDENTITY,
        ModelPart.BOTH,
        {"num_buckets": 8},
        default=0,
    ),
    Feature(
        "trip_start_month",
        ("trip_start_month",),
        Transform.IDENTITY,
        ModelPart.BOTH,
        {"num_buckets": 13},
        default=0,
    ),
    _vocabulary("payment_type", top_k=100, oov=2, default=""),
    # Fleets with fewer than 5 training trips share the OOV buckets with unseen ones.
    _vocabulary("company", top_k=1000, oov=10, default="", frequency_threshold=5),
    _vocabulary("pickup_community_area", top_k=100, oov=2, default=-1),
    _vocabulary("dropoff_community_area", top_k=100, oov=2, default=-1),
    _census_tract("pickup_census_tract"),
    _census_tract("dropoff_census_tract"),
    Feature(
        "trip_start_time",
        ("trip_start_timestamp",),
        Transform.CYCLICAL_TIME,
        ModelPart.DEEP,
        default=0,
    ),
    Feature(
        "hour_x_day",
        ("trip_start_hour", "trip_start_day"),
        Transform.CROSS,
        ModelPart.WIDE,
        {"hash_buckets": 256},
        default=0,
    ),
    # The three trip measures are strongly correlated: their top two principal components as one
    # dense input. PCA of the logs (unit-free, like a correlation PCA) needs no z-scores first,
    # which keeps the whole analysis to one pass over the data.
    Feature(
        "trip_pca",
        ("trip_miles", "fare", "trip_seconds"),
        Transform.PCA,
        ModelPart.DEEP,
        {"output_dim": 2, "log": True, "standardize": False},
        default=0,
    ),
    # Fare per distance matters for tipping: miles^2, miles*fare, fare^2 of the cleaned z-scores.
    Feature(
        "miles_fare_poly",
        ("trip_miles", "fare"),
        Transform.POLYNOMIAL,
        ModelPart.DEEP,
        {**_CLEAN, "degree": 2},
        default=0.0,
    ),
)

TAXI = DatasetDefinition(
    name="taxi",
    table="chicago_taxi_trips.taxi_trips",
    columns=COLUMNS,
    label=ThresholdLabel("big_tipper", numerator="tips", denominator="fare", threshold=0.2),
    features=FEATURES,
    label_only_columns=("tips",),
    timestamp_column="trip_start_timestamp",
)
