"""/metrics and /healthz without a broker or Spark: results written by hand, the exposition read back with
prometheus_client's own parser, the health's answer for each state."""

import json
import time
from urllib.error import HTTPError
from urllib.request import ProxyHandler, build_opener

from prometheus_client.parser import text_string_to_metric_families

from sfcrime.dashboard import start_in_background
from sfcrime.dashboard.health import job_health
from sfcrime.dashboard.metrics import exposition
from sfcrime.results import ProgressRow, ResultStore
from sfcrime.stream.watermarks import Observation

HOUR = 3600
T0 = 1_541_404_800


def results(tmp_path, unread: int = 0):
    store = ResultStore(tmp_path)
    store.check_settings({"window_seconds": str(HOUR), "pane_seconds": str(HOUR), "watermark_seconds": str(HOUR),
                          "window": "1 hour", "slide": "1 hour"})
    batch = {"crime_type_windows": [{"window_start": T0, "crime_type": "Theft", "count": 3}],
             "locations": [{"address": "A St", "count": 2}, {"address": "B St", "count": 1}],
             "dead_letters": [{"dl_partition": 1, "dl_offset": 7, "dl_timestamp": 1e15, "reason": "not valid JSON",
                               "value": b"{"}],
             "partition_event_times": [{"partition": 0, "event_s_max": T0 + 5 * HOUR},
                                       {"partition": 1, "event_s_max": T0 + 3 * HOUR}],
             "total": [{"count": 4, "kafka_us_min": 1e15, "kafka_us_max": 1e15, "kafka_us_avg": 1e15,
                        "event_s_max": T0 + 5 * HOUR}]}
    store.write_batch(0, batch, observation=Observation(time.time(), 60.0, {0: 10, 1: 20}, {0: 10 + unread, 1: 20}))
    store.write_progress(ProgressRow(0, "2026-12-05T00:00:00Z", 4, 10.0, 20.0, 1500, None, 3, unread, 2,
                                     '{"addBatch": 900, "resultsWrite": 12}'))
    store.set_meta(started_at=str(time.time() - 600))
    store.close()


def families(text: str) -> dict[str, dict[tuple, float]]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_the_exposition_parses_and_says_what_the_results_hold(tmp_path):
    results(tmp_path, unread=5)
    text = exposition(tmp_path).decode()
    metrics = families(text)
    assert metrics["sfcrime_calls_counted_total"] == {(): 3}
    assert metrics["sfcrime_dead_letters_total"] == {(("reason", "not valid JSON"),): 1}
    assert metrics["sfcrime_duplicates_dropped_total"] == {(): 2}
    assert metrics["sfcrime_batches_total"] == {(): 1} and metrics["sfcrime_late_calls_total"] == {(): 0}
    assert metrics["sfcrime_revised_windows_total"] == {(): 0}
    assert metrics["sfcrime_consumer_lag_messages"] == {(("partition", "0"),): 5, (("partition", "1"),): 0}
    assert metrics["sfcrime_watermark_timestamp_seconds"] == {(): T0 + 2 * HOUR}  # the slower partition's, less 1 h
    assert metrics["sfcrime_watermark_delay_seconds"] == {(): 3 * HOUR}
    assert metrics["sfcrime_last_batch_duration_seconds"] == {(): 1.5}
    assert metrics["sfcrime_last_batch_input_rows"] == {(): 4}
    assert metrics["sfcrime_last_batch_results_write_seconds"] == {(): 0.012}
    assert 0 <= metrics["sfcrime_seconds_since_last_batch"][()] < 60
    assert metrics["sfcrime_up"] == {(): 0}  # no job runs here
    assert "# TYPE sfcrime_calls_counted_total counter" in text and "# HELP sfcrime_consumer_lag_messages " in text


def test_health_is_one_line_of_why_for_each_state(tmp_path):
    assert job_health(tmp_path / "none").status == "no results"
    results(tmp_path, unread=5)
    assert job_health(tmp_path, job="stopped").status == "not running"
    now = time.time()
    assert job_health(tmp_path, 120, now, job="running").healthy  # the batch was just written
    stalled = job_health(tmp_path, 120, now + 121, job="running")
    assert not stalled.healthy and stalled.status == "stalled"
    assert stalled.reason.startswith("5 messages wait and no batch for 12") and "--stall-after 120 s" in stalled.reason
    store = ResultStore(tmp_path)
    store.set_meta(broker_lost_since=str(now - 30))
    store.close()
    lost = job_health(tmp_path, 120, now, job="running")
    assert lost.status == "broker lost" and lost.reason == "the job has had no answer from its broker for 30 s"


def test_the_servers_answer_metrics_and_healthz(tmp_path):
    results(tmp_path)
    url, stop = start_in_background(tmp_path, port=0)
    opener = build_opener(ProxyHandler({}))
    try:
        with opener.open(url + "metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            assert families(response.read().decode())["sfcrime_calls_counted_total"] == {(): 3}
        try:
            opener.open(url + "healthz", timeout=10)
            raise AssertionError("a job that is not running is not healthy")
        except HTTPError as error:
            body = json.loads(error.read())
            assert error.code == 503 and body["status"] == "not running" and body["reason"] == "the job is unknown"
    finally:
        stop()
