"""What the live job prints beside its progress lines, without Spark: the last final and the open window,
labelled and not every batch; a heartbeat while idle."""

import sqlite3

from sfcrime.results import ResultStore
from sfcrime.stream.listener import ProgressReporter, catch_up
from sfcrime.stream.sink import BatchWriter

HOUR = 3600
START = 1541404800  # 2018-11-05 00:00 PST


def add(store, batch_id, pane_start, crime_type, n, front):
    store.write_batch(batch_id, {
        "crime_type_windows": [{"window_start": pane_start, "crime_type": crime_type, "count": n}],
        "total": [{"count": n, "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15, "event_s_max": front}]})


def test_the_console_shows_the_last_final_and_the_open_window_labelled_and_does_not_scroll(tmp_path, capsys):
    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": str(HOUR), "pane_seconds": str(HOUR), "watermark_seconds": str(HOUR)})
    writer = BatchWriter(store, HOUR, console_top=3, strict=False)
    add(store, 0, START, "Passing Call", 1200, START + 10)
    add(store, 1, START + 2 * HOUR, "22500e", 7, START + 2 * HOUR + 60)  # watermark 01:01: 00:00-01:00 is final
    writer.print_windows()
    assert capsys.readouterr().out.splitlines() == [
        "top crime types, final window 2018-11-05 00:00 PST (final): Passing Call 1,200",
        "top crime types, open window 2018-11-05 02:00 PST (open, counts may still grow): 22500e 7"]
    add(store, 2, START + 2 * HOUR, "22500e", 1, START + 2 * HOUR + 120)
    writer.print_windows()  # the same final window a second later: nothing, at a 1-second trigger
    assert capsys.readouterr().out == ""
    store.close()


def test_an_idle_job_prints_a_heartbeat(capsys):
    listener = ProgressReporter(store=None, topic="calls", heartbeat_s=0)
    listener.onQueryIdle(None)
    assert capsys.readouterr().err.strip().endswith("waiting for new calls in topic 'calls' (no batch yet in this run)")


def progress_event(batch_id: int, input_rps: float = 250.0):
    """A batch's progress as Spark's listener gets it (the JSON a StreamingQueryProgress is made from)."""
    from pyspark.sql.streaming.listener import QueryProgressEvent

    offsets = {"calls": {"0": 300 * (batch_id + 1)}}
    return QueryProgressEvent.fromJson({"progress": {
        "id": "6a1e0c2c-5f5b-4c0e-9d6e-000000000001", "runId": "6a1e0c2c-5f5b-4c0e-9d6e-000000000002",
        "name": "sfcrime_calls", "timestamp": "2026-12-02T12:00:00.000Z", "batchId": batch_id,
        "batchDuration": 1200, "numInputRows": 300, "inputRowsPerSecond": input_rps, "processedRowsPerSecond": 250.0,
        "durationMs": {"addBatch": 900}, "stateOperators": [],
        "sources": [{"description": "KafkaV2[Subscribe[calls]]", "startOffset": offsets, "endOffset": offsets,
                     "latestOffset": offsets, "numInputRows": 300, "inputRowsPerSecond": input_rps,
                     "processedRowsPerSecond": 250.0}],
        "sink": {"description": "ForeachBatchSink", "numOutputRows": -1}}})


def test_nothing_is_printed_after_the_jobs_last_line_though_the_batch_is_kept(tmp_path, capsys):
    """Spark calls the listener from its own thread: a batch that finished just before Ctrl-C printed its line
    after "stopping (Ctrl-C) ... resume with ...", which must stay the last."""
    store = ResultStore(tmp_path)
    listener = ProgressReporter(store, topic="calls", heartbeat_s=0)
    listener.onQueryProgress(progress_event(0))
    listener.say_last("stopping (Ctrl-C)")
    listener.onQueryProgress(progress_event(1))
    listener.onQueryIdle(None)
    assert [line.split(":")[0] for line in capsys.readouterr().err.splitlines()] == ["batch 0", "stopping (Ctrl-C)"]
    store.close()
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert [row[0] for row in db.execute("SELECT batch_id FROM progress ORDER BY batch_id")] == [0, 1]


def test_a_runs_first_batch_reports_its_rows_over_its_own_duration_not_0_in_per_s(tmp_path, capsys):
    """Spark's inputRowsPerSecond divides by the time since the batch before: the first batch of a run says 0
    (the dashboard's rate chart started at 0). 300 rows in a 1.2 s batch: 250 in/s, on the console and kept."""
    store = ResultStore(tmp_path)
    listener = ProgressReporter(store, topic="calls", heartbeat_s=0)
    listener.onQueryProgress(progress_event(0, input_rps=0.0))
    listener.onQueryProgress(progress_event(1, input_rps=400.0))  # a later batch keeps Spark's own rate
    assert [line.split(", ")[1] for line in capsys.readouterr().err.splitlines()] == ["250 in/s", "400 in/s"]
    store.close()
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("SELECT input_rps FROM progress ORDER BY batch_id").fetchall() == [(250.0,), (400.0,)]


class FakeTime:
    """The listener's clock, set by the test."""
    now = 0.0

    @classmethod
    def monotonic(cls):
        return cls.now

    @staticmethod
    def sleep(seconds):
        pass


def batches_printed(capsys) -> list[str]:
    return [line.split(":")[0] for line in capsys.readouterr().err.splitlines()]


def test_under_traffic_a_batch_line_every_console_every_seconds_the_first_and_the_last_always(tmp_path, capsys,
                                                                                              monkeypatch):
    """Six lines a second scrolled a live job's screen: at most one per 10 s, yet the first batch at once
    and the latest before the job's last line; every batch is kept in the results."""
    monkeypatch.setattr("sfcrime.stream.listener.time", FakeTime)
    store = ResultStore(tmp_path)
    listener = ProgressReporter(store, topic="calls", heartbeat_s=600, every_s=10)
    for batch_id, at in enumerate([0, 0.4, 5, 10.5, 11, 12]):
        FakeTime.now = at
        listener.onQueryProgress(progress_event(batch_id))
    assert batches_printed(capsys) == ["batch 0", "batch 3"]
    listener.say_last("stopping (Ctrl-C)")
    assert batches_printed(capsys) == ["batch 5", "stopping (Ctrl-C)"]
    store.close()
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert [row[0] for row in db.execute("SELECT batch_id FROM progress ORDER BY batch_id")] == [0, 1, 2, 3, 4, 5]


def test_when_the_traffic_stops_the_batch_line_held_back_is_printed_and_a_finished_run_prints_its_last(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sfcrime.stream.listener.time", FakeTime)
    store = ResultStore(tmp_path)
    listener = ProgressReporter(store, topic="calls", heartbeat_s=600, every_s=10)
    FakeTime.now = 0
    listener.onQueryProgress(progress_event(0))
    FakeTime.now = 2
    listener.onQueryProgress(progress_event(1))
    listener.onQueryIdle(None)  # 2 s after the last line: not yet
    assert batches_printed(capsys) == ["batch 0"]
    FakeTime.now = 10
    listener.onQueryIdle(None)
    listener.onQueryIdle(None)
    assert batches_printed(capsys) == ["batch 1"]

    FakeTime.now = 11
    listener.onQueryProgress(progress_event(2))  # held: a line 1 s ago
    assert batches_printed(capsys) == []

    class Query:
        lastProgress = {"batchId": 2}

    catch_up(listener, Query())  # a --once run, or any run that ends: its last batch's line
    assert batches_printed(capsys) == ["batch 2"]
    store.close()


def test_console_every_defaults_to_10_seconds_live_and_every_batch_once():
    from sfcrime.cli import build_parser
    from sfcrime.stream.options import StreamOptions

    def options(*flags):
        return StreamOptions.from_args(build_parser().parse_args(["stream", *flags]))

    assert options().console_every_s == 10 and options("--once").console_every_s == 0
    assert options("--console-every", "2.5").console_every_s == 2.5
    assert options("--console-every", "1 minute", "--once").console_every_s == 60
    assert options("--console-every", "0").console_every_s == 0


def test_a_live_job_warms_up_on_30_batches_by_default_and_never_with_once(capsys):
    import pytest

    from sfcrime.cli import build_parser
    from sfcrime.stream.options import StreamOptions

    def options(*flags):
        return StreamOptions.from_args(build_parser().parse_args(["stream", *flags]))

    assert options().warm_up_batches == 30 and options("--once").warm_up_batches == 0
    assert options("--warm-up", "5").warm_up_batches == 5 and options("--warm-up", "0").warm_up_batches == 0
    assert options("--warm-up", "5", "--once").warm_up_batches == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stream", "--warm-up", "-1"])
    assert "--warm-up" in capsys.readouterr().err
