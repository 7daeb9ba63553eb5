"""Final means final: a watermark per Kafka partition, so a window is final only once every partition has
passed it (issue 26). Real broker, real Spark, the real CLI; the watermark and every answer compared with
an independent count of what the topic holds, read back with confluent-kafka directly.

Each replay is in event-time order within every partition, so nothing should be late: a call counted late
here means a window was called final too soon. With one watermark for all partitions (the code before),
the skewed --once run on 7 partitions counted 117 calls late and revised 10 windows; the slow partition's
calls were all late.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from datetime import datetime

import pytest

from sfcrime.sf_time import ZONE as SF
from sfcrime.dataset import load_calls
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, produce_raw, read_topic, run_cli
from tests.integration.test_exactly_once import assert_every_answer, call, event_seconds, expected_answers, stream
from tests.integration.test_kafka_tools import assert_group_caught_up, group_offsets
from tests.integration.test_stream import report

pytestmark = pytest.mark.slow
HOUR = 3600


def shown(epoch_seconds: float) -> str:
    """San Francisco local time as report --json gives it, made here with dateutil's zone."""
    return datetime.fromtimestamp(epoch_seconds, SF).strftime("%Y-%m-%d %H:%M")


def by_event_time(records):
    return sorted(records, key=lambda r: (event_seconds(r), r["crime_id"]))


def independent_watermark(partition_maxima: dict[int, int]) -> int:
    """The smallest of the partitions' latest event times, minus the 1-hour --watermark."""
    return min(partition_maxima.values()) - HOUR


def maxima_in_topic(kafka, expected_messages: int) -> dict[int, int]:
    """Each partition's latest event time, from the topic itself (not from the job)."""
    maxima: dict[int, int] = {}
    for message in read_topic(kafka.bootstrap_servers, kafka.topic, expected_messages):
        seconds = event_seconds(json.loads(message.value()))
        maxima[message.partition()] = max(seconds, maxima.get(message.partition(), seconds))
    return maxima


def final_windows(answers) -> int:
    return answers["windows"]["final"]


def panes_ending_by(records, watermark: float) -> int:
    """Hourly windows with a call that end at or before the watermark: the ones that must be final."""
    return len({event_seconds(r) // HOUR for r in records if event_seconds(r) // HOUR * HOUR + HOUR <= watermark})


@pytest.mark.parametrize("source, partitions", [("kafka", 7), ("python", 3)])
def test_partitions_read_at_different_speeds_revise_no_final_window_and_a_truly_late_call_revises_its_own(
        kafka, sample_file, sample_records, tmp_path, source, partitions):
    """--max-offsets-per-trigger shares each small batch between the partitions, which drift apart in event
    time; a call sent into partition 0 after the rest, a day behind it there, is late and revises its window."""
    replay(load_calls(sample_file), kafka, Pacing(), partitions=partitions, progress=False)
    first = min(sample_records, key=event_seconds)["call_date_time"]
    late = call("990000010", first[:14] + "30:00.000")  # in the sample's first hour, behind partition 0's calls
    produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(late).encode()], partition=0)

    output = tmp_path / "out"
    group = f"g-{kafka.topic}"
    run = stream(kafka, output, source, "--max-offsets-per-trigger", "100", "--group-id", group)
    answers = assert_every_answer(output, expected_answers(sample_records + [late]))
    assert answers["late_calls_counted"] == 1 and answers["revised_windows"] == 1
    late_pane = event_seconds(late) // HOUR * HOUR
    with sqlite3.connect(output / "results.sqlite") as db:
        assert db.execute("SELECT pane_start, calls FROM revisions").fetchall() == [(late_pane, 1)]
    watermark = independent_watermark(maxima_in_topic(kafka, len(sample_records) + 1))
    assert answers["watermark"] == shown(watermark)
    assert final_windows(answers) == panes_ending_by(sample_records, watermark) > 10
    assert "event time by partition: 0 " in run.stderr and "(holds the watermark)" in run.stderr
    # Kafka's own tool sees the job's progress: each partition committed to its end, lag 0
    assert f"consumer group {group}: kafka-consumer-groups.sh" in run.stderr
    assert_group_caught_up(kafka.bootstrap_servers, group, len(sample_records) + 1, partitions)


