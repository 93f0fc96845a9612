"""Chicago taxi trips: predict whether a rider tips more than 20% of the fare.

The columns mirror the public BigQuery table ``bigquery-public-data.chicago_taxi_trips.taxi_trips``
as sampled in the TFX example data (15,002 rows, 18 columns; many values are missing). The
sample ships inside the ``tfx`` wheel on PyPI; its SHA-256 is checked before it is loaded.
"""

from pipeline.definition import (
    AtLeast,
    BinaryLabel,
    Column,
    ColumnType,
    CsvFormat,
    DatasetDefinition,
    Feature,
    ModelPart,
    PypiArchive,
    Slice,
    Source,
    SourceFile,
    SplitSettings,
    WindowFeature,
)
from transforms import kinds

INT = ColumnType.INT64
FLOAT = ColumnType.FLOAT64
STRING = ColumnType.STRING
WIDE, DEEP, BOTH = ModelPart.WIDE, ModelPart.DEEP, ModelPart.BOTH
TABLE = "chicago_taxi_trips.taxi_trips"

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

SOURCE = Source(
    origin=PypiArchive(
        requirement="tfx==1.21.0",
        filename="tfx-1.21.0-py3-none-any.whl",
        sha256="51032ac740ac6d28185c2814ada5a7e917f3016bcd2043f03ba98e7e674e4165",
    ),
    files=(
        SourceFile(
            table=TABLE,
            path="tfx/examples/chicago_taxi_pipeline/data/simple/data.csv",
            sha256="cdaf0b5931442ef47693f408f25a37af710aca23fccb90a78f00930e89548805",
            format=CsvFormat(null_tokens=("",)),  # timestamps as Unix seconds
            rows=15_002,
        ),
    ),
)


def _vocabulary(name: str, top_k: int, oov: int, frequency_threshold=None) -> Feature:
    kind = kinds.Vocabulary(
        top_k=top_k, num_oov_buckets=oov, frequency_threshold=frequency_threshold
    )
    return Feature(name, (name,), kind, BOTH)


def _census_tract(name: str) -> Feature:
    # ~800 tracts, new ones appear: hashed ids need no vocabulary pass and give unseen tracts an
    # id of their own (shared with a few others) instead of a handful of OOV buckets.
    return Feature(name, (name,), kinds.Hash(hash_buckets=2048), WIDE, default=-1)


def _geo_cell(name: str, prefix: str) -> Feature:
    # Community-area centroids on a 10 x 10 grid of training quantiles (+1 id for no location).
    inputs = (f"{prefix}_latitude", f"{prefix}_longitude")
    return Feature(name, inputs, kinds.GeoCell(lat_buckets=10, lon_buckets=10), BOTH)


def _identity(name: str, buckets: int) -> Feature:
    return Feature(name, (name,), kinds.Identity(num_buckets=buckets), BOTH)


# Fares and distances have a long tail of meter errors (fares of $700, 0-mile trips): clip them to
# the 1st/99th training percentile; impute a missing distance with the training mean, a missing
# duration with the median (durations are skewed), a missing fare (serving only) with the mean.
# z-scores use the statistics of the present, unclipped values (one analysis pass).
_CLIP = (0.01, 0.99)

# How busy the pickup area was: trips that started there in the hour (and the day) before this
# one (pipeline.definition.windows; the warehouse SQL computes it for training, the server from
# the online store). A start is known when it happens, so no lag. The 15k-row sample spreads
# over four years (about 10 trips a day): there the count is almost always 0; synthetic data
# (python -m pipeline.data synthetic) is dense enough for it to vary.
WINDOWS = (
    WindowFeature(
        "pickup_area_trips",
        keys="pickup_community_area",
        value=None,
        aggregations=("count",),
        windows=("1h", "1d"),
        description="Trips that started from the pickup community area in the hour / day before",
    ),
)

FEATURES = (
    Feature("trip_miles", "trip_miles", kinds.ZScore(impute="mean", clip=_CLIP), DEEP),
    Feature("fare", "fare", kinds.LogZScore(impute="mean", clip=_CLIP), DEEP),
    Feature("trip_seconds", "trip_seconds", kinds.LogZScore(impute="median", clip=_CLIP), DEEP),
    _geo_cell("pickup_cell", "pickup"),
    _geo_cell("dropoff_cell", "dropoff"),
    _identity("trip_start_hour", 24),
    _identity("trip_start_day", 8),
    _identity("trip_start_month", 13),
    _vocabulary("payment_type", top_k=100, oov=2),
    # Fleets with fewer than 5 training trips share the OOV buckets with unseen ones.
    _vocabulary("company", top_k=1000, oov=10, frequency_threshold=5),
    Feature(
        "pickup_community_area",
        "pickup_community_area",
        kinds.Vocabulary(top_k=100, num_oov_buckets=2),
        default=-1,
    ),
    Feature(
        "dropoff_community_area",
        "dropoff_community_area",
        kinds.Vocabulary(top_k=100, num_oov_buckets=2),
        default=-1,
    ),
    _census_tract("pickup_census_tract"),
    _census_tract("dropoff_census_tract"),
    Feature("trip_start_time", "trip_start_timestamp", kinds.CyclicalTime(), DEEP),
    Feature(
        "hour_x_day", ("trip_start_hour", "trip_start_day"), kinds.Cross(hash_buckets=256), WIDE
    ),
    # The three trip measures are strongly correlated: their top two principal components as one
    # dense input. PCA of the logs (unit-free, like a correlation PCA) needs no z-scores first,
    # which keeps the whole analysis to one pass over the data.
    Feature(
        "trip_pca",
        ("trip_miles", "fare", "trip_seconds"),
        kinds.PCA(output_dim=2, log=True, standardize=False),
        DEEP,
    ),
    # Fare per distance matters for tipping: miles^2, miles*fare, fare^2 of the cleaned z-scores.
    Feature(
        "pickup_area_trips_1h",
        "pickup_area_trips_count_1h",
        kinds.LogZScore(impute="mean"),
        DEEP,
    ),
    Feature(
        "pickup_area_trips_1d",
        "pickup_area_trips_count_1d",
        kinds.LogZScore(impute="mean"),
        DEEP,
    ),
    Feature(
        "miles_fare_poly",
        ("trip_miles", "fare"),
        kinds.Polynomial(impute="mean", clip=_CLIP, degree=2),
        DEEP,
    ),
)

# Groups of trips the model must not get worse for: how the rider paid (cash tips are rarely
# recorded), the fleet, and the hour the trip started (the table's own local hour).
SLICES = (
    Slice("payment_type", "payment_type", min_examples=100),
    Slice("company", "company", min_examples=100),
    Slice("trip_start_hour", "trip_start_hour", min_examples=100),
)

DATASET = DatasetDefinition(
    name="taxi",
    description="Chicago taxi trips (TFX sample): does the rider tip more than 20% of the fare?",
    table=TABLE,
    columns=COLUMNS,
    label=BinaryLabel("big_tipper", "tips", ">", 0.2, scale_column="fare"),
    features=FEATURES,
    source=SOURCE,
    # Every column in table order: the split the sample has always had. A new column added to
    # the table later must not join the key, or every row would move.
    split=SplitSettings(key_columns=tuple(c.name for c in COLUMNS)),
    filters=(
        AtLeast("fare_non_negative", "fare", 0),
        AtLeast("trip_seconds_non_negative", "trip_seconds", 0),
    ),
    unknown_at_serving=("tips",),
    timestamp_column="trip_start_timestamp",
    display_columns=("payment_type", "fare", "trip_miles"),
    windows=WINDOWS,
    slices=SLICES,
)
