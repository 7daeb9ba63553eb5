"""Apache Kafka's own tools on our broker, as the course's Step 1 runs them, and `python -m sfcrime broker`
as a user runs it: ready with one line, Ctrl-C or `kill` stops it and leaves no JVM behind, its data kept."""

import json
import signal
import subprocess
import time
import sys
from pathlib import Path

import pytest

from sfcrime.dataset import load_calls
from sfcrime.local.kafka import free_port
from sfcrime.producer import Pacing, replay
from tests.conftest import PYTHON, REPO, read_topic

BIN = Path(sys.executable).parent


def kafka_tool(name, *args, input_text=None, timeout=90):
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, timeout=timeout, input=input_text)


def group_offsets(bootstrap: str, group: str, *config: str) -> dict[int, tuple[int | None, int | None, int | None]]:
    """What Kafka's own tool shows of a consumer group: {partition: (CURRENT-OFFSET, LOG-END-OFFSET, LAG)}."""
    result = kafka_tool("kafka-consumer-groups.sh", "--bootstrap-server", bootstrap, *config, "--describe",
                        "--group", group)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == group and fields[2].isdigit():
            rows[int(fields[2])] = tuple(int(f) if f.isdigit() else None for f in fields[3:6])
    return rows


def assert_group_caught_up(bootstrap: str, group: str, messages: int, partitions: int, *config: str) -> None:
    """Every partition's committed offset is its end, lag 0, and the ends add up to the messages sent."""
    rows = group_offsets(bootstrap, group, *config)
    assert len(rows) == partitions and all(current == end and lag == 0 for current, end, lag in rows.values()), rows
    assert sum(end for _, end, _ in rows.values()) == messages, rows


def test_console_consumer_reads_the_replay_from_the_beginning(kafka, sample_file, sample_records):
    replay(load_calls(sample_file), kafka, Pacing(), progress=False)
    result = kafka_tool("kafka-console-consumer.sh", "--bootstrap-server", kafka.bootstrap_servers,
                        "--topic", kafka.topic, "--from-beginning", "--max-messages", "10")
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in result.stdout.splitlines()]
    ids = {r["crime_id"] for r in sample_records}
    assert len(calls) == 10 and all(c["crime_id"] in ids for c in calls)
    assert "Processed a total of 10 messages" in result.stderr


def test_topics_tool_describes_the_partitions_and_the_console_producer_writes(kafka, sample_file):
    replay(load_calls(sample_file, limit=30), kafka, Pacing(), partitions=3, progress=False)
    described = kafka_tool("kafka-topics.sh", "--bootstrap-server", kafka.bootstrap_servers, "--describe",
                           "--topic", kafka.topic)
    assert described.returncode == 0, described.stderr
    assert "PartitionCount: 3" in described.stdout
    assert sorted(int(line.split("Partition: ")[1].split()[0]) for line in described.stdout.splitlines()
                  if "\tPartition: " in line) == [0, 1, 2]

    produced = kafka_tool("kafka-console-producer.sh", "--bootstrap-server", kafka.bootstrap_servers,
                          "--topic", kafka.topic, input_text='{"crime_id": "a"}\n{"crime_id": "b"}\n')
    assert produced.returncode == 0, produced.stderr
    values = {m.value() for m in read_topic(kafka.bootstrap_servers, kafka.topic, 32)}
    assert {b'{"crime_id": "a"}', b'{"crime_id": "b"}'} <= values and len(values) == 32


def test_broker_command_prints_one_line_stops_on_ctrl_c_or_kill_and_keeps_its_data(tmp_path):
    port = free_port()
    command = [PYTHON, "-m", "sfcrime", "broker", "--port", str(port), "--data-dir", str(tmp_path / "data")]

    def start():
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        while True:
            line = process.stderr.readline()
            assert line, f"broker exited: {lines}"
            lines.append(line)
            if "Ctrl-C to stop" in line:
                return process, lines

    process, lines = start()  # how fast it gets ready is measured in `bench broker`, not here
    try:
        assert lines[-1].startswith(f"Kafka on localhost:{port}, data in {tmp_path / 'data'}, log ")
        assert len(lines) == 2 and lines[0].startswith("starting Apache Kafka "), lines  # said once, not logged too
        created = kafka_tool("kafka-topics.sh", "--bootstrap-server", f"localhost:{port}", "--create",
                             "--topic", "kept", "--partitions", "2")
        assert created.returncode == 0, created.stderr
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    assert not java_brokers_on(tmp_path)

    process, _ = start()  # the topic is still there after a restart
    try:
        listed = kafka_tool("kafka-topics.sh", "--bootstrap-server", f"localhost:{port}", "--list")
        assert "kept" in listed.stdout.split()
    finally:
        process.terminate()  # `kill PID`, as for a broker started with `&`: it waits for Kafka to stop too
        assert process.wait(timeout=60) == 0
    assert not java_brokers_on(tmp_path)


def java_brokers_on(data_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"kafka.Kafka {data_dir}"], capture_output=True, text=True).stdout
    return out.split()