def live_job(kafka, output, source, *extra):
    return subprocess.Popen([PYTHON, "data_stream.py", "--source", source, "--console-top", "0",
                             "--bootstrap-servers", kafka.bootstrap_servers, "--topic", kafka.topic,
                             "--output", str(output), *extra],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=(output.parent / "job.err").open("w"),
                            start_new_session=True)


def answers_now(output) -> dict | None:
    from sfcrime.errors import UserError
    from sfcrime.answers import answers

    try:
        return answers(output, top=5, windows=1)
    except (UserError, sqlite3.Error):  # no results yet
        return None


def wait_until(what: str, output, done, timeout_s: float, job) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended while waiting for {what}: " + (
            output.parent / "job.err").read_text()[-3000:]
        seen = answers_now(output)
        if seen is not None and done(seen):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s:g} s: {what}; last seen {answers_now(output)}")


def stop(job, output) -> str:
    os.killpg(job.pid, signal.SIGINT)  # Ctrl-C, as a person stops the live job
    job.wait(90)
    session_ended(job.pid)  # what Spark's processes print as they go comes under the prompt too
    said = (output.parent / "job.err").read_text()
    assert job.returncode == 130 and "Traceback" not in said, said[-3000:]
    assert said.rstrip().splitlines()[-1].startswith("stopping (Ctrl-C); every finished batch is kept"), said[-3000:]
    return said


