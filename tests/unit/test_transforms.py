"""The job's transformations on small DataFrames, in a real local Spark session."""

import json
from datetime import datetime, timezone

import pytest

from sfcrime.stream import transforms as T
from sfcrime.dataset import load_radio_codes
from sfcrime.stream.source import cap_offsets
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def kafka_rows(spark, values):
    rows = [(None, v, "calls", 0, i, datetime(2026, 1, 1, tzinfo=timezone.utc), 0) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long, "
                                       "timestamp timestamp, timestampType int")


def good(crime_id, when="2018-10-02T09:11:00.000", disposition="HAN", crime_type="Passing Call", address="Market St"):
    return json.dumps({"crime_id": crime_id, "original_crime_type_name": crime_type, "call_date_time": when,
                       "disposition": disposition, "address": address}).encode()


HOSTILE = [
    (b"not json", T.NOT_AN_OBJECT),
    (b"", T.NOT_AN_OBJECT),
    (None, T.NOT_AN_OBJECT),
    (b"42", T.NOT_AN_OBJECT),
    (b"\"a string\"", T.NOT_AN_OBJECT),
    (b"[" + good("9") + b"]", T.NOT_AN_OBJECT),
    (b"{\"crime_id\": \"6\", \"call_date_time\": ", T.NOT_JSON),
    (b"{}", T.NO_CRIME_ID),
    (b"{\"crime_id\": \"  \", \"call_date_time\": \"2018-10-02T09:11:00.000\"}", T.NO_CRIME_ID),
    (b"{\"crime_id\": \"\\r\", \"call_date_time\": \"2018-10-02T09:11:00.000\"}", T.NO_CRIME_ID),  # blank as str.strip()
    (b"{\"crime_id\": \"\\t\\u3000\\u001f\", \"call_date_time\": \"2018-10-02T09:11:00.000\"}", T.NO_CRIME_ID),
    (b"{\"crime_id\": \"3\"}", T.BAD_EVENT_TIME),
    (b"{\"crime_id\": \"4\", \"call_date_time\": null}", T.BAD_EVENT_TIME),
    (b"{\"crime_id\": \"5\", \"call_date_time\": \"yesterday\"}", T.BAD_EVENT_TIME),
    (b"\xff\xfe{", T.NOT_UTF8),
    (good("10")[:-1] + b", \"x\": \"\xe9t\xe9\"}", T.NOT_UTF8),  # Latin-1 inside an object
    (good("11") + b" trailing", T.NOT_JSON),
    (good("12") + b"}", T.NOT_JSON),
    (good("13") + good("14"), T.NOT_JSON),
    (b"{'crime_id': '15', 'call_date_time': '2018-10-02T09:11:00.000'}", T.NOT_JSON),
    (b"{\"crime_id\": \"16\", \"call_date_time\": \"2018-10-02T09:11:00.000\", \"n\": NaN}", T.NOT_JSON),
    (b"\xef\xbb\xbf" + good("17"), T.NOT_AN_OBJECT),  # a byte-order mark is not JSON whitespace
]
VALID_WITH_WHITESPACE = b"\n\t " + good("18") + b" \r\n\t"
ID_WITH_BLANKS = b"{\"crime_id\": \"\\t 19 a\\u00a0\\n\", \"call_date_time\": \"2018-10-02T09:11:00.000\"}"


@pytest.mark.parametrize("jvm", [True, False], ids=["jvm-check", "python-check"])
def test_parse_calls_marks_every_kind_of_malformed_record(spark, jvm):
    values = [good("1"), good(12345), VALID_WITH_WHITESPACE, ID_WITH_BLANKS] + [v for v, _ in HOSTILE]
    rows = T.parse_calls(kafka_rows(spark, values), jvm=jvm).orderBy("offset").collect()
    assert [r.malformed for r in rows] == [None] * 4 + [reason for _, reason in HOSTILE]
    assert rows[1].crime_id == "12345"  # a numeric id is still an id
    assert rows[2].crime_id == "18"  # JSON whitespace around the object is fine (RFC 8259)
    assert rows[3].crime_id == "19 a"  # blanks around an id go, as str.strip() takes them; inside, they stay
    assert all(r.event_time is None for r in rows[4:])  # malformed rows have no event time
    assert [r.value for r in rows[4:]] == [v for v, _ in HOSTILE]  # kept raw for the dead letters