def test_the_tools_default_to_the_broker_sfcrime_uses_and_say_so_in_their_help(kafka, sample_file, tmp_path):
    """The scripts as set-up writes them now (into a folder of the test's own, on the same jars): no
    --bootstrap-server needed where every sfcrime command needs none; KAFKA_BOOTSTRAP_SERVERS names ours."""
    import os

    from sfcrime.local import jars, kafka_archive
    from sfcrime.local.java import java_executable
    from sfcrime.local.setup import KAFKA_TOOLS, tool_script

    for name in ("kafka-topics.sh", "kafka-get-offsets.sh"):
        script = tmp_path / name
        script.write_text(tool_script(name, KAFKA_TOOLS[name], java_executable(), jars.JARS_DIR / "tools-log4j2.properties",
                                      jars.kafka_classpath(), kafka_archive.archive_path()))
        script.chmod(0o755)
    replay(load_calls(sample_file, limit=30), kafka, Pacing(), partitions=3, progress=False)
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers)

    def tool(name, *args):
        return subprocess.run([str(tmp_path / name), *args], capture_output=True, text=True, timeout=90, env=env)

    described = tool("kafka-topics.sh", "--describe", "--topic", kafka.topic)
    assert described.returncode == 0 and "PartitionCount: 3" in described.stdout, described.stderr
    offsets = tool("kafka-get-offsets.sh", "--topic", kafka.topic)
    assert offsets.returncode == 0 and sum(int(line.rsplit(":", 1)[1]) for line in offsets.stdout.split()) == 30
    helped = tool("kafka-topics.sh", "--help")
    assert helped.stderr.splitlines()[0] == ("(sfcrime: --bootstrap-server defaults to $KAFKA_BOOTSTRAP_SERVERS, else "
                                             f"localhost:9092; here {kafka.bootstrap_servers})")
    assert "This tool helps to create, delete, describe, or change a topic." in helped.stderr


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_the_admin_half_of_either_client_says_what_kafkas_own_tools_say(kafka, client, sample_file):
    """Topics, partitions, ids, end and beginning offsets and a group's committed offsets through the seam's
    Admin, each checked against kafka-topics.sh, kafka-get-offsets.sh and kafka-consumer-groups.sh."""
    import dataclasses
    import re

    from sfcrime.clients import open_admin, open_consumer
    from sfcrime.errors import UserError

    settings = dataclasses.replace(kafka, client=client)
    with open_admin(settings) as admin:
        assert kafka.topic not in admin.topics()
        admin.create_topic(3)
        admin.create_topic(3)  # already there: left as it is
        assert admin.topics()[kafka.topic] == 3 and admin.broker_count() == 1
        replay(load_calls(sample_file, limit=300), kafka, Pacing(), progress=False, append=True)
        described = kafka_tool("kafka-topics.sh", "--bootstrap-server", kafka.bootstrap_servers, "--describe",
                               "--topic", kafka.topic).stdout
        assert admin.topic_id() == re.search(r"TopicId: (\S+)", described).group(1)
        from confluent_kafka.admin import AdminClient

        librdkafka = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        assert admin.cluster_id() == librdkafka.list_topics(timeout=10).cluster_id
        ends = kafka_tool("kafka-get-offsets.sh", "--bootstrap-server", kafka.bootstrap_servers, "--topic",
                          kafka.topic).stdout
        assert admin.end_offsets() == {int(p): int(o) for _, p, o in (line.split(":") for line in ends.split())}
        from confluent_kafka import TopicPartition

        cut = {0: 5, 2: 9}  # the first messages of two partitions deleted, as retention deletes them
        for future in librdkafka.delete_records([TopicPartition(kafka.topic, p, o) for p, o in cut.items()]).values():
            future.result(30)
        starts = kafka_tool("kafka-get-offsets.sh", "--bootstrap-server", kafka.bootstrap_servers, "--topic",
                            kafka.topic, "--time", "-2").stdout
        assert admin.beginning_offsets() == {int(p): int(o) for _, p, o in (line.split(":") for line in starts.split())}
        assert admin.beginning_offsets() == {0: 5, 1: 0, 2: 9}
        group = f"g-{kafka.topic}"
        with open_consumer(settings, group_id=group) as consumer:
            for attempt in range(20):  # a new group's coordinator may take a moment to be there
                try:
                    consumer.commit_offsets({0: 7, 2: 11})
                    break
                except UserError:
                    time.sleep(0.5)
        assert admin.group_offsets(group) == {p: c for p, (c, _, _) in group_offsets(kafka.bootstrap_servers,
                                                                                       group).items() if c is not None}
        assert admin.group_offsets(group) == {0: 7, 2: 11}
        assert admin.group_offsets(f"never-{kafka.topic}") == {}
        admin.delete_topic()
        deadline = time.monotonic() + 30
        while kafka.topic in admin.topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kafka.topic not in admin.topics()
        admin.delete_topic()  # not there: no error


def test_a_consumer_in_a_group_joins_with_kafkas_new_group_protocol(kafka, sample_file):
    """`consume --group-id` as a user runs it: the group it leaves behind is of Kafka's new type (KIP-848,
    assigned by the broker), as Kafka's admin API tells, and its offsets are committed to the end."""
    from confluent_kafka import ConsumerGroupType
    from confluent_kafka.admin import AdminClient

    replay(load_calls(sample_file, limit=200), kafka, Pacing(), progress=False)
    group = f"g-{kafka.topic}"
    result = subprocess.run([PYTHON, "-m", "sfcrime", "consume", "--bootstrap-servers", kafka.bootstrap_servers,
                             "--topic", kafka.topic, "--group-id", group, "--from-beginning", "--max-messages", "200",
                             "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 200, result.stderr[-2000:]
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})  # held: its futures end with it
    assert admin.describe_consumer_groups([group])[group].result(10).type == ConsumerGroupType.CONSUMER
    assert sum(current or 0 for current, _, _ in group_offsets(kafka.bootstrap_servers, group).values()) == 200
