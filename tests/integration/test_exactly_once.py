"""Each call counted exactly once whatever the pace, the order, the tuning or the restarts (issue 9).

Real broker, real Spark, the real CLI; every answer (totals, types, windows, locations, dispositions,
dead letters) compared with an independent count in plain Python. Each test runs as few Spark jobs as it
can: one topic holds several hostile cases at once. `source` is "python" (ours) or "kafka" (Spark's
connector, which set-up puts on the classpath).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from collections import Counter
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfcrime.sf_time import ZONE as SF
from sfcrime.dataset import load_calls
from sfcrime.producer import Pacing, replay
from tests.conftest import REPO, produce_raw, read_topic, run_cli, write_calls
from tests.integration.test_stream import report

pytestmark = pytest.mark.slow
SOURCES = ("python", "kafka")
# 2018-11-04, 01:00-02:00 happened twice; the clock goes back in crime_id order after 183080262 (01:56).
SECOND_OCCURRENCE_FROM = 183080266


def event_seconds(record) -> int:
    """Independent of the job: dateutil, with the fall-back night's boundary read off the data by hand."""
    local = datetime.fromisoformat(record["call_date_time"])
    repeated = (local.year, local.month, local.day, local.hour) == (2018, 11, 4, 1)
    fold = 1 if repeated and int(record["crime_id"]) >= SECOND_OCCURRENCE_FROM else 0
    return int(local.replace(tzinfo=SF, fold=fold).timestamp())


def expected_answers(records, pane_s=3600):
    calls = list({r["crime_id"]: r for r in records}.values())
    codes = {c["disposition_code"]: c["description"] for c in json.loads((REPO / "radio_code.json").read_text())}
    panes = Counter()
    for c in calls:
        t = event_seconds(c)
        panes[(t - t % pane_s, c["original_crime_type_name"])] += 1
    return {
        "total_calls": len(calls),
        "types": Counter(c["original_crime_type_name"] for c in calls),
        "locations": Counter(c["address"] for c in calls),
        "dispositions": {(d, codes.get(d)): n for d, n in Counter(c["disposition"] for c in calls).items()},
        "panes": dict(panes),
    }


def stream(kafka, output, source, *extra, expect_ok=True, timeout=300):
    result = run_cli("data_stream.py", "--once", "--source", source, "--bootstrap-servers", kafka.bootstrap_servers,
                     "--topic", kafka.topic, "--output", str(output), "--console-top", "0", *extra, timeout=timeout)
    if expect_ok:
        assert result.returncode == 0, result.stderr[:2000] + "\n...\n" + result.stderr[-2000:]
    return result


def assert_every_answer(output, expected, malformed_reasons=None):
    answers = report(output)
    assert answers["total_calls"] == expected["total_calls"]
    assert {r["crime_type"]: r["count"] for r in answers["top_crime_types"]} == dict(expected["types"])
    assert {r["address"]: r["count"] for r in answers["top_locations"]} == dict(expected["locations"])
    assert {(r["code"], r["description"]): r["count"] for r in answers["dispositions"]} == expected["dispositions"]
    db = sqlite3.connect(output / "results.sqlite")
    panes = {(p, t): n for p, t, n in db.execute("SELECT pane_start, crime_type, count FROM crime_type_panes")}
    assert panes == expected["panes"]
    assert answers["malformed_reasons"] == (malformed_reasons or {})
    return answers


def call(crime_id, when, crime_type="Passing Call"):
    return {"crime_id": crime_id, "original_crime_type_name": crime_type, "report_date": when, "call_date": when,
            "offense_date": when, "call_time": when[11:16], "call_date_time": when, "disposition": "HAN",
            "address": "1 Test St", "city": "San Francisco", "state": "CA", "agency_id": "1",
            "address_type": "Premise Address", "common_location": ""}


