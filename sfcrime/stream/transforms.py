"""The job's transformations: pure functions of DataFrames, the same for a stream and for a batch.

parse_calls (validate_calls) -> dedupe_calls (the stream's) -> with_descriptions -> count_calls
-> split_counts: malformed records ride along and come out of count_calls as the dead letters. Reading files
is files.py's; the query wiring (source, sink, listener) lives in job.py.
"""

from __future__ import annotations

import json

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

CALL_FIELDS = ("crime_id", "original_crime_type_name", "report_date", "call_date", "offense_date", "call_time",
               "call_date_time", "disposition", "address", "city", "state", "agency_id", "address_type",
               "common_location")
CALL_SCHEMA = StructType([StructField(name, StringType()) for name in CALL_FIELDS])
CORRUPT = "_corrupt_record"
PARSE_SCHEMA = StructType(CALL_SCHEMA.fields + [StructField(CORRUPT, StringType())])

NOT_AN_OBJECT = "not a JSON object"
NOT_JSON = "not valid JSON"
NOT_UTF8 = "not valid UTF-8"
TOO_FAR_AHEAD = "event time implausibly far ahead"
NO_CRIME_ID = "missing crime_id"
BAD_EVENT_TIME = "missing or unparseable call_date_time"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity; RFC 8259 does not


def json_object_reason(value: bytes | None) -> str | None:
    """Why a message is not exactly an RFC 8259 JSON object (leading/trailing JSON whitespace allowed), or None.

    Python's json is the judge: strict UTF-8, no trailing content, no single quotes, no NaN, control
    characters only escaped. Spark's JSON reader is lenient in each of those (README, "Malformed records").
    """
    if value is None:
        return NOT_AN_OBJECT
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8
    if not text.lstrip(" \t\r\n").startswith("{"):
        return NOT_AN_OBJECT
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        return NOT_JSON
    return None if isinstance(parsed, dict) else NOT_AN_OBJECT


def json_object_reasons(values) -> list[str | None]:
    """json_object_reason of each value, four times as fast for the usual valid call.

    orjson is a strict RFC 8259 parser too: what it reads as an object, Python's json reads as one
    (test_properties holds the two to the same answers). Whatever it refuses or reads otherwise goes to
    json_object_reason, which decides: orjson refuses some valid JSON, e.g. a lone `\ud800` escape or 1e400.
    """
    from orjson import JSONDecodeError, loads

    reasons: list[str | None] = []
    append = reasons.append
    for value in values:
        if value is not None and value.startswith(b"{"):  # no leading whitespace or byte-order mark to judge
            try:
                if type(loads(value)) is dict:
                    append(None)
                    continue
            except JSONDecodeError:
                pass
        append(json_object_reason(value))
    return reasons


