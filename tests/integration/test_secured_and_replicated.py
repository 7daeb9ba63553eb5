"""Apache Kafka secured (SASL_SSL, SCRAM-SHA-512, a local CA) and replicated (three KRaft nodes, one killed
mid-replay): every command takes the broker's client properties file, the answers are exact, nothing is
lost, and no output shows the password."""

import os
import re
import signal
import sqlite3
import stat
import subprocess
import time

import pytest

from sfcrime.local.kafka import KafkaCluster, KafkaNode
from tests.conftest import PYTHON, REPO, run_cli
from tests.integration.test_kafka_tools import assert_group_caught_up, kafka_tool
from tests.integration.test_stream import assert_answers_match, expected_answers, report

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    with KafkaNode(tmp_path_factory.mktemp("secure"), tls=True) as broker:
        yield broker


def test_a_sasl_ssl_session_end_to_end_with_the_client_properties_file(secure_broker, sample_file, sample_records,
                                                                        tmp_path):
    config = secure_broker.write_client_config()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    password = secure_broker.client_properties()["sasl.password"]
    # bootstrap.servers, the login and the CA all come from the file, as Kafka's tools take it
    login = ["--kafka-config-file", str(config), "--topic", "secured"]
    outputs = [run_cli("kafka_server.py", "--input", str(sample_file), "--quiet", *login),
               run_cli("consumer_server.py", "--verify", "--input", str(sample_file), "--quiet", *login)]
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert outputs[1].returncode == 0 and "verify: EXACT" in outputs[1].stdout, outputs[1].stderr
    for source in ("kafka", "python"):
        outputs.append(run_cli("data_stream.py", "--once", "--source", source, "--output", str(tmp_path / source),
                               "--console-top", "0", "--group-id", f"secured-{source}", *login, timeout=300))
        assert outputs[-1].returncode == 0, outputs[-1].stderr[-2000:]
        assert_answers_match(report(tmp_path / source), expected_answers(sample_records))
        assert_group_caught_up(secure_broker.bootstrap_servers, f"secured-{source}", len(sample_records), 3,
                               "--command-config", str(config))  # over SASL_SSL, with Kafka's own tool
    tool = kafka_tool("kafka-console-consumer.sh", "--bootstrap-server", secure_broker.bootstrap_servers,
                      "--command-config", str(config), "--topic", "secured", "--from-beginning", "--max-messages", "5")
    assert tool.returncode == 0 and len(tool.stdout.splitlines()) == 5, tool.stderr
    for output in outputs + [tool]:
        assert password not in output.stdout + output.stderr


def test_a_wrong_password_and_a_plaintext_client_on_the_tls_port_are_one_line_each(secure_broker, tmp_path):
    wrong = tmp_path / "wrong.properties"
    password = secure_broker.client_properties()["sasl.password"]
    wrong.write_text(secure_broker.write_client_config().read_text().replace(password, "not-the-password"))
    for command in (["consumer_server.py", "--max-messages", "1"], ["data_stream.py", "--once", "--output", str(tmp_path / "o")]):
        started = time.monotonic()
        result = run_cli(*command, "--kafka-config-file", str(wrong), "--topic", "secured", "--timeout", "8", timeout=90)
        assert time.monotonic() - started < 30 and result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: Kafka at {secure_broker.bootstrap_servers} refused the login"), last
        assert "not-the-password" not in result.stderr + result.stdout and "Traceback" not in result.stderr
    plaintext = run_cli("consumer_server.py", "--bootstrap-servers", secure_broker.bootstrap_servers, "--topic",
                        "secured", "--timeout", "8", timeout=90)
    assert plaintext.returncode == 1
    assert plaintext.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach Kafka at {secure_broker.bootstrap_servers}")
    assert len([line for line in plaintext.stderr.splitlines() if line.strip()]) == 1


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions[partition].leader