def test_json_object_reason_is_exactly_rfc_8259_objects():
    assert T.json_object_reason(b" {\"a\": [1, 2.5e3, true, null, \"\\u00e9\"]}\n") is None
    for value, reason in HOSTILE:
        if value is not None and reason in (T.NOT_UTF8, T.NOT_JSON, T.NOT_AN_OBJECT):
            assert T.json_object_reason(value) == reason, value
    assert T.json_object_reason(b"{\"a\": Infinity}") == T.NOT_JSON
    assert T.json_object_reason(b"{\"a\": \"tab\there\"}") == T.NOT_JSON  # control characters must be escaped
    assert T.json_object_reason(b"[" * 100_000) == T.NOT_AN_OBJECT
    assert T.json_object_reason(b"{\"a\":" * 100_000) == T.TOO_DEEP
    # Nesting has a fixed limit, whatever the caller's stack: the JVM check has the same one.
    assert T.json_object_reason(b"{\"a\":" * 511 + b"[]" + b"}" * 511) is None
    assert T.json_object_reason(b"{\"a\":" * 512 + b"[]" + b"}" * 512) == T.TOO_DEEP
    assert T.json_object_reasons([b"{\"a\":" * 512 + b"[]" + b"}" * 512]) == [T.TOO_DEEP]


def test_event_time_is_san_francisco_local_time(spark):
    from pyspark.sql import functions as F

    row = T.parse_calls(kafka_rows(spark, [good("1", "2018-10-02T09:11:00.000"), good("2", "2018-12-31T23:57:00")]))\
        .select(F.unix_seconds("event_time").alias("s")).collect()
    assert [r.s for r in row] == [1538496660, 1546329420]


def test_radio_codes_describe_dispositions_and_unknown_codes_keep_a_null(spark):
    codes = load_radio_codes(REPO / "radio_code.json")
    assert len(codes) == 19 and all(codes)
    calls = T.parse_calls(kafka_rows(spark, [good("1", disposition="HAN"), good("2", disposition="Not recorded"),
                                             good("3", disposition="GOA")]))
    joined = {r.crime_id: r.description for r in T.with_descriptions(calls, codes).collect()}
    assert joined == {"1": "Handled", "2": None, "3": "Gone on Arrival"}


def test_count_table_answers_every_question_from_one_read_of_the_batch(spark):
    values = [good("1", "2018-10-02T09:11:00.000", "HAN", "Passing Call", "A St"),
              good("2", "2018-10-02T09:59:00.000", "HAN", "Passing Call", "A St"),
              good("3", "2018-10-02T10:00:00.000", "Not recorded", "Traffic Stop", "B St"),
              b"garbage"]
    calls = T.with_descriptions(T.parse_calls(kafka_rows(spark, values)), load_radio_codes(REPO / "radio_code.json"))
    table = T.count_columns(calls, 3600).toArrow()
    counts = T.count_table(table)
    nine = 1538496000  # 2018-10-02 09:00 PDT
    assert sorted((r["window_start"], r["crime_type"], r["count"]) for r in counts["crime_type_windows"]) == [
        (nine, "Passing Call", 2), (nine + 3600, "Traffic Stop", 1)]
    assert sorted((r["address"], r["count"]) for r in counts["locations"]) == [("A St", 2), ("B St", 1)]
    assert sorted((r["disposition"], r["description"], r["count"]) for r in counts["dispositions"]) == [
        ("HAN", "Handled", 2), ("Not recorded", None, 1)]
    assert sorted((r["hour"], r["crime_type"], r["count"]) for r in counts["hourly"]) == [
        (9, "Passing Call", 2), (10, "Traffic Stop", 1)]
    assert [(r["day"], r["count"]) for r in counts["daily"]] in ([("2018-10-02", 2), ("2018-10-02", 1)],
                                                                 [("2018-10-02", 1), ("2018-10-02", 2)])
    assert [(r["dl_offset"], r["reason"], r["value"]) for r in counts["dead_letters"]] == [(3, T.NOT_AN_OBJECT, b"garbage")]
    assert counts["total"][0]["count"] == 4
    # each partition's latest plausible event time, its watermark (kafka_rows puts every value in partition 0)
    assert counts["partition_event_times"] == [{"partition": 0, "event_s_max": nine + 3600}]

    ahead = T.count_table(table, ahead_from=nine + 3600)  # the 10:00 call is implausibly far ahead
    assert sorted((r["dl_offset"], r["reason"]) for r in ahead["dead_letters"]) == [
        (2, T.TOO_FAR_AHEAD), (3, T.NOT_AN_OBJECT)]
    assert [(r["window_start"], r["crime_type"], r["count"]) for r in ahead["crime_type_windows"]] == [
        (nine, "Passing Call", 2)]
    assert [(r["address"], r["count"]) for r in ahead["locations"]] == [("A St", 2)]
    assert ahead["total"][0]["count"] == 4 and ahead["total"][0]["event_s_max"] == nine + 59 * 60
    assert ahead["partition_event_times"] == [{"partition": 0, "event_s_max": nine + 59 * 60}]  # not the call set aside
    assert T.count_table(table.slice(0, 0)) == {name: [] for name in [*T.COUNT_SETS, "partition_event_times", "total"]}