def strict_json_reason(column):
    """json_object_reasons as a column: a pandas UDF, so values reach Python in Arrow batches."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def reasons(values):  # a vectorised UDF: Arrow batches of values, one Python call each
        import pandas as pd

        return pd.Series(json_object_reasons(values), dtype=object)

    return reasons(column)


# Spark's from_json, made as strict as its options allow; json_object_reason has already said the value is
# exactly an object, so these only make sure Spark reads it the same way.
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, "allowSingleQuotes": "false",
                 "allowNonNumericNumbers": "false", "allowNumericLeadingZeros": "false",
                 "allowUnquotedControlChars": "false", "allowBackslashEscapingAnyCharacter": "false",
                 "allowComments": "false", "allowUnquotedFieldNames": "false"}


def parse_calls(raw: DataFrame) -> DataFrame:
    """Kafka rows -> one row per message with the call's fields, its event time and, if malformed, why.

    A value must be exactly a JSON object (RFC 8259, UTF-8): anything else is malformed with its reason.
    It is then read against an explicit schema; `call_date_time` is read in the session time zone
    (set to San Francisco's by the job). A message that lacks a crime_id or has no parseable
    call_date_time is malformed too. Malformed messages keep their raw value, partition and offset.
    """
    rows = raw.select("value", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"),
                      strict_json_reason(F.col("value")).alias("json_reason"))
    parsed = F.when(F.col("json_reason").isNull(),
                    F.from_json(F.col("value").cast("string"), PARSE_SCHEMA, _JSON_OPTIONS))
    return validate_calls(rows.select("value", "partition", "offset", "kafka_timestamp", "json_reason",
                                      parsed.alias("call")))


def validate_calls(rows: DataFrame) -> DataFrame:
    """Rows with a `call` struct (and `json_reason`, why the value is no JSON object) -> the call's columns,
    event time, and a `malformed` reason or null."""
    call = F.col("call")
    event_time = F.try_to_timestamp(call["call_date_time"])
    crime_id = F.trim(call["crime_id"])
    malformed = (
        F.when(F.col("json_reason").isNotNull(), F.col("json_reason"))
        .when(call.isNull(), F.lit(NOT_AN_OBJECT))
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


def dedupe_calls(parsed: DataFrame) -> DataFrame:
    """Kafka delivery is at-least-once, and a call may be sent again at any time: count each crime_id once, ever.

    Spark's dropDuplicates with no watermark keeps one key per crime_id in its state for good (restored from
    the checkpoint on restart) and drops nothing for being late. Malformed records pass through in the same
    plan, so the source is read once: each is keyed by its own partition and offset, so it is never a
    duplicate (one key per dead letter: the state stays one key per message kept). The raw value is kept
    only for malformed records, the only ones that need it.
    """
    key = F.when(F.col("malformed").isNull(), F.col("crime_id")).otherwise(
        F.concat(F.lit("!"), F.col("partition").cast("string"), F.lit(":"), F.col("offset").cast("string")))
    return (parsed.withColumn("dedupe_key", key)
            .dropDuplicates(["dedupe_key"])
            .drop("dedupe_key")
            .withColumn("value", F.when(F.col("malformed").isNotNull(), F.col("value"))))


def with_descriptions(calls: DataFrame, descriptions: dict[str, str | None]) -> DataFrame:
    """Each call's disposition described (radio_code.json, 19 codes); an unknown code keeps a null description.

    A literal map in the plan, not a join: a broadcast join read the file and broadcast it again in two Spark
    stages of its own every micro-batch (about 90 ms of a live batch), and every executor needed the file."""
    if not descriptions:
        return calls.withColumn("description", F.lit(None).cast("string"))
    lookup = F.create_map(*[F.lit(item) for pair in sorted(descriptions.items()) for item in pair])
    return calls.withColumn("description", lookup[F.col("disposition")])


# One aggregation answers every question for a batch of calls: each count is a grouping set, so Spark
# reads the batch once and shuffles once. Malformed records come out as the dead-letter set: their
# partition/offset/value columns are null for valid calls, which all fold into one group there.
# "repeated_hour" lists the calls whose local time falls in an hour a daylight-saving change repeats
# (a few dozen a year), one row each, for results.py to place in the right occurrence of that hour.
COUNT_SETS = {
    "crime_type_windows": ("window_start", "crime_type"),
    "locations": ("address",),
    "dispositions": ("disposition", "description"),
    "hourly": ("hour", "crime_type"),
    "daily": ("day", "crime_type"),
    "dead_letters": ("dl_partition", "dl_offset", "dl_timestamp", "reason", "value"),
    "repeated_hour": ("rh_crime_id", "rh_time", "rh_type"),
    "total": (),
}
COUNT_COLUMNS = ("window_start", "crime_type", "address", "disposition", "description", "hour", "day",
                 "dl_partition", "dl_offset", "dl_timestamp", "reason", "value", "rh_crime_id", "rh_time", "rh_type")


def pane_start(pane_seconds: int):
    return F.floor(F.unix_seconds("event_time") / F.lit(pane_seconds)) * F.lit(pane_seconds)


def in_repeated_hour(event_time):
    """The local time is in an hour that a fall-back change repeats. Spark (like java.time) reads such a time
    as its first occurrence, so an hour later the local clock shows the same hour again."""
    fmt = "yyyy-MM-dd HH"
    return F.date_format(event_time + F.expr("INTERVAL 1 HOUR"), fmt) == F.date_format(event_time, fmt)


def count_calls(calls: DataFrame, pane_seconds: int, ahead_from: int | None = None) -> DataFrame:
    """Every count of a batch in one DataFrame, tagged by grouping_id (see split_counts).

    Windows are counted as tumbling panes of `pane_seconds` (the window slide), aligned to the epoch as
    Spark's window() aligns them; a sliding window is the sum of its panes (results.window_counts), so
    one pass serves tumbling and sliding windows alike. Not window() itself: in a projection it adds a
    filter on a non-null event time, which would drop the malformed records on their way to the dead letters.
    A call whose event time is at or after `ahead_from` (epoch seconds) is implausibly far ahead of the
    stream: it goes to the dead letters. `calls` is parse_calls' output, joined with the radio codes.
    """
    reason = F.col("malformed")
    if ahead_from is not None:
        reason = F.when(reason.isNull() & (F.unix_seconds("event_time") >= F.lit(ahead_from)),
                        F.lit(TOO_FAR_AHEAD)).otherwise(reason)
    ok = reason.isNull()
    bad = ~ok
    repeated = ok & in_repeated_hour(F.col("event_time"))
    dims = calls.select(
        F.when(ok, pane_start(pane_seconds)).alias("window_start"),
        F.when(ok, F.col("crime_type")).alias("crime_type"),
        F.when(ok, F.col("address")).alias("address"),
        F.when(ok, F.col("disposition")).alias("disposition"),
        F.when(ok, F.col("description")).alias("description"),
        F.when(ok, F.hour("event_time")).alias("hour"),
        F.when(ok, F.date_format("event_time", "yyyy-MM-dd")).alias("day"),
        F.when(bad, F.col("partition")).alias("dl_partition"),
        F.when(bad, F.col("offset")).alias("dl_offset"),
        F.when(bad, F.unix_micros("kafka_timestamp")).alias("dl_timestamp"),
        reason.alias("reason"),
        F.when(bad, F.col("value")).alias("value"),
        F.when(repeated, F.col("crime_id")).alias("rh_crime_id"),
        F.when(repeated, F.unix_seconds("event_time")).alias("rh_time"),
        F.when(repeated, F.col("crime_type")).alias("rh_type"),
        F.unix_micros("kafka_timestamp").alias("kafka_us"),
        F.when(ok, F.unix_seconds("event_time")).alias("event_s"),
    )
    return dims.groupingSets([list(cols) for cols in COUNT_SETS.values()], *COUNT_COLUMNS).agg(
        F.grouping_id().alias("gid"), F.count("*").alias("count"),
        F.min("kafka_us").alias("kafka_us_min"), F.max("kafka_us").alias("kafka_us_max"),
        F.avg("kafka_us").alias("kafka_us_avg"), F.max("event_s").alias("event_s_max"))


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
