"""Run it as a service (issue 27): the job's metrics scraped by a real Prometheus (Debian's, `make
setup-prometheus`), and /healthz under a live job that loses its broker and gets it back.

Every number is held to something the job did not write: the lag to Kafka's end offsets and the group's
committed offsets (asked of the broker with confluent-kafka), the calls to an independent count of the file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import ProxyHandler, build_opener

import pytest

from sfcrime.dataset import load_calls
from sfcrime.local.kafka import free_port
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, run_cli
from tests.integration.test_stream import assert_answers_match, expected_answers, report

pytestmark = pytest.mark.slow
OPENER = build_opener(ProxyHandler({}))



def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except HTTPError as error:
        return error.code, error.read()


def committed_and_ends(bootstrap: str, topic: str, group: str) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offsets and the topic's end offsets, asked of the broker directly."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    committed = {tp.partition: tp.offset for tp in consumer.committed(
        [TopicPartition(topic, p) for p in partitions], timeout=10)}
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    consumer.close()
    return committed, ends


def test_prometheus_scrapes_the_calls_counted_and_the_lag_kafka_shows(kafka, sample_file, sample_records, tmp_path):
    """A job stopped part way (Ctrl-C after a few batches of 300): the lag is real. Prometheus scrapes the
    dashboard's /metrics twice; its query API must give the calls an independent count of the counted
    batches gives, and per partition the topic's end offset minus the group's committed offset."""
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    output, group = tmp_path / "out", f"g-{kafka.topic}"
    job = subprocess.Popen([PYTHON, "data_stream.py", "--once", "--max-offsets-per-trigger", "300", "--console-top",
                            "0", "--group-id", group, "--bootstrap-servers", kafka.bootstrap_servers,
                            "--topic", kafka.topic, "--output", str(output)], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=(tmp_path / "job.err").open("w"), start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and job.poll() is None:
        if "batch 3: " in (tmp_path / "job.err").read_text():
            break
        time.sleep(0.2)
    assert job.poll() is None, "the job ended before its fourth batch"
    os.killpg(job.pid, signal.SIGINT)
    assert job.wait(90) == 130, (tmp_path / "job.err").read_text()[-2000:]
    committed, ends = committed_and_ends(kafka.bootstrap_servers, kafka.topic, group)
    assert 0 < sum(committed.values()) < sum(ends.values()) == 3000  # stopped part way: a real lag

    port = free_port()
    dashboard = subprocess.Popen([PYTHON, "-m", "sfcrime", "dashboard", "--output", str(output), "--port", str(port)],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prometheus_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"scrape_configs: [{{job_name: sfcrime, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]\n")
    prometheus = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                                  stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    api = f"http://127.0.0.1:{prometheus_port}/api/v1/query?"
    try:
        def query(expression: str) -> list[dict]:
            status, body = get(api + urlencode({"query": expression}))
            assert status == 200, body
            return json.loads(body)["data"]["result"]

        deadline = time.monotonic() + 90
        while True:  # Prometheus answers 503 until its storage is ready
            try:
                if get(f"http://127.0.0.1:{prometheus_port}/-/ready")[0] == 200:
                    break
            except (URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-1500:]
            time.sleep(0.5)
        scrapes: list = []
        while time.monotonic() < deadline:
            scrapes = query("count_over_time(up{job='sfcrime'}[1m])")
            if scrapes and float(scrapes[0]["value"][1]) >= 2 and query("up{job='sfcrime'}")[0]["value"][1] == "1":
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"Prometheus did not scrape twice: {scrapes}; "
                                 + (tmp_path / "prometheus.log").read_text()[-1500:])

        import sqlite3

        from tests.conftest import read_topic

        with sqlite3.connect(output / "results.sqlite") as db:
            batches = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        # the calls among the messages the group says were read, counted here from the topic itself
        read = {json.loads(m.value())["crime_id"] for m in read_topic(kafka.bootstrap_servers, kafka.topic, 3000)
                if m.offset() < committed[m.partition()]}
        counted = float(query("sfcrime_calls_counted_total")[0]["value"][1])
        assert counted == len(read) == report(output)["total_calls"] > 0
        lag = {int(r["metric"]["partition"]): float(r["value"][1]) for r in query("sfcrime_consumer_lag_messages")}
        assert lag == {p: ends[p] - committed[p] for p in ends} and sum(lag.values()) > 0
        assert float(query("sfcrime_batches_total")[0]["value"][1]) == batches >= 4
        assert float(query("sfcrime_up")[0]["value"][1]) == 0  # the job is stopped
    finally:
        prometheus.terminate()
        dashboard.terminate()
        prometheus.wait(30)
        dashboard.wait(30)


def test_healthz_turns_503_when_the_broker_goes_and_200_when_the_job_counts_again(sample_file, sample_records,
                                                                                  tmp_path):
    """A broker of the test's own, stopped under the live job for over a minute and started again on the same
    data: the job rides it out (no --broker-timeout: a live job's default), and counts on exactly."""
    from sfcrime.kafka_settings import KafkaSettings
    from sfcrime.local.kafka import KafkaNode

    node = KafkaNode(tmp_path / "kafka").start()
    kafka = KafkaSettings(bootstrap_servers=node.bootstrap_servers, topic="calls", timeout_s=10)
    first_calls = len({key for key, _, _ in load_calls(sample_file, limit=1500)})  # the replay's first 1,500 messages
    replay(load_calls(sample_file, limit=1500), kafka, Pacing(), progress=False)
    output, port = tmp_path / "out", free_port()
    stall_after = 20
    job = subprocess.Popen([PYTHON, "data_stream.py", "--console-top", "0", "--dashboard", str(port),
                            "--stall-after", f"{stall_after} seconds", "--bootstrap-servers", kafka.bootstrap_servers,
                            "--topic", kafka.topic, "--output", str(output)], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=(tmp_path / "job.err").open("w"), start_new_session=True)
    healthz = f"http://127.0.0.1:{port}/healthz"

    def wait_for(status: int, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        seen = None
        while time.monotonic() < deadline:
            assert job.poll() is None, (tmp_path / "job.err").read_text()[-3000:]
            try:
                seen = get(healthz)
                if seen[0] == status:
                    return json.loads(seen[1])
            except (URLError, ConnectionError):
                pass  # the job's server is not up yet
            time.sleep(0.5)
        raise AssertionError(f"/healthz did not answer {status} within {timeout_s:g} s: {seen}")

    try:
        healthy = wait_for(200, 240)
        assert healthy["status"] == "ok"
        ui_port = report(output)["pipeline"]["spark_ui_url"].rstrip("/").rsplit(":", 1)[1]
        spark_ui = f"http://127.0.0.1:{ui_port}"  # Spark's own metrics, on its UI (it listens on every address)
        deadline = time.monotonic() + 120  # the query's metrics come once it starts, after the warm-up
        status, body = get(f"{spark_ui}/metrics/prometheus/")
        while b"spark_streaming_sfcrime_calls_" not in body and time.monotonic() < deadline:
            time.sleep(1)
            status, body = get(f"{spark_ui}/metrics/prometheus/")
        assert status == 200 and b"spark_streaming_sfcrime_calls_" in body, body[:500]
        assert b"sfcrime_warm_up" not in body, body[:500]  # the warm-up's query has gone, with its metrics
        status, body = get(f"{spark_ui}/metrics/executors/prometheus")
        assert status == 200 and b"metrics_executor_" in body, body[:500]
        deadline = time.monotonic() + 120  # everything replayed so far counted
        while report(output)["total_calls"] < first_calls:
            assert time.monotonic() < deadline
            time.sleep(1)
        node.stop()
        stopped = time.monotonic()
        down = wait_for(503, stall_after + 30)
        assert time.monotonic() - stopped <= stall_after + 15  # within --stall-after and a batch
        assert down["status"] == "broker lost" and "no answer from its broker" in down["reason"]
        while time.monotonic() - stopped < 75:  # a live job rides out an outage of over a minute, saying so
            assert job.poll() is None, (tmp_path / "job.err").read_text()[-3000:]
            time.sleep(1)
        assert f"no broker has answered at {kafka.bootstrap_servers} for " in (tmp_path / "job.err").read_text()
        node.start()
        replay(load_calls(sample_file, skip=1500), kafka, Pacing(), progress=False, append=True)
        back = wait_for(200, 120)
        assert back["status"] == "ok"
        deadline = time.monotonic() + 120
        while report(output)["total_calls"] < 2999:  # it counts again, from where it was
            assert time.monotonic() < deadline, report(output)["total_calls"]
            time.sleep(1)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGINT)
            job.wait(90)
        node.stop()
    assert job.returncode == 130, (tmp_path / "job.err").read_text()[-3000:]
    assert_answers_match(report(output), expected_answers(sample_records))


def test_a_dashboard_port_in_use_is_one_line(kafka, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("dashboard", "--output", str(tmp_path), "--port", str(port), timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot serve the dashboard on 127.0.0.1:{port}: Address already in use (try another --port)")