def test_batch_job_reads_the_file_with_the_same_transforms(spark, tmp_path):
    from sfcrime.baseline.batch import batch_counts

    path = tmp_path / "calls.json"
    records = [json.loads(good(str(i), f"2018-10-02T{9 + i % 3:02d}:00:00.000")) for i in range(30)]
    path.write_text(json.dumps(records + records[:2] + [{"crime_id": "x"}], indent=4))
    counts = batch_counts(spark, str(path), str(REPO / "radio_code.json"))
    assert sum(r["count"] for r in counts["locations"]) == 30  # repeats counted once
    assert [r["reason"] for r in counts["dead_letters"]] == [T.BAD_EVENT_TIME]


def test_cap_offsets_shares_the_limit_by_backlog():
    start = {"0": 0, "1": 100, "2": 50}
    latest = {"0": 1000, "1": 200, "2": 50}
    end = cap_offsets(start, latest, 110)
    assert sum(end[p] - start[p] for p in end) == 110
    assert end["2"] == 50 and end["0"] - start["0"] > end["1"] - start["1"] >= 1
    assert cap_offsets(start, latest, 10_000) == latest


def test_a_short_end_offset_never_moves_a_batch_backwards():
    from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

    from sfcrime.stream.source import KafkaStreamReader

    reader = KafkaStreamReader({"kafka.bootstrap.servers": "unused:1", "subscribe": "calls", "failOnDataLoss": "false"})
    reader._target = {"0": 90, "1": 500}  # partition 0 read short, below where the next batch starts
    start = {"0": 100, "1": 200}
    assert reader.latestOffset(start, ReadAllAvailable()) == {"0": 100, "1": 500}
    assert reader.latestOffset(start, ReadMaxRows(50)) == {"0": 100, "1": 250}
    assert reader.partitions(start, {"0": 100, "1": 250})[0].value == (1, 200, 250)


def test_offsets_going_back_fail_the_python_source_as_failOnDataLoss_says():
    from pyspark.sql.streaming.datasource import ReadAllAvailable

    from sfcrime.stream.source import KafkaStreamReader

    reader = KafkaStreamReader({"kafka.bootstrap.servers": "unused:1", "subscribe": "calls"})
    reader._end_offsets = lambda: {"0": 40, "1": 500}  # the topic was recreated: partition 0 starts again
    with pytest.raises(RuntimeError, match="partition 0 ends at offset 40, but the query has read it to 100"):
        reader.latestOffset({"0": 100, "1": 200}, ReadAllAvailable())


def test_an_absurd_event_time_is_implausible_but_a_long_batch_or_a_gap_between_batches_is_not():
    from sfcrime.stream.sink import plausible_until

    hour, day, now = 3600, 86400, 2e9
    replay = [(1538352000 + i * hour, 10) for i in range(24 * 90)]  # 90 days in one batch, no gap
    assert plausible_until(replay, None, day, hour, now) is None
    absurd = replay[-1][0] + 365 * day
    assert plausible_until(replay + [(absurd, 1)], None, day, hour, now) == absurd
    later = [(replay[-1][0] + 3 * day + i * hour, 10) for i in range(5)]  # the stream resumes 3 days on
    assert plausible_until(later, replay[-1][0], day, hour, now) is None
    assert plausible_until(later + [(absurd, 1)], replay[-1][0], day, hour, now) == absurd
    assert plausible_until([(int(now) + 2 * day, 5)], None, day, hour, now) == int(now) + 2 * day  # ahead of now