def session_ended(sid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"the job's processes outlived it by {timeout_s:g} s"
        time.sleep(0.2)


def wait_for_lag(kafka, group: str, ends: dict[int, int], timeout_s: float = 30) -> None:
    """Kafka's tool shows every partition committed to `ends` (the messages the test sent), lag 0: the
    job commits a batch's offsets just after its results."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = group_offsets(kafka.bootstrap_servers, group)
        if rows == {p: (end, end, 0) for p, end in ends.items()}:
            return
        assert time.monotonic() < deadline, f"the group shows {rows}, not {ends} read with lag 0"
        time.sleep(1)


def distinct(records) -> int:
    return len({r["crime_id"] for r in records})


def test_a_partition_that_never_gets_data_holds_finality_for_the_idle_timeout_and_no_longer(
        kafka, sample_records, tmp_path):
    """Three partitions, calls in two of them: until the third has been quiet for --idle-timeout, it may
    still bring calls for any window, so none is final; then the other two decide.

    The job says since when each partition has been quiet (report --json); the test holds that to the
    wall clock: not before the job was started, and no window final sooner than the timeout after it."""
    idle_s = 60
    records = by_event_time(sample_records[:800])
    produce_raw(kafka.bootstrap_servers, kafka.topic, [])  # three partitions, empty
    output = tmp_path / "out"
    launched = time.time()
    job = live_job(kafka, output, "kafka", "--idle-timeout", f"{idle_s} seconds")
    held = None
    try:
        deadline = time.monotonic() + 240  # the calls come once the job runs: however slow its start, it counts
        while "query started" not in (output.parent / "job.err").read_text():  # them well within the timeout
            assert job.poll() is None and time.monotonic() < deadline, (output.parent / "job.err").read_text()[-3000:]
            time.sleep(0.5)
        produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(r).encode() for r in records[0::2]], partition=0)
        produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(r).encode() for r in records[1::2]], partition=1)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert job.poll() is None, (output.parent / "job.err").read_text()[-3000:]
            seen, now = answers_now(output), time.time()
            empty = seen and next((p for p in seen["pipeline"]["partitions"] if p["partition"] == 2), None)
            if empty:
                assert empty["quiet_since"] >= launched - 1  # seen quiet no sooner than the job began
                if final_windows(seen) == 0 and seen["total_calls"] == distinct(records):
                    held = seen
                if final_windows(seen) > 0:
                    assert now >= empty["quiet_since"] + idle_s and empty["idle"]  # no sooner
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no window became final: {answers_now(output)}")
        assert held is not None and held["pipeline"]["watermark_held_by"] == 2, "never seen holding finality back"
        assert time.time() < empty["quiet_since"] + idle_s + 30  # ... and not much later
        watermark = independent_watermark({0: event_seconds(records[-2]), 1: event_seconds(records[-1])})
        assert seen["watermark"] == shown(watermark)
        assert final_windows(seen) == panes_ending_by(records, watermark) >= 4
    finally:
        if job.poll() is None:
            said = stop(job, output)
            assert "partition 2 is idle" in said
    answers = assert_every_answer(output, expected_answers(records))
    assert answers["late_calls_counted"] == 0 and answers["revised_windows"] == 0


def test_a_slow_partition_holds_finality_back_until_it_catches_up(kafka, sample_records, tmp_path):
    """Partition 1 is held back by the test, hours of event time behind partition 0; the job reads what
    there is. No window after partition 1's calls may be final until it catches up; then its calls are
    on time, not late."""
    records = by_event_time(sample_records)
    fast, slow = records[0::2], records[1::2]
    slow_early = [r for r in slow if event_seconds(r) < event_seconds(slow[0]) + 3 * HOUR]
    produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(r).encode() for r in fast], partition=0,
                partitions=2)
    produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(r).encode() for r in slow_early], partition=1)
    output = tmp_path / "out"
    group = f"g-{kafka.topic}"
    job = live_job(kafka, output, "python", "--idle-timeout", "10 minutes", "--group-id", group)
    try:
        sent = fast + slow_early
        held = wait_until("the calls sent so far counted", output, lambda a: a["total_calls"] == distinct(sent), 240, job)
        # live, Kafka's own tool shows the unread count as lag: none, once every message is counted
        wait_for_lag(kafka, group, {0: len(fast), 1: len(slow_early)})
        other = run_cli("data_stream.py", "--once", "--group-id", group, "--bootstrap-servers", kafka.bootstrap_servers,
                        "--topic", kafka.topic, "--output", str(tmp_path / "other"), timeout=120)
        assert other.returncode == 1 and "Traceback" not in other.stderr
        assert other.stderr.strip().splitlines()[-1].startswith(
            f"error: consumer group {group!r} is in use by a running job (query "), other.stderr[-1000:]
        watermark = independent_watermark({0: event_seconds(fast[-1]), 1: event_seconds(slow_early[-1])})
        assert held["watermark"] == shown(watermark) and held["pipeline"]["watermark_held_by"] == 1
        assert final_windows(held) == panes_ending_by(sent, watermark) <= 3
        assert event_seconds(fast[-1]) - event_seconds(slow_early[-1]) > 15 * HOUR  # hours of event time behind

        rest = slow[len(slow_early):]
        produce_raw(kafka.bootstrap_servers, kafka.topic, [json.dumps(r).encode() for r in rest], partition=1)
        caught_up = wait_until("every call counted", output, lambda a: a["total_calls"] == distinct(records), 120, job)
        wait_for_lag(kafka, group, {0: len(fast), 1: len(slow)})
        watermark = independent_watermark({0: event_seconds(fast[-1]), 1: event_seconds(slow[-1])})
        assert caught_up["watermark"] == shown(watermark)
        assert final_windows(caught_up) == panes_ending_by(records, watermark) > 15
    finally:
        if job.poll() is None:
            stop(job, output)
    answers = assert_every_answer(output, expected_answers(records))
    assert answers["late_calls_counted"] == 0 and answers["revised_windows"] == 0
