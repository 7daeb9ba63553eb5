"""The job's transformations: pure functions of DataFrames, the same for a stream and for a batch.

parse_calls (validate_calls) -> dedupe_calls (the stream's) -> with_descriptions -> count_columns, in Spark;
then count_table, in Python, over each batch's rows: malformed records ride along and come out as the dead
letters. Reading files is files.py's; the query wiring (source, sink, listener) lives in job.py.
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
# RFC 8259 lets a parser limit nesting (section 9). A fixed limit, not Python's recursion limit, which depends on
# how deep the caller's stack is (and Hypothesis raises it): the Python and JVM checks must agree on every value.
MAX_NESTING = 512
TOO_DEEP = f"JSON nested deeper than {MAX_NESTING}"
TOO_FAR_AHEAD = "event time implausibly far ahead"
NO_CRIME_ID = "missing crime_id"
# Whitespace as Python's str.strip() takes it (the repeated hour's crime_ids, dataset.py): Spark's trim takes
# spaces only, and counted a crime_id of "\r" as a call.
_EDGE_BLANKS = r"[\t\n\x0B\f\r\x1C-\x20\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
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
    except ValueError:
        return NOT_JSON
    except RecursionError:  # deeper than Python's stack allows, which is far deeper than MAX_NESTING
        return TOO_DEEP
    if not isinstance(parsed, dict):
        return NOT_AN_OBJECT
    return TOO_DEEP if nested_deeper_than(parsed, MAX_NESTING) else None


def nested_deeper_than(value, limit: int) -> bool:
    """Objects and arrays nest more than `limit` deep in `value` (the outer one is 1). A loop, not recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in (item.values() if isinstance(item, dict) else item):
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


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
                parsed = loads(value)
                if type(parsed) is dict and not nested_deeper_than(parsed, MAX_NESTING):
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


JVM_JSON_CHECK = "sfcrime_strict_json_reason"


def jvm_json_check(spark) -> bool:
    """Make the JVM JSON check (sfcrime/stream/jvm/, built by `make setup` where there is javac) a SQL
    function of this session; False when its jar is not built from the current source or not on Spark's
    classpath, or SFCRIME_JSON_CHECK=python asks for the Python workers' check.

    The same judge as json_object_reason (test_properties holds them to the same answers), without a
    Python worker per task: about a quarter of a live batch's time here (README, "Latency")."""
    import os

    from ..local.jars import JSON_CHECK_CLASS, json_check_jar_paths

    if os.environ.get("SFCRIME_JSON_CHECK", "").lower() == "python" or not json_check_jar_paths():
        return False
    if not spark._jvm.org.apache.spark.util.Utils.classIsLoadable(JSON_CHECK_CLASS):
        return False
    # A DataType, not "string": the name would be parsed as DDL by the JVM, about half a second cold.
    spark.udf.registerJavaFunction(JVM_JSON_CHECK, JSON_CHECK_CLASS, StringType())
    return True


# Spark's from_json, made as strict as its options allow; json_object_reason has already said the value is
# exactly an object, so these only make sure Spark reads it the same way.
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, "allowSingleQuotes": "false",
                 "allowNonNumericNumbers": "false", "allowNumericLeadingZeros": "false",
                 "allowUnquotedControlChars": "false", "allowBackslashEscapingAnyCharacter": "false",
                 "allowComments": "false", "allowUnquotedFieldNames": "false"}


def parse_calls(raw: DataFrame, jvm: bool | None = None) -> DataFrame:
    """Kafka rows -> one row per message with the call's fields, its event time and, if malformed, why.

    A value must be exactly a JSON object (RFC 8259, UTF-8): anything else is malformed with its reason,
    checked in the JVM where the check is built (`jvm` None: if jvm_json_check can; True: it must), else in
    Python workers.
    It is then read against an explicit schema; `call_date_time` is read in the session time zone
    (set to San Francisco's by the job). A message that lacks a crime_id or has no parseable
    call_date_time is malformed too. Malformed messages keep their raw value, partition and offset.
    """
    use_jvm = jvm is not False and jvm_json_check(raw.sparkSession)
    if jvm and not use_jvm:
        raise RuntimeError("the JVM JSON check is not built or not on Spark's classpath (make setup)")
    reason = F.call_function(JVM_JSON_CHECK, F.col("value")) if use_jvm else strict_json_reason(F.col("value"))
    rows = raw.select(_key(raw), "value", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"),
                      reason.alias("json_reason"))
    parsed = F.when(F.col("json_reason").isNull(),
                    F.from_json(F.col("value").cast("string"), PARSE_SCHEMA, _JSON_OPTIONS))
    return validate_calls(rows.select("key", "value", "partition", "offset", "kafka_timestamp", "json_reason",
                                      parsed.alias("call")))