@pytest.mark.parametrize("source", SOURCES)
def test_one_hostile_topic_gives_the_answers_of_an_independent_count(kafka, all_records, tmp_path, source):
    """Cases 1, 2, 3, 6 and 7 in one topic and one run: partitions drifting apart under a small
    maxOffsetsPerTrigger, re-sends a day later, a block of calls a day late, one call a year ahead, strict
    JSON, and the fall-back night of 2018-11-04 (inside `main`)."""
    from sfcrime.clients import ensure_topic

    main = all_records[121_000:124_000]      # 2018-11-03 13:34 to 11-04 17:48, newest first in the file
    late = all_records[126_000:126_300]      # 2018-11-02, sent after main: a day behind the stream
    ensure_topic(kafka, 3)
    absurd = call("990000001", "2019-11-04T12:00:00.000")  # a year ahead, sent first: must not end every window
    produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(absurd).encode()], partition=0, keys=[b"990000001"])
    replay(load_calls(write_calls(tmp_path / "main", main, "gz")), kafka, Pacing(), progress=False, append=True)
    produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(r).encode() for r in late[::-1]], partition=1)
    spaced = call("990000002", "2018-11-04T10:00:00.000")
    good = json.dumps(call("990000003", "2018-11-04T10:00:00.000")).encode()
    hostile = [b"\n\t" + json.dumps(spaced).encode() + b"\r\n",  # valid: JSON whitespace around an object
               good + b" trailing", good + b"}", good.replace(b'"', b"'"),
               good[:-1] + b', "note": "caf\xe9"}', b"[]",
               b'{"original_crime_type_name": "x", "call_date_time": "2018-11-04T10:00:00.000"}',
               b'{"crime_id": "990000004", "call_date_time": "soon"}', b'{"a":' * 600 + b"1" + b"}" * 600]
    produce_raw(kafka.bootstrap_servers, kafka.topic, hostile, partition=2,
                keys=[f"k{i}".encode() for i in range(len(hostile))])
    replay(load_calls(write_calls(tmp_path / "again", main, "gz"), limit=400), kafka, Pacing(), progress=False,
           append=True)

    output = tmp_path / "out"
    stream(kafka, output, source, "--max-offsets-per-trigger", "700")
    expected = expected_answers(main + late + [spaced])
    answers = assert_every_answer(output, expected, {
        "not valid JSON": 3, "not valid UTF-8": 1, "not a JSON object": 1, "event time implausibly far ahead": 1,
        "missing crime_id": 1, "missing or unparseable call_date_time": 1, "JSON nested deeper than 512": 1})
    # every dead letter keeps the message's key and bytes, whatever its reason: as the topic holds them
    db = sqlite3.connect(output / "results.sqlite")
    kept = {(p, o): (k and bytes(k), v and bytes(v)) for p, o, k, v in db.execute(
        "SELECT partition, offset, key, value FROM dead_letters")}
    in_topic = {(m.partition(), m.offset()): (m.key(), m.value())
                for m in read_topic(kafka.bootstrap_servers, kafka.topic, 1 + len(main) + len(late) + len(hostile) + 400)}
    assert len(kept) == 9 and kept == {place: in_topic[place] for place in kept}
    assert all(value for _, value in kept.values()) and all(key for key, _ in kept.values())
    assert answers["duplicates"] == len(main) + 400 + len(late) + 1 - expected["total_calls"] >= 400
    assert answers["late_calls_counted"] >= len(late) and answers["revised_windows"] >= 3
    assert answers["windows"]["final"] > 0 and answers["watermark"] < "2018-11-05"  # the absurd call moved nothing


