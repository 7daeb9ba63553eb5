"""The job's transformations: pure functions of DataFrames, the same for a stream and for a batch.

parse_calls -> dedupe_calls (stream only) -> with_descriptions -> valid_calls -> count_*, and
malformed_records for the dead letters. The query wiring (source, sink, listener) lives in job.py.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

CALL_FIELDS = ("crime_id", "original_crime_type_name", "report_date", "call_date", "offense_date", "call_time",
               "call_date_time", "disposition", "address", "city", "state", "agency_id", "address_type",
               "common_location")
CALL_SCHEMA = StructType([StructField(name, StringType()) for name in CALL_FIELDS])
CORRUPT = "_corrupt_record"
_PARSE_SCHEMA = StructType(CALL_SCHEMA.fields + [StructField(CORRUPT, StringType())])
RADIO_CODE_SCHEMA = "disposition_code string, description string"

NOT_AN_OBJECT = "not a JSON object"
NOT_JSON = "not valid JSON"
NO_CRIME_ID = "missing crime_id"
BAD_EVENT_TIME = "missing or unparseable call_date_time"


def parse_calls(raw: DataFrame) -> DataFrame:
    """Kafka rows -> one row per message with the call's fields, its event time and, if malformed, why.

    The value is parsed against an explicit schema; `call_date_time` is read in the session time zone
    (set to San Francisco's by the job). A message that is not a JSON object, lacks a crime_id or has
    no parseable call_date_time gets a `malformed` reason and keeps its raw value, partition and offset.
    """
    text = F.col("value").cast("string")
    # A JSON object starts with "{": from_json would otherwise read a one-object array as that object.
    is_object = F.ltrim(text).startswith("{")
    parsed = F.when(is_object, F.from_json(text, _PARSE_SCHEMA, {"mode": "PERMISSIVE",
                                                                 "columnNameOfCorruptRecord": CORRUPT}))
    return validate_calls(raw.select("value", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"),
                                     parsed.alias("call")))


def calls_from_file(spark, path: str) -> DataFrame:
    """The calls file read as a batch, in parse_calls' shape (no Kafka coordinates): for the batch job."""
    records = spark.read.schema(_PARSE_SCHEMA).option("multiLine", True).option(
        "columnNameOfCorruptRecord", CORRUPT).json(path)
    return validate_calls(records.select(
        F.lit(None).cast("binary").alias("value"), F.lit(None).cast("int").alias("partition"),
        F.lit(None).cast("long").alias("offset"), F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.struct(*[F.col(f.name) for f in _PARSE_SCHEMA.fields]).alias("call")))


def validate_calls(rows: DataFrame) -> DataFrame:
    """Rows with a `call` struct -> the call's columns, event time, and a `malformed` reason or null."""
    call = F.col("call")
    event_time = F.try_to_timestamp(call["call_date_time"])
    crime_id = F.trim(call["crime_id"])
    malformed = (
        F.when(call.isNull(), F.lit(NOT_AN_OBJECT))
        .when(call[CORRUPT].isNotNull(), F.lit(NOT_JSON))
        .when(crime_id.isNull() | (crime_id == ""), F.lit(NO_CRIME_ID))
        .when(event_time.isNull(), F.lit(BAD_EVENT_TIME))
    )
    return rows.select(
        "value", "partition", "offset", "kafka_timestamp",
        crime_id.alias("crime_id"),
        F.coalesce(call["original_crime_type_name"], F.lit("(none)")).alias("crime_type"),
        F.when(malformed.isNull(), event_time).alias("event_time"),  # a malformed row never moves the watermark
        F.coalesce(call["disposition"], F.lit("(none)")).alias("disposition"),
        F.coalesce(call["address"], F.lit("(none)")).alias("address"),
        malformed.alias("malformed"),
    )


def dedupe_calls(parsed: DataFrame, watermark: str) -> DataFrame:
    """Kafka delivery is at-least-once; count each call once: drop a crime_id seen within the watermark.

    Calls older than the watermark are dropped too, and Spark's state operator counts them
    (numRowsDroppedByWatermark). Malformed records pass through in the same plan, so the source is read
    once: each is keyed by its own partition and offset and has no event time, so it is never a duplicate,
    never late, and its state is evicted at the next batch.
    """
    key = F.when(F.col("malformed").isNull(), F.col("crime_id")).otherwise(
        F.concat(F.lit("!"), F.col("partition").cast("string"), F.lit(":"), F.col("offset").cast("string")))
    return (parsed.withColumn("dedupe_key", key)
            .withWatermark("event_time", watermark)
            .dropDuplicatesWithinWatermark(["dedupe_key"])
            .drop("dedupe_key"))


def valid_calls(calls: DataFrame) -> DataFrame:
    return calls.where(F.col("malformed").isNull()).drop("malformed", "value")


def malformed_records(calls: DataFrame) -> DataFrame:
    return calls.where(F.col("malformed").isNotNull()).select(
        "partition", "offset", "kafka_timestamp", F.col("malformed").alias("reason"), "value")


def read_radio_codes(spark, path: str) -> DataFrame:
    """radio_code.json is a pretty-printed array: it needs multiLine, or every row is corrupt."""
    return spark.read.schema(RADIO_CODE_SCHEMA).option("multiLine", True).json(path)


def with_descriptions(calls: DataFrame, radio_codes: DataFrame) -> DataFrame:
    """A left join, broadcast: a call whose disposition has no radio code keeps a null description."""
    codes = radio_codes.select(F.col("disposition_code").alias("disposition"), "description").dropDuplicates(["disposition"])
    return calls.join(F.broadcast(codes), on="disposition", how="left")


# One aggregation answers every question for a batch of calls: each count is a grouping set, so Spark
# reads the batch once and shuffles once. Malformed records come out as the dead-letter set: their
# partition/offset/value columns are null for valid calls, which all fold into one group there.
COUNT_SETS = {
    "crime_type_windows": ("window_start", "crime_type"),
    "locations": ("address",),
    "dispositions": ("disposition", "description"),
    "hourly": ("hour", "crime_type"),
    "daily": ("day", "crime_type"),
    "dead_letters": ("dl_partition", "dl_offset", "dl_timestamp", "reason", "value"),
    "total": (),
}
COUNT_COLUMNS = ("window_start", "crime_type", "address", "disposition", "description", "hour", "day",
                 "dl_partition", "dl_offset", "dl_timestamp", "reason", "value")


def count_calls(calls: DataFrame, pane_seconds: int) -> DataFrame:
    """Every count of a batch in one DataFrame, tagged by grouping_id (see split_counts).

    Windows are counted as tumbling panes of `pane_seconds` (the window slide), aligned to the epoch as
    Spark's window() aligns them; a sliding window is the sum of its panes (results.window_counts), so
    one pass serves tumbling and sliding windows alike. Not window() itself: in a projection it adds a
    filter on a non-null event time, which would drop the malformed records on their way to the dead letters.
    `calls` is parse_calls' output, joined with the radio codes.
    """
    ok = F.col("malformed").isNull()
    bad = ~ok
    pane_start = F.floor(F.unix_seconds("event_time") / F.lit(pane_seconds)) * F.lit(pane_seconds)
    dims = calls.select(
        F.when(ok, pane_start).alias("window_start"),
        F.when(ok, F.col("crime_type")).alias("crime_type"),
        F.when(ok, F.col("address")).alias("address"),
        F.when(ok, F.col("disposition")).alias("disposition"),
        F.when(ok, F.col("description")).alias("description"),
        F.when(ok, F.hour("event_time")).alias("hour"),
        F.when(ok, F.date_format("event_time", "yyyy-MM-dd")).alias("day"),
        F.when(bad, F.col("partition")).alias("dl_partition"),
        F.when(bad, F.col("offset")).alias("dl_offset"),
        F.when(bad, F.unix_micros("kafka_timestamp")).alias("dl_timestamp"),
        F.col("malformed").alias("reason"),
        F.when(bad, F.col("value")).alias("value"),
        F.unix_micros("kafka_timestamp").alias("kafka_us"),
    )
    return dims.groupingSets([list(cols) for cols in COUNT_SETS.values()], *COUNT_COLUMNS).agg(
        F.grouping_id().alias("gid"), F.count("*").alias("count"),
        F.min("kafka_us").alias("kafka_us_min"), F.max("kafka_us").alias("kafka_us_max"),
        F.avg("kafka_us").alias("kafka_us_avg"))


def _grouping_id(columns: tuple[str, ...]) -> int:
    n = len(COUNT_COLUMNS)
    return sum(1 << (n - 1 - i) for i, name in enumerate(COUNT_COLUMNS) if name not in columns)


GROUPING_IDS = {_grouping_id(cols): name for name, cols in COUNT_SETS.items()}


def split_counts(rows: list[dict]) -> dict[str, list[dict]]:
    """count_calls' rows (as dicts) by count set. In a set of calls a null key is a malformed record's
    (valid calls have no null keys: parse_calls fills them), so those rows are left out."""
    result: dict[str, list[dict]] = {name: [] for name in COUNT_SETS}
    for row in rows:
        name = GROUPING_IDS[row["gid"]]
        keys = COUNT_SETS[name]
        if name == "dead_letters":
            if row["reason"] is None:
                continue  # the valid calls, folded into one group
        elif name != "total" and any(row[k] is None for k in keys if k != "description"):
            continue
        result[name].append(row)
    return result
