"""Faults: the broker restarted during a replay.

The embedded broker keeps its data in memory, so a restart loses the topic. Tansu then even acknowledges
(acks=all) what the producer sends to the topic that no longer exists, so no producer can see the loss:
`consumer_server.py --verify` is what says what is missing.
"""

import re
import subprocess
import time

from sfcrime.broker import EmbeddedBroker, free_port
from tests.conftest import PYTHON, REPO, run_cli


def test_broker_restart_during_a_replay_is_caught_by_verify(sample_file, tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    bootstrap = broker.bootstrap_servers
    try:
        producer = subprocess.Popen(
            [PYTHON, "kafka_server.py", "--input", str(sample_file), "--rate", "600", "--quiet",
             "--bootstrap-servers", bootstrap, "--topic", "restarted", "--kafka-config", "message.timeout.ms=10000"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.5)
        broker.stop()
        time.sleep(1.0)
        broker = EmbeddedBroker(port=port).start()
        _, err = producer.communicate(timeout=120)
        summary = next(line for line in err.splitlines() if line.startswith("sent "))
        delivered, total, failed, unacknowledged = (int(n.replace(",", "")) for n in re.findall(
            r"sent ([\d,]+) of ([\d,]+) calls, failed ([\d,]+), unacknowledged ([\d,]+)", summary)[0])
        assert total == 3000 and delivered + failed + unacknowledged == 3000  # every call accounted for

        result = run_cli("consumer_server.py", "--verify", "--input", str(sample_file), "--quiet",
                         "--bootstrap-servers", bootstrap, "--topic", "restarted", timeout=120)
        assert result.returncode == 1
        assert "NOT EXACT" in result.stderr and "missing 3,000" in result.stderr
        assert "does not exist" in result.stderr
    finally:
        broker.stop()