def under_replicated(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    partitions = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions
    return sum(1 for p in partitions.values() if len(p.isrs) < len(p.replicas))


def test_a_three_node_cluster_loses_a_leader_mid_replay_and_nothing_is_lost(sample_file, sample_records, tmp_path):
    with KafkaCluster(tmp_path / "kafka", nodes=3, heap="256m") as cluster:
        bootstrap = cluster.bootstrap_servers
        target = ["--bootstrap-servers", bootstrap, "--topic", "replicated"]
        producer = subprocess.Popen([PYTHON, "kafka_server.py", "--input", str(sample_file), "--rate", "250",
                                     "--quiet", *target], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = run_cli("consumer_server.py", *target, "--from-beginning", "--max-messages", "1", "--timeout-ms", "2000")
            if result.returncode == 0 and result.stdout.strip():
                break
        output = tmp_path / "out"
        job = subprocess.Popen([PYTHON, "data_stream.py", "--trigger", "2 seconds", "--console-top", "0",
                                "--output", str(output), *target], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            time.sleep(3)
            victim = cluster.nodes[leader_of(bootstrap, "replicated", 0) - 1]
            victim.kill()  # SIGKILL the leader of partition 0 while the replay and the job run
            _, err = producer.communicate(timeout=180)
            assert producer.returncode == 0, err
            assert "failed 0, unacknowledged 0" in err
            verified = run_cli("consumer_server.py", "--verify", "--input", str(sample_file), "--quiet", *target)
            assert verified.returncode == 0 and "verify: EXACT" in verified.stdout, verified.stderr

            deadline = time.monotonic() + 240  # the live job, through the kill, catches up with every call
            while time.monotonic() < deadline and job.poll() is None:
                if (output / "results.sqlite").exists():
                    with sqlite3.connect(output / "results.sqlite") as db:
                        counted = db.execute("SELECT COALESCE(SUM(count), 0) FROM crime_type_panes").fetchone()[0]
                    if counted >= 2999:
                        break
                time.sleep(1)
            assert job.poll() is None, job.stderr.read()[-2000:]
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGINT)
                job.wait(timeout=60)
        assert_answers_match(report(output), expected_answers(sample_records))
        group = re.search(r"^consumer group (\S+): ", job.stderr.read(), re.M).group(1)
        assert_group_caught_up(bootstrap, group, len(sample_records), 3)  # the job's lag, through the kill

        victim.start(timeout_s=120)  # back, and it catches up: no partition is short of a replica
        deadline = time.monotonic() + 120
        while under_replicated(bootstrap, "replicated") and time.monotonic() < deadline:
            time.sleep(1)
        assert under_replicated(bootstrap, "replicated") == 0


def jvm_pid(data_dir) -> int | None:
    """The pid of the kafka.Kafka JVM whose server.properties is in `data_dir`, found as an operator would."""
    marker = f"{data_dir}/server.properties"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"kafka.Kafka" in command and marker.encode() in command:
                return int(entry)
    return None


def test_broker_nodes_3_outlives_nodes_killed_from_another_terminal(sample_file, sample_records, tmp_path):
    """`python -m sfcrime broker --nodes 3` as a user runs it; two of its JVMs SIGKILLed from outside, one
    after the other, while a replay and a live job run: the command starts each again, the cluster keeps its
    quorum, nothing is lost, and no partition is left short of a replica."""
    import threading

    from sfcrime.local.kafka import free_port

    port = next(p for p in iter(free_port, None) if all(not port_taken(p + i) for i in range(3)))
    data = tmp_path / "kafka"
    broker = subprocess.Popen([PYTHON, "-m", "sfcrime", "broker", "--nodes", "3", "--port", str(port), "--data-dir",
                               str(data), "--heap", "256m"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    said: list[str] = []
    threading.Thread(target=lambda: said.extend(iter(broker.stderr.readline, "")), daemon=True).start()

    def wait_said(text: str, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in said):
            assert broker.poll() is None and time.monotonic() < deadline, "".join(said)
            time.sleep(0.5)

    try:
        wait_said("Kafka on ")
        bootstrap = ",".join(f"localhost:{port + i}" for i in range(3))
        target = ["--bootstrap-servers", bootstrap, "--topic", "outlived"]
        producer = subprocess.Popen([PYTHON, "kafka_server.py", "--input", str(sample_file), "--rate", "200", "--quiet",
                                     *target], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        output = tmp_path / "out"
        job = subprocess.Popen([PYTHON, "data_stream.py", "--trigger", "2 seconds", "--console-top", "0",
                                "--output", str(output), *target], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=(tmp_path / "job.err").open("w"), start_new_session=True)
        try:
            for node in (2, 3):  # one after the other: two of three up at any time keeps the quorum
                time.sleep(4)
                os.kill(jvm_pid(data / f"node-{node}"), signal.SIGKILL)
                wait_said(f"node {node} on port {port + node - 1} exited with code -9: starting it again")
                wait_said(f"node {node} on port {port + node - 1} is back")
            _, err = producer.communicate(timeout=180)
            assert producer.returncode == 0 and "failed 0, unacknowledged 0" in err, err
            verified = run_cli("consumer_server.py", "--verify", "--input", str(sample_file), "--quiet", *target)
            assert verified.returncode == 0 and "verify: EXACT" in verified.stdout, verified.stderr
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and job.poll() is None:
                if (output / "results.sqlite").exists():
                    with sqlite3.connect(output / "results.sqlite") as db:
                        if db.execute("SELECT COALESCE(SUM(count), 0) FROM locations").fetchone()[0] >= 2999:
                            break
                time.sleep(1)
            assert job.poll() is None, (tmp_path / "job.err").read_text()[-2000:]
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGINT)
                job.wait(timeout=60)
        assert_answers_match(report(output), expected_answers(sample_records))
        deadline = time.monotonic() + 120
        while under_replicated(bootstrap, "outlived") and time.monotonic() < deadline:
            time.sleep(1)
        assert under_replicated(bootstrap, "outlived") == 0
        assert broker.poll() is None  # the command never stopped
    finally:
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(120) == 0, "".join(said)


def port_taken(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
