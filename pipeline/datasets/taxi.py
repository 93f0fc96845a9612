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


def _bucketized(name: str) -> Feature:
    return Feature(
        name, (name,), Transform.QUANTILE_BUCKET, ModelPart.BOTH, {"num_buckets": 10}, default=0.0
    )


def _vocabulary(name: str, top_k: int, oov: int, default, part=ModelPart.BOTH) -> Feature:
    return Feature(
        name,
        (name,),
        Transform.VOCABULARY,
        part,
        {"top_k": top_k, "num_oov_buckets": oov},
        default=default,
    )


FEATURES = (
    Feature("trip_miles", ("trip_miles",), Transform.ZSCORE, ModelPart.DEEP, default=0.0),
    Feature("fare", ("fare",), Transform.LOG_ZSCORE, ModelPart.DEEP, default=0.0),
    Feature("trip_seconds", ("trip_seconds",), Transform.LOG_ZSCORE, ModelPart.DEEP, default=0),
    _bucketized("pickup_latitude"),
    _bucketized("pickup_longitude"),
    _bucketized("dropoff_latitude"),
    _bucketized("dropoff_longitude"),
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
    _vocabulary("company", top_k=1000, oov=10, default=""),
    _vocabulary("pickup_community_area", top_k=100, oov=2, default=-1),
    _vocabulary("dropoff_community_area", top_k=100, oov=2, default=-1),
    _vocabulary("pickup_census_tract", top_k=1000, oov=5, default=-1, part=ModelPart.WIDE),
    _vocabulary("dropoff_census_tract", top_k=1000, oov=5, default=-1, part=ModelPart.WIDE),
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