def rows_from_lines(lines: DataFrame) -> DataFrame:
    """Lines of text (spark.readStream.text) as rows the plan takes from Kafka, a message a line: for the
    set-up's training run and the job's warm-up, which feed it calls of their own."""
    return lines.select(F.col("value").cast("binary").alias("value"), F.lit(0).alias("partition"),
                        F.xxhash64("value").alias("offset"), F.current_timestamp().alias("timestamp"))


def _key(rows: DataFrame):
    """The message's key: a dead letter keeps it. Readers without one (a file, the set-up's training) have none."""
    return F.col("key") if "key" in rows.columns else F.lit(None).cast("binary").alias("key")


def validate_calls(rows: DataFrame) -> DataFrame:
    """Rows with a `call` struct (and `json_reason`, why the value is no JSON object) -> the call's columns,
    event time, and a `malformed` reason or null."""
    call = F.col("call")
    event_time = F.try_to_timestamp(call["call_date_time"])
    crime_id = F.regexp_replace(call["crime_id"], rf"\A{_EDGE_BLANKS}+|{_EDGE_BLANKS}+\z", "")
    malformed = (
        F.when(F.col("json_reason").isNotNull(), F.col("json_reason"))
        .when(call.isNull(), F.lit(NOT_AN_OBJECT))
        .when(call[CORRUPT].isNotNull(), F.lit(NOT_JSON))
        .when(crime_id.isNull() | (crime_id == ""), F.lit(NO_CRIME_ID))
        .when(event_time.isNull(), F.lit(BAD_EVENT_TIME))
    )
    return rows.select(
        _key(rows), "value", "partition", "offset", "kafka_timestamp",
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
    only for malformed records, the only ones that need it, and so is the key. (A call found implausibly far
    ahead only later, in the driver, has its bytes read again from Kafka: job.BatchWriter.)
    """
    key = F.when(F.col("malformed").isNull(), F.col("crime_id")).otherwise(
        F.concat(F.lit("!"), F.col("partition").cast("string"), F.lit(":"), F.col("offset").cast("string")))
    return (parsed.withColumn("dedupe_key", key)
            .dropDuplicates(["dedupe_key"])
            .drop("dedupe_key")
            .withColumn("value", F.when(F.col("malformed").isNotNull(), F.col("value")))
            .withColumn("key", F.when(F.col("malformed").isNotNull(), F.col("key"))))


def with_descriptions(calls: DataFrame, descriptions: dict[str, str | None]) -> DataFrame:
    """Each call's disposition described (radio_code.json, 19 codes); an unknown code keeps a null description.

    A literal map in the plan, not a join: a broadcast join read the file and broadcast it again in two Spark
    stages of its own every micro-batch (about 90 ms of a live batch), and every executor needed the file."""
    if not descriptions:
        return calls.withColumn("description", F.lit(None).cast("string"))
    lookup = F.create_map(*[F.lit(item) for pair in sorted(descriptions.items()) for item in pair])
    return calls.withColumn("description", lookup[F.col("disposition")])


def pane_start(pane_seconds: int):
    return F.floor(F.unix_seconds("event_time") / F.lit(pane_seconds)) * F.lit(pane_seconds)


def in_repeated_hour(event_time):
    """The local time is in an hour that a fall-back change repeats. Spark (like java.time) reads such a time
    as its first occurrence, so an hour later the local clock shows the same hour again."""
    fmt = "yyyy-MM-dd HH"
    return F.date_format(event_time + F.expr("INTERVAL 1 HOUR"), fmt) == F.date_format(event_time, fmt)


def count_columns(calls: DataFrame, pane_seconds: int) -> DataFrame:
    """Each message as counting needs it (count_table): its pane, local hour and day, computed here in the
    session time zone, beside its Kafka coordinates and why it is malformed.

    Windows are counted as tumbling panes of `pane_seconds` (the window slide), aligned to the epoch as
    Spark's window() aligns them; a sliding window is the sum of its panes (results.window_counts), so
    one pass serves tumbling and sliding windows alike. Not window() itself: in a projection it adds a
    filter on a non-null event time, which would drop the malformed records on their way to the dead letters.
    `calls` is parse_calls' output (deduped, described); a malformed row's event time, and so its pane,
    hour and day, are null.
    """
    event_time = F.col("event_time")
    return calls.select(
        pane_start(pane_seconds).alias("window_start"), "crime_type", "address", "disposition", "description",
        F.hour(event_time).alias("hour"), F.date_format(event_time, "yyyy-MM-dd").alias("day"),
        in_repeated_hour(event_time).alias("repeated_hour"), "crime_id",
        F.unix_seconds(event_time).alias("event_s"), "partition", "offset",
        F.unix_micros("kafka_timestamp").alias("kafka_us"), "key", "value", "malformed")


# What each count set groups by: (its name in count_table's answer, its column in count_columns).
COUNT_SETS = {
    "crime_type_windows": (("window_start", "window_start"), ("crime_type", "crime_type")),
    "locations": (("address", "address"),),
    "dispositions": (("disposition", "disposition"), ("description", "description")),
    "hourly": (("hour", "hour"), ("crime_type", "crime_type")),
    "daily": (("day", "day"), ("crime_type", "crime_type")),
    "repeated_hour": (("rh_crime_id", "crime_id"), ("rh_time", "event_s"), ("rh_type", "crime_type")),
    "dead_letters": (("dl_partition", "partition"), ("dl_offset", "offset"), ("dl_timestamp", "kafka_us"),
                     ("reason", "reason"), ("key", "key"), ("value", "value")),
}


def count_table(table, ahead_from: int | None = None) -> dict[str, list[dict]]:
    """Every count of a batch from count_columns' rows (a pyarrow Table), by count set: a list of rows,
    each its keys and `count`; "total" also has the batch's first, last and mean Kafka time (kafka_us_*)
    and its latest event time (event_s_max), or is empty for an empty batch.

    Counted in the driver's Python, not by a Spark aggregation: a batch's rows are small next to Spark's
    fixed cost for another shuffle and stage (README, "Latency"), and a batch is read once. A call whose
    event time is at or after `ahead_from` (epoch seconds) is implausibly far ahead of the stream: it is a
    dead letter. "repeated_hour" lists the calls whose local time falls in an hour a daylight-saving change
    repeats (a few dozen a year), one row each, for results.py to place in the right occurrence of that hour.
    "partition_event_times" is each partition's latest plausible event time (event_s_max): its watermark
    (watermarks.py).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    reason = table["malformed"]
    if ahead_from is not None:
        far = pc.fill_null(pc.and_(pc.is_null(reason), pc.greater_equal(table["event_s"], ahead_from)), False)
        reason = pc.if_else(far, pa.scalar(TOO_FAR_AHEAD), reason)
    table = table.append_column("reason", reason)
    ok = pc.is_null(reason)
    calls, bad = table.filter(ok), table.filter(pc.invert(ok))
    repeated = calls.filter(pc.fill_null(calls["repeated_hour"], False))
    counts = {name: _grouped(repeated if name == "repeated_hour" else bad if name == "dead_letters" else calls, keys)
              for name, keys in COUNT_SETS.items()}
    counts["partition_event_times"] = [] if not calls.num_rows else (
        calls.group_by(["partition"], use_threads=False).aggregate([("event_s", "max")])
        .select(["partition", "event_s_max"]).to_pylist())
    counts["total"] = [] if not table.num_rows else [{
        "count": table.num_rows, "kafka_us_min": pc.min(table["kafka_us"]).as_py(),
        "kafka_us_max": pc.max(table["kafka_us"]).as_py(), "kafka_us_avg": pc.mean(table["kafka_us"]).as_py(),
        "event_s_max": pc.max(calls["event_s"]).as_py()}]
    return counts


def _grouped(table, keys: tuple[tuple[str, str], ...]) -> list[dict]:
    """Rows of `table` counted by the columns of `keys` (a null is a key like any other), renamed."""
    if not table.num_rows:
        return []
    columns = [column for _, column in keys]
    grouped = table.select(columns).group_by(columns, use_threads=False).aggregate([([], "count_all")])
    return grouped.select(columns + ["count_all"]).rename_columns([name for name, _ in keys] + ["count"]).to_pylist()
