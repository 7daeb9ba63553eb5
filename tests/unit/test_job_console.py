"""What the live job prints beside its progress lines, without Spark: the last final and the open window,
labelled and not every batch; a heartbeat while idle."""

from sfcrime.results import ResultStore
from sfcrime.stream.job import BatchWriter, ProgressReporter

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
