"""The local broker's command lines, without starting one."""

import base64

from sfcrime.local.kafka import _cluster_id


def test_a_new_cluster_id_is_a_kafka_uuid_that_no_command_line_takes_for_an_option():
    ids = [_cluster_id() for _ in range(2000)]  # one in 64 random ids starts with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_a_data_dir_that_is_a_file_or_cannot_be_made_is_one_line_before_any_jvm(tmp_path):
    import pytest

    from sfcrime.errors import UserError
    from sfcrime.local.kafka import KafkaNode, free_port

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="^--data-dir .*a-file is a file: it names a folder for Kafka's data$"):
        KafkaNode(tmp_path / "a-file", port=free_port()).launch()
    with pytest.raises(UserError, match="^cannot use --data-dir .*a-file/below: Not a directory$"):
        KafkaNode(tmp_path / "a-file" / "below", port=free_port()).launch()


def test_free_ports_are_picked_below_the_ephemeral_range_and_can_be_bound():
    """Outgoing connections and bind(0) take ports from the ephemeral range: a port picked there could be
    gone before the broker binds it."""
    import socket

    from sfcrime.local.kafka import PICKED_PORTS_FROM, _ephemeral_ports, free_port

    low = _ephemeral_ports()[0]
    ports = [free_port() for _ in range(50)]
    assert all(PICKED_PORTS_FROM <= port < low for port in ports) and len(set(ports)) == len(ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_more_server_settings_come_after_ours_so_that_they_win(tmp_path):
    """Java properties keep the last line of a key: a caller's setting overrides the broker's own."""
    from sfcrime.local.kafka import KafkaNode

    node = KafkaNode(tmp_path, port=9999, properties={"num.partitions": "1", "num.io.threads": "2"})
    lines = node.server_properties({"node_id": 1, "controller_port": 9998}).splitlines()
    assert lines[-2:] == ["num.partitions=1", "num.io.threads=2"]
    assert lines.index("num.partitions=3") < lines.index("num.partitions=1")


def test_a_node_that_does_not_answer_yet_counts_no_broker_within_seconds_with_either_client():
    """A starting node is asked for its brokers in a loop (KafkaNode.wait_ready): 0 within a moment, as
    librdkafka answers, not after kafka-python's whole bootstrap timeout (15 s)."""
    import time

    from sfcrime.clients import broker_count
    from sfcrime.kafka_settings import KafkaSettings
    from sfcrime.local.kafka import free_port

    for client in ("confluent", "kafka-python"):
        started = time.monotonic()
        assert broker_count(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", client=client)) == 0
        assert time.monotonic() - started < 5, client
