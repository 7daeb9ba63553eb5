"""Faults: the broker stopped, or killed, and started again. Apache Kafka keeps its data on disk, so the
topic and every message survive; a replay running through a crash completes, and verify says EXACT."""

import re
import subprocess
import time

from sfcrime.config import KafkaSettings
from sfcrime.consumer import verify
from sfcrime.dataset import load_calls
from sfcrime.local.kafka import KafkaNode
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, read_topic


def test_the_topic_and_every_message_survive_a_broker_restart(sample_file, sample_records, tmp_path):
    node = KafkaNode(tmp_path / "kafka").start()
    try:
        settings = KafkaSettings(bootstrap_servers=node.bootstrap_servers, topic="calls", timeout_s=10)
        assert replay(load_calls(sample_file), settings, Pacing(), progress=False).ok
        node.stop()
        node = KafkaNode(tmp_path / "kafka", port=node.port).start()
        assert len(read_topic(node.bootstrap_servers, "calls", len(sample_records))) == len(sample_records)
        assert verify(settings, sample_file, progress=False).exact
    finally:
        node.stop()


def test_a_replay_running_through_a_broker_crash_completes_exactly(sample_file, tmp_path):
    node = KafkaNode(tmp_path / "kafka").start()
    try:
        producer = subprocess.Popen(
            [PYTHON, "kafka_server.py", "--input", str(sample_file), "--rate", "600", "--quiet",
             "--bootstrap-servers", node.bootstrap_servers, "--topic", "crashed"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not read_topic(node.bootstrap_servers, "crashed", 1, timeout_s=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        node.kill()  # SIGKILL mid-replay: no controlled shutdown
        time.sleep(1.0)
        node = KafkaNode(tmp_path / "kafka", port=node.port).start()
        _, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
        summary = next(line for line in err.splitlines() if line.startswith("sent "))
        assert re.search(r"sent 3,000 of 3,000 calls, failed 0, unacknowledged 0", summary), summary

        settings = KafkaSettings(bootstrap_servers=node.bootstrap_servers, topic="crashed", timeout_s=10)
        result = verify(settings, sample_file, progress=False)
        assert result.exact, result.lines()  # nothing lost, nothing twice (the producer is idempotent)
    finally:
        node.stop()