def test_results_refuse_another_checkpoint_or_a_recreated_topic_and_start_over_on_purpose(
        kafka, sample_records, tmp_path):
    """Cases 4 and 5: a fresh checkpoint on old results, a recreated topic; one line and exit 1, then
    --start-over counts the new topic from scratch.

    One source: each refusal comes before Spark starts (job.check_results_belong: the checkpoint's query
    id, the topic's id and offsets from the broker), the same code for both, and --start-over only clears
    the output first. The Python source ran it too, two whole jobs more (187 s of a full run's four at a time)
    for no other line of code."""
    from confluent_kafka.admin import AdminClient

    source = "kafka"
    first, second = sample_records[:300], sample_records[1000:1200]
    replay(load_calls(write_calls(tmp_path / "first", first)), kafka, Pacing(), progress=False)
    output = tmp_path / "out"
    stream(kafka, output, source)
    assert_every_answer(output, expected_answers(first))

    elsewhere = stream(kafka, output, source, "--checkpoint", str(tmp_path / "elsewhere"), expect_ok=False)
    shutil.move(output / "checkpoint", tmp_path / "kept")
    deleted = stream(kafka, output, source, expect_ok=False)
    for result in (elsewhere, deleted):
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "is new or empty" in result.stderr.strip().splitlines()[-1]
    shutil.move(tmp_path / "kept", output / "checkpoint")
    for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm"):
        if (output / name).exists():
            shutil.move(output / name, tmp_path / name)
    results_gone = stream(kafka, output, source, expect_ok=False)
    assert results_gone.returncode == 1 and "do not hold" in results_gone.stderr.strip().splitlines()[-1]
    for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm"):
        (output / name).unlink(missing_ok=True)
        if (tmp_path / name).exists():
            shutil.move(tmp_path / name, output / name)

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.delete_topics([kafka.topic])[kafka.topic].result(30)
    deadline = time.monotonic() + 30  # Apache Kafka deletes a topic asynchronously: wait until it is gone
    while kafka.topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.5)
    replay(load_calls(write_calls(tmp_path / "second", second)), kafka, Pacing(), progress=False)
    recreated = stream(kafka, output, source, expect_ok=False)
    last = recreated.stderr.strip().splitlines()[-1]
    assert recreated.returncode == 1 and last.startswith("error: ") and "--start-over" in last
    assert "another topic id" in last or "recreated" in last
    assert_every_answer(output, expected_answers(first))  # nothing was added to the old results

    stream(kafka, output, source, "--start-over")
    assert_every_answer(output, expected_answers(second))


# Hypothesis tries the simplest example first (60 a trigger, one partition, nothing repeated or late: the
# most batches), then random ones. Each is a whole job, about a minute under the suite's load, so one random
# example a run: every CI run, from a fresh clone with no saved examples, draws a new one.
@pytest.mark.parametrize("source", SOURCES)
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_offsets=st.integers(60, 400), partitions=st.integers(1, 4), repeats=st.integers(0, 60),
       late=st.integers(0, 60), newest_first=st.booleans())
def test_answers_never_depend_on_tuning_partitions_duplicates_or_late_calls(
        bootstrap_servers, sample_records, tmp_path_factory, source, max_offsets, partitions, repeats, late,
        newest_first):
    from sfcrime.kafka_settings import KafkaSettings

    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic=f"t-prop-{uuid.uuid4().hex[:10]}", timeout_s=10)
    tmp = tmp_path_factory.mktemp("prop")
    calls = sample_records[:300]
    older = sample_records[2000:2000 + late]  # about 15 hours older than `calls`, sent after them
    path = write_calls(tmp / "calls", calls)
    replay(load_calls(path, order="file" if newest_first else "event-time"), kafka, Pacing(),
           partitions=partitions, progress=False)
    if older:
        replay(load_calls(write_calls(tmp / "older", older)), kafka, Pacing(), partitions=partitions, progress=False,
               append=True)
    if repeats:
        replay(load_calls(path, limit=repeats), kafka, Pacing(), partitions=partitions, progress=False,
               append=True)
    output = tmp / "out"
    stream(kafka, output, source, "--max-offsets-per-trigger", str(max_offsets))
    answers = assert_every_answer(output, expected_answers(calls + older))
    assert answers["duplicates"] == len(calls) + len(older) + repeats - answers["total_calls"]
